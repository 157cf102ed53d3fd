#!/usr/bin/env bash
# Installs the Debian packages meshcni's demo and tests need, when any is missing.
# iptables (nft and legacy), iproute2 and nsenter program and inspect pod netns; the Debian CNI
# reference plugins (ptp, host-local, loopback) form the chain the demo and e2e tests run; gcc, the
# C library's headers and binutils build the self-contained plugin's launcher and strip it;
# patchelf makes its copied libraries search the bundle only; nftables (nft) and libnftables1
# serve the nftables backend extension (it loads libnftables.so.1).
set -euo pipefail
need=()
command -v iptables-nft-restore >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
ldconfig -p | grep -F 'libnftables.so.1 ' >/dev/null || need+=(libnftables1)  # no -q: SIGPIPE under pipefail
command -v nsenter >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
command -v strip >/dev/null || need+=(binutils)
command -v patchelf >/dev/null || need+=(patchelf)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (run as root to install them)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
