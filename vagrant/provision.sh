#!/usr/bin/env bash
# Provisions one knet lab VM (run by the Vagrantfile as root, once per VM, in order):
#   provision.sh NODE_NAME NODE_IP ETCD_IP
# Node.js 20 (the official tarball, checked against its SHASUMS256.txt), scripts/setup.sh
# (Debian packages, npm ci, the build), the CNI plugin (scripts/install-cni.sh), /etc/default/knet,
# on the etcd node knet-etcd.service and flannel's network config in etcd, then
# knet-agent.service and knet-proxy.service. Safe to run again (`vagrant provision`).
set -euo pipefail

die() { echo "provision: $*" >&2; exit 2; }
ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o
  for o in "${BASH_REMATCH[@]:1}"; do (( 10#$o <= 255 )) || return 1; done
}

[ $# -eq 3 ] || die "usage: provision.sh NODE_NAME NODE_IP ETCD_IP"
NODE_NAME=$1 NODE_IP=$2 ETCD_IP=$3
[[ $NODE_NAME =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "invalid node name ${NODE_NAME@Q}"
ipv4 "$NODE_IP" || die "invalid node IP ${NODE_IP@Q}"
ipv4 "$ETCD_IP" || die "invalid etcd IP ${ETCD_IP@Q}"
REPO=/knet
HERE=$REPO/vagrant
NODE_VERSION=20.20.2

export DEBIAN_FRONTEND=noninteractive

# --- Node.js 20 (Debian 12 ships 18) ---
if ! command -v node >/dev/null || [[ $(node --version) != v20.* ]]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates curl xz-utils >/dev/null
  case $(dpkg --print-architecture) in
    amd64) arch=x64 ;;
    arm64) arch=arm64 ;;
    *) die "no Node.js build for $(dpkg --print-architecture)" ;;
  esac
  tarball=node-v$NODE_VERSION-linux-$arch.tar.xz
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/$tarball" "https://nodejs.org/dist/v$NODE_VERSION/$tarball"
  curl -fsSL -o "$tmp/SHASUMS256.txt" "https://nodejs.org/dist/v$NODE_VERSION/SHASUMS256.txt"
  (cd "$tmp" && grep -F "  $tarball" SHASUMS256.txt | sha256sum -c --quiet -)
  rm -rf /opt/node && mkdir -p /opt/node
  tar -xJf "$tmp/$tarball" -C /opt/node --strip-components=1
  for b in node npm npx; do ln -sfn "/opt/node/bin/$b" "/usr/local/bin/$b"; done
fi

# --- packages, npm ci, build ---
bash "$REPO/scripts/setup.sh"
# setup.sh stops Debian's etcd; keep it from coming back at boot (node-1 runs knet-etcd).
systemctl disable --now etcd >/dev/null 2>&1 || true
ln -sfn "$REPO/dist/knet.js" /usr/local/bin/knet

# --- kernel settings for a node: forwarding, bridged traffic through iptables ---
printf 'br_netfilter\nvxlan\n' >/etc/modules-load.d/knet.conf
modprobe br_netfilter
modprobe vxlan
printf 'net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n' >/etc/sysctl.d/90-knet.conf
sysctl -q -p /etc/sysctl.d/90-knet.conf

# --- the CNI plugin (one executable) and the conflist ---
sh "$REPO/scripts/install-cni.sh" --bin-dir /opt/cni/bin \
  --conflist "$REPO/cni/10-knet.conflist" --conf-dir /etc/cni/net.d --reference-plugins /usr/lib/cni

# --- this node's settings for the units (values validated above) ---
install -d /etc/knet /etc/knet/manifests
install -m 0644 "$HERE/kube-proxy.yaml" /etc/knet/kube-proxy.yaml
{
  echo "KNET_NODE_NAME=$NODE_NAME"
  echo "KNET_NODE_IP=$NODE_IP"
  echo "KNET_ETCD_ENDPOINTS=http://$ETCD_IP:2379"
} >/etc/default/knet

# --- etcd and flannel's network config, on the etcd node ---
if [ "$NODE_IP" = "$ETCD_IP" ]; then
  install -m 0644 "$HERE/knet-etcd.service" /etc/systemd/system/knet-etcd.service
  systemctl daemon-reload
  systemctl enable --now knet-etcd.service
  for _ in $(seq 30); do
    etcdctl --endpoints=http://127.0.0.1:2379 endpoint health >/dev/null 2>&1 && break
    sleep 1
  done
  etcdctl --endpoints=http://127.0.0.1:2379 put /coreos.com/network/config <"$HERE/net-conf.json" >/dev/null
fi

# --- the agent and the proxy ---
install -m 0644 "$HERE/knet-agent.service" /etc/systemd/system/knet-agent.service
install -m 0644 "$HERE/knet-proxy.service" /etc/systemd/system/knet-proxy.service
systemctl daemon-reload
systemctl enable knet-agent.service knet-proxy.service
systemctl restart knet-agent.service knet-proxy.service
for _ in $(seq 30); do
  [ -s /run/flannel/subnet.env ] && break
  sleep 1
done
[ -s /run/flannel/subnet.env ] || die "no /run/flannel/subnet.env after 30 s: journalctl -u knet-agent"
echo "provision: $NODE_NAME ready: $(tr '\n' ' ' </run/flannel/subnet.env)"
