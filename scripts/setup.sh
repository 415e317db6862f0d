#!/usr/bin/env bash
# Installs what knet needs on a Debian 12 machine (as root) and builds it. Safe to run twice:
# apt only runs when a package is missing, npm ci only when node_modules is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(etcd-server etcd-client iptables nftables iproute2 conntrack openvswitch-switch ethtool iperf3 haproxy socat
      containernetworking-plugins python3 procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Any kubectl will do: Debian's kubernetes-client refuses to install over another package's
# /usr/bin/kubectl (a cloud SDK's, say), which failed the whole setup.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these services on install; knet runs its own instances in namespaces.
for s in etcd openvswitch-switch haproxy; do
  systemctl is-active --quiet "$s" 2>/dev/null && systemctl stop "$s" 2>/dev/null || true
done

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: build" >&2
npm run --silent build
