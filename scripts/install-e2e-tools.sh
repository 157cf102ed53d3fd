#!/usr/bin/env bash
# The real CNI clients the end-to-end tests drive: containerd's CRI plugin (with runc and a
# static busybox for the self-built pause image) from Debian, and cnitool built from source.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for package in containerd runc busybox-static; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing e2e packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/build-cnitool.sh
scripts/make-nopython-root.sh
