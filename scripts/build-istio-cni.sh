#!/usr/bin/env bash
# Builds today's Istio CNI plugin (istio.io/istio's cni/cmd/istio-cni) at a pinned version from the
# Go module proxy, for the live comparison (tests/test_istio_live.py, bench/add_latency.py). Built
# once per machine: the binary is kept by version in the machine's cache ($MESHCNI_CACHE_DIR,
# default ~/.cache/meshcni/istio-cni), because CI runs `make test` in a fresh clone each time;
# build/istio-cni/bin/istio-cni in the checkout links to it.
#
# istio.io/istio tags its releases as "1.30.x" (no leading v), which Go does not take for versions,
# so the module proxy serves it only by pseudo-version. The pin below is a commit of the
# release-1.30 branch (its VERSION file says 1.30; it requires istio.io/api v1.30.4-…). Its go.mod
# has no replace directives today, but it is built, like the control plane, from a small generated
# module that requires it, so the pin, go.sum and build flags live in one place and a replace
# directive added upstream would be copied here rather than refused.
set -euo pipefail
cd "$(dirname "$0")/.."

ISTIO_VERSION=v0.0.0-20260826214018-9739e10eb9d7 # release-1.30 branch, 2026-08-26
ISTIO_RELEASE=1.30 # what that commit's VERSION file says; reported by the tests and the bench
# That commit requires a few modules at pseudo-versions the module proxy refuses ("403 Forbidden:
# This module version is not available"): istio.io/api and istio.io/client-go
# v1.30.4-0.20260824…, go-control-plane/envoy v1.37.1-0.20260409… and go-control-plane/contrib
# v1.36.1-0.20260409…. Each is pinned at the nearest newer version the proxy serves, which minimal
# version selection then takes over Istio's own: the released 1.30 API for the 1.30 branch.
PINS=(
  istio.io/api@v1.30.8
  istio.io/client-go@v1.30.8
  github.com/envoyproxy/go-control-plane/envoy@v1.38.0
  github.com/envoyproxy/go-control-plane/contrib@v1.36.1-0.20260713214202-ca8ce173c36f
)

top=${MESHCNI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcni}/istio-cni
binary=$top/istio-cni-$ISTIO_VERSION
links=$PWD/build/istio-cni/bin
link_current() {
  mkdir -p "$links" && ln -sfn "$binary" "$links/istio-cni" && echo "$ISTIO_RELEASE $ISTIO_VERSION" > "$links/VERSION"
}
[ -x "$binary" ] && link_current && exit 0

# Istio 1.30's go.mod names Go 1.25.
. scripts/go-build-common.sh
require_go build-istio-cni 25
lock_cache "$top"
[ -x "$binary" ] && link_current && exit 0

started=$(date +%s)
src=$top/src/istio-cni-$ISTIO_VERSION
gomod=$(go mod download -json "istio.io/istio@$ISTIO_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "build-istio-cni: no go.mod for istio.io/istio@$ISTIO_VERSION" >&2; exit 1; }
# Replace directives of a required module do not apply to us: carry over those that point at another
# module version (one that points at a directory of Istio's own checkout could not be honoured).
replaces=$(sed -n '/^replace (/,/^)/{/=>/p};/^replace [^(]/{s/^replace //p}' "$gomod")
if grep -q '=> \.' <<<"$replaces"; then
  echo "build-istio-cni: istio.io/istio@$ISTIO_VERSION replaces a module with a local directory:" >&2
  echo "$replaces" >&2
  exit 1
fi
rm -rf "$src" && mkdir -p "$src"
cat > "$src/go.mod" <<EOF
module meshcni.test/istiocni

go 1.25.0

tool istio.io/istio/cni/cmd/istio-cni

require istio.io/istio $ISTIO_VERSION
$(printf 'require %s\n' "${PINS[@]/@/ }")
${replaces:+replace (
$replaces
)}
EOF
(cd "$src" && go mod tidy)
(cd "$src" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$binary.tmp" istio.io/istio/cni/cmd/istio-cni)
mv "$binary.tmp" "$binary"
echo "built $binary in $(( $(date +%s) - started ))s" >&2
link_current
