#!/usr/bin/env bash
# A Debian minbase root with iptables and iproute2 but no Python - a host like GKE's COS or
# Flatcar as far as the plugin is concerned - in build/nopython-root, for the end-to-end test
# that runs the installed self-contained istio-cni there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/nopython-root
if [ -x "$root/usr/sbin/iptables-nft-restore" ]; then exit 0; fi
if ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
rm -rf "$root.partial"
debootstrap --variant=minbase --include=iptables,iproute2 bookworm "$root.partial" http://deb.debian.org/debian >/dev/null
if ls "$root.partial"/usr/bin/python* >/dev/null 2>&1; then
  echo "the root unexpectedly contains Python" >&2
  exit 1
fi
mv "$root.partial" "$root"
echo "built $root" >&2
