#!/bin/sh
# Installs the knet CNI plugin with its own runtime, for hosts that have no Node.js 20:
#
#   BIN_DIR/knet              a fixed sh wrapper: execs the plugin below with stdin, env and
#                             arguments untouched, so its exit code is the plugin's
#   BIN_DIR/knet.d/knet-sea   a Node single executable application, if DIST holds one built
#                             from DIST's bundle by deploy/build-sea.sh; otherwise:
#   BIN_DIR/knet.d/node       a copy of the node binary
#   BIN_DIR/knet.d/knet       the bundled plugin (dist/cni/knet)
#   BIN_DIR/knet.d/package.json    {"type": "commonjs"}
#   BIN_DIR/knet.d/knet-netlink.node   node-netlink's addon, found beside the plugin
#
# and, with --conflist, the network configuration into CONF_DIR (last, so a runtime sees the
# network only once the plugin is in place). Every file is written to a temporary name and
# renamed into place, so a runtime exec'ing the plugin during an upgrade never sees half a file.
# The wrapper finds knet.d from its own path: the same files work wherever BIN_DIR is mounted
# (an init container writes /host/opt/cni/bin, the host execs /opt/cni/bin/knet).
#
# Usage: install-cni.sh [--dist DIR] [--bin-dir DIR] [--node FILE]
#                       [--conflist FILE --conf-dir DIR] [--reference-plugins DIR]
#   --dist DIR               the build's dist/cni (default: ../dist/cni beside this script)
#   --bin-dir DIR            where runtimes look for plugins (default /opt/cni/bin)
#   --node FILE              the node binary to ship (default: `node` on PATH; unused with a SEA)
#   --conflist FILE          a CNI network configuration list to install as CONF_DIR/10-knet.conflist
#   --conf-dir DIR           the runtime's configuration directory (required with --conflist)
#   --reference-plugins DIR  copy portmap and bandwidth (chained in the conflist) from DIR into
#                            BIN_DIR when BIN_DIR has none
set -eu

die() { printf 'install-cni: %s\n' "$*" >&2; exit 2; }

# A path argument: non-empty, not an option, no white space (nor newline).
path_arg() {
  case $2 in
    '' | -*) die "$1 needs a path" ;;
  esac
  case $2 in
    *[[:space:]]*) die "$1: a path with white space is not accepted" ;;
  esac
}

here=$(dirname -- "$0")
dist="$here/../dist/cni"
bin_dir=/opt/cni/bin
node_bin=
conflist=
conf_dir=
ref_plugins=

while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value (see the usage at the top of this script)"
  path_arg "$1" "$2"
  case $1 in
    --dist) dist=$2 ;;
    --bin-dir) bin_dir=$2 ;;
    --node) node_bin=$2 ;;
    --conflist) conflist=$2 ;;
    --conf-dir) conf_dir=$2 ;;
    --reference-plugins) ref_plugins=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done

if [ -n "$conflist" ] && [ -z "$conf_dir" ]; then die "--conflist needs --conf-dir"; fi
if [ -z "$conflist" ] && [ -n "$conf_dir" ]; then die "--conf-dir needs --conflist"; fi
[ -f "$dist/knet-netlink.node" ] || die "$dist/knet-netlink.node not found (run npm run build)"
mode=node
if [ -f "$dist/knet-sea" ]; then
  # Only a SEA built from the current bundle: an old one beside a rebuilt bundle is ignored.
  if [ -f "$dist/knet" ] && [ -f "$dist/knet-sea.source" ] && [ "$(sha256sum <"$dist/knet")" = "$(cat -- "$dist/knet-sea.source")" ]; then
    mode=sea
  else
    printf 'install-cni: ignoring %s/knet-sea: not built from the current %s/knet (deploy/build-sea.sh)\n' "$dist" "$dist" >&2
  fi
fi
if [ "$mode" = node ]; then
  [ -f "$dist/knet" ] || die "$dist/knet not found (run npm run build)"
  [ -f "$dist/package.json" ] || die "$dist/package.json not found (run npm run build)"
  if [ -z "$node_bin" ]; then
    node_bin=$(command -v node) || die "no node on PATH: give --node FILE"
  fi
  [ -f "$node_bin" ] && [ -x "$node_bin" ] || die "--node $node_bin is not an executable file"
fi
if [ -n "$conflist" ]; then
  [ -f "$conflist" ] || die "--conflist $conflist not found"
  if command -v node >/dev/null 2>&1; then
    # Fixed program text; the file name is an argument, never part of the code.
    why=$(node -e 'let c;
      try { c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); } catch (e) { console.log(e.message); process.exit(1); }
      if (!c || !Array.isArray(c.plugins) || !c.plugins.some((p) => p && p.type === "knet")) { console.log("no plugin of type knet in its plugins"); process.exit(1); }' \
      "$conflist") || die "--conflist $conflist is not a knet network configuration list: $why"
  fi
fi

tmp_files=
cleanup() {
  for f in $tmp_files; do rm -f -- "$f"; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# put SRC DEST MODE: copy to a temporary name beside DEST, then rename over DEST.
put() {
  t="$2.tmp.$$"
  tmp_files="$tmp_files $t"
  cp -- "$1" "$t"
  chmod "$3" "$t"
  mv -f -- "$t" "$2"
}

mkdir -p -- "$bin_dir/knet.d"
lib="$bin_dir/knet.d"
put "$dist/knet-netlink.node" "$lib/knet-netlink.node" 0644
if [ "$mode" = sea ]; then
  put "$dist/knet-sea" "$lib/knet-sea" 0755
else
  put "$node_bin" "$lib/node" 0755
  put "$dist/package.json" "$lib/package.json" 0644
  put "$dist/knet" "$lib/knet" 0755
fi

wrapper="$bin_dir/knet.tmp.$$"
tmp_files="$tmp_files $wrapper"
cat >"$wrapper" <<'EOF'
#!/bin/sh
# knet CNI plugin launcher, written by knet's scripts/install-cni.sh. It runs the plugin in
# knet.d/ beside itself with the same stdin, environment and arguments; exec keeps the exit code.
case $0 in
  */*) d=${0%/*} ;;
  *) d=. ;;
esac
if [ -x "$d/knet.d/knet-sea" ]; then exec "$d/knet.d/knet-sea" "$@"; fi
exec "$d/knet.d/node" "$d/knet.d/knet" "$@"
EOF
chmod 0755 "$wrapper"
mv -f -- "$wrapper" "$bin_dir/knet"

# The other mode's files go only now: the wrapper runs whichever is present.
if [ "$mode" = sea ]; then
  rm -f -- "$lib/node" "$lib/knet" "$lib/package.json"
else
  rm -f -- "$lib/knet-sea"
fi

if [ -n "$ref_plugins" ]; then
  for p in portmap bandwidth; do
    if [ ! -e "$bin_dir/$p" ] && [ -f "$ref_plugins/$p" ]; then put "$ref_plugins/$p" "$bin_dir/$p" 0755; fi
  done
fi

if [ -n "$conflist" ]; then
  mkdir -p -- "$conf_dir"
  put "$conflist" "$conf_dir/10-knet.conflist" 0644
fi
printf 'install-cni: installed %s/knet (%s)%s\n' "$bin_dir" "$mode" "${conflist:+ and $conf_dir/10-knet.conflist}" >&2
