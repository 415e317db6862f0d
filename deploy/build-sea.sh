#!/bin/sh
# Builds DIST/knet-sea: the bundled CNI plugin (DIST/knet) as a Node single executable
# application with a V8 code cache, from the node binary on PATH, and records which bundle it
# holds in DIST/knet-sea.source (scripts/install-cni.sh installs the SEA only while that matches
# the current DIST/knet). Started as a plugin it needs no Node.js on the host, and it starts
# about 10-15% faster than `node knet` (deploy/README.md). The deploy/Dockerfile runs it.
#
# Usage: deploy/build-sea.sh [--dist DIR] [--postject FILE]
#   --dist DIR        the build's dist/cni (default: dist/cni of this repository)
#   --postject FILE   postject's CLI (default: node_modules/.bin/postject of this repository;
#                     `npm install --no-save postject@1.0.0-alpha.6` puts it there)
set -eu

die() { printf 'build-sea: %s\n' "$*" >&2; exit 2; }

root=$(cd -- "$(dirname -- "$0")/.." && pwd)
dist="$root/dist/cni"
postject="$root/node_modules/.bin/postject"
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case $2 in '' | -* | *[[:space:]]*) die "$1: expected a path without white space" ;; esac
  case $1 in
    --dist) dist=$2 ;;
    --postject) postject=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
[ -f "$dist/knet" ] || die "$dist/knet not found (run npm run build)"
[ -x "$postject" ] || die "$postject not found (npm install --no-save postject@1.0.0-alpha.6)"
node_bin=$(command -v node) || die "no node on PATH"

cd -- "$dist"
rm -f knet-sea knet-sea.source
trap 'rm -f knet-sea.tmp knet-sea.blob knet-sea.json' EXIT
printf '%s\n' '{"main": "knet", "output": "knet-sea.blob", "disableExperimentalSEAWarning": true, "useCodeCache": true}' >knet-sea.json
node --experimental-sea-config knet-sea.json >/dev/null
cp -- "$node_bin" knet-sea.tmp
chmod 0755 knet-sea.tmp
"$postject" knet-sea.tmp NODE_SEA_BLOB knet-sea.blob --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >/dev/null
# The SEA must answer VERSION like the bundle before it replaces anything.
out=$(printf '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION ./knet-sea.tmp)
case $out in *'"supportedVersions"'*) ;; *) die "the SEA did not answer VERSION: $out" ;; esac
sha256sum <knet >knet-sea.source
mv -f knet-sea.tmp knet-sea
printf 'build-sea: wrote %s/knet-sea\n' "$dist" >&2
