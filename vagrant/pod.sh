#!/usr/bin/env bash
# A "pod" without a container runtime: a network namespace that the knet CNI plugin wires up
# exactly as a runtime would (CNI_COMMAND=ADD, the namespace's path, the conflist's knet entry
# with the list's cniVersion and name on stdin).
#   pod.sh add NAME    namespace pod-NAME, eth0 from the plugin; prints the CNI result
#   pod.sh del NAME    CNI DEL, then the namespace is deleted
#   pod.sh ip NAME     the pod's address
set -euo pipefail

die() { echo "pod.sh: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: pod.sh add|del|ip NAME"
cmd=$1 name=$2
[[ $name =~ ^[a-z0-9]([a-z0-9-]{0,9}[a-z0-9])?$ ]] || die "NAME: 1-11 lower-case letters, digits and '-', got ${name@Q}"
ns=pod-$name
conflist=/etc/cni/net.d/10-knet.conflist
plugin=/opt/cni/bin/knet

# The plugin's own config: the list's knet entry with the list's cniVersion and name.
netconf() {
  node -e 'const l = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const p = l.plugins.find((x) => x.type === "knet");
    process.stdout.write(JSON.stringify({ cniVersion: l.cniVersion, name: l.name, ...p }));' "$conflist"
}
cni() {
  netconf | env CNI_COMMAND="$1" CNI_CONTAINERID="$name" CNI_NETNS="/var/run/netns/$ns" \
    CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin "$plugin"
}

case $cmd in
  add)
    [ -e "/var/run/netns/$ns" ] || ip netns add "$ns"
    ip -n "$ns" link set lo up
    cni ADD
    echo
    ;;
  del)
    cni DEL
    ip netns del "$ns" 2>/dev/null || true
    ;;
  ip)
    ip -n "$ns" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }'
    ;;
  *) die "unknown command ${cmd@Q}: add, del or ip" ;;
esac
