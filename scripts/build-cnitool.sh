#!/usr/bin/env bash
# Builds cnitool (containernetworking/cni's reference CNI client, libcni 1.1.2) offline from
# Debian's source package into build/tools/cnitool, for the end-to-end tests. Debian ships libcni
# (golang-github-appc-cni-dev) but not the cnitool binary; its source package has the one file.
# The temporary deb-src entry is removed again.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/tools/cnitool
[ -x "$out" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
need=()
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ] || need+=(golang-github-appc-cni-dev)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
work=$(mktemp -d)
sources=/etc/apt/sources.list.d/meshcni-deb-src.sources
trap 'rm -rf "$work"; rm -f "$sources"' EXIT
cat > "$sources" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt-get update -qq -o Dir::Etc::sourcelist="$sources" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
(cd "$work" && apt-get source --download-only -qq golang-github-appc-cni 2>/dev/null)
tar -xf "$work"/golang-github-appc-cni_*.orig.tar.* -C "$work"
mkdir -p "$work/gopath/src/meshcni/cnitool" build/tools
cp "$work"/golang-github-appc-cni-*/cnitool/cnitool.go "$work/gopath/src/meshcni/cnitool/"
(cd "$work/gopath/src/meshcni/cnitool" && GOPATH="$work/gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off \
  CGO_ENABLED=0 GOCACHE="$work/cache" go build -o "$OLDPWD/$out" .)
echo "built $out" >&2
