#!/bin/sh
# Installs the knet CNI plugin: one executable (dist/cni/knet, compiled by Bun: no Node.js or
# other runtime on the host) as BIN_DIR/knet, and, with --conflist, the network configuration
# into CONF_DIR (last, so a runtime sees the network only once the plugin is in place). Each file
# is written to a temporary name and renamed into place, so a runtime exec'ing the plugin during
# an upgrade never sees half a file. The plugin must answer VERSION on this machine before it
# replaces anything. An earlier install's BIN_DIR/knet.d (the node runtime, bundle and addon the
# plugin once needed) is removed.
#
# Usage: install-cni.sh [--dist DIR] [--bin-dir DIR]
#                       [--conflist FILE --conf-dir DIR] [--reference-plugins DIR]
#   --dist DIR               the build's dist/cni (default: ../dist/cni beside this script)
#   --bin-dir DIR            where runtimes look for plugins (default /opt/cni/bin)
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
conflist=
conf_dir=
ref_plugins=

while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value (see the usage at the top of this script)"
  path_arg "$1" "$2"
  case $1 in
    --dist) dist=$2 ;;
    --bin-dir) bin_dir=$2 ;;
    --conflist) conflist=$2 ;;
    --conf-dir) conf_dir=$2 ;;
    --reference-plugins) ref_plugins=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done

if [ -n "$conflist" ] && [ -z "$conf_dir" ]; then die "--conflist needs --conf-dir"; fi
if [ -z "$conflist" ] && [ -n "$conf_dir" ]; then die "--conf-dir needs --conflist"; fi
[ -f "$dist/knet" ] || die "$dist/knet not found (run npm run build)"
# A plugin that cannot run here (another architecture, a CPU without the instructions it was
# built for) must not replace one that can.
version=$(printf '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION "$dist/knet" 2>&1) || true
case $version in
  *'"supportedVersions"'*) ;;
  *) die "$dist/knet does not run on this machine: $version" ;;
esac
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

mkdir -p -- "$bin_dir"
put "$dist/knet" "$bin_dir/knet" 0755

# The layout of earlier installs: a wrapper (now replaced) and its runtime in knet.d.
old="$bin_dir/knet.d"
if [ -d "$old" ]; then
  for f in knet-sea node knet package.json knet-netlink.node; do rm -f -- "$old/$f"; done
  rmdir -- "$old" 2>/dev/null || printf 'install-cni: left %s in place: it holds files knet did not put there\n' "$old" >&2
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
printf 'install-cni: installed %s/knet%s\n' "$bin_dir" "${conflist:+ and $conf_dir/10-knet.conflist}" >&2
