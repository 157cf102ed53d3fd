#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run against (meshcni_testing.controlplane):
# kube-apiserver from k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3, at pinned versions,
# from the Go module proxy. Built once per machine: the binaries are kept by version in the machine's
# cache ($MESHCNI_CACHE_DIR, default ~/.cache/meshcni/control-plane), because CI runs `make test` in
# a fresh clone each time; build/control-plane/bin/{kube-apiserver,etcd} in the checkout link to
# them. Go's own module and build caches keep the sources and compiled packages of a first build.
#
# k8s.io/kubernetes' go.mod replaces every k8s.io/* staging module with a directory of its own
# checkout, and replace directives of a dependency do not apply to the module that requires it. So
# each binary is built from a small generated module that requires the upstream module and pins
# every staging module it replaces at the matching v0.x release (the list is read from that go.mod,
# not written here). etcd's server module replaces its sibling modules the same way (go install
# pkg@version refuses that), hence the same kind of generated module for etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2 # k8s.io/* staging modules are tagged v0.<minor>.<patch> with v1.<minor>.<patch>
ETCD_VERSION=v3.7.3

top=${MESHCNI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcni}/control-plane
apiserver=$top/kube-apiserver-$KUBERNETES_VERSION
etcd=$top/etcd-$ETCD_VERSION
links=$PWD/build/control-plane/bin
# Stable names for the tests (meshcni_testing.controlplane), pointing at this script's versions.
link_current() { mkdir -p "$links" && ln -sfn "$apiserver" "$links/kube-apiserver" && ln -sfn "$etcd" "$links/etcd"; }
[ -x "$apiserver" ] && [ -x "$etcd" ] && link_current && exit 0

# Kubernetes 1.37 needs Go 1.26 (its go.mod).
. scripts/go-build-common.sh
require_go build-control-plane 26
lock_cache "$top"
[ -x "$apiserver" ] && [ -x "$etcd" ] && link_current && exit 0

build=(nice -n 10 go build -trimpath)

# Writes a module in $1 that requires $2@$3 (plus the extra lines in $4) and names $5 as a tool.
write_module() {
  local dir=$1 main_module=$2 version=$3 extra=$4 tool=$5
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/go.mod" <<EOF
module meshcni.test/controlplane

go 1.26.0

godebug default=go1.26

tool $tool

require $main_module $version
$extra
EOF
}

# The staging modules k8s.io/kubernetes replaces with local directories, each pinned at its release.
staging_pins() {
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "build-control-plane: no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; exit 1; }
  local modules
  modules=$(sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod")
  [ -n "$modules" ] || { echo "build-control-plane: found no staging replaces in $gomod" >&2; exit 1; }
  echo "replace ("
  for m in $modules; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
}

if [ ! -x "$etcd" ]; then
  started=$(date +%s)
  src=$top/src/etcd-$ETCD_VERSION
  write_module "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" go.etcd.io/etcd/server/v3
  (cd "$src" && go mod tidy)
  (cd "$src" && "${build[@]}" -ldflags "-s -w" -o "$etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd.tmp" "$etcd"
  echo "built $etcd in $(( $(date +%s) - started ))s" >&2
fi

if [ ! -x "$apiserver" ]; then
  started=$(date +%s)
  src=$top/src/kube-apiserver-$KUBERNETES_VERSION
  write_module "$src" k8s.io/kubernetes "$KUBERNETES_VERSION" "$(staging_pins)" k8s.io/kubernetes/cmd/kube-apiserver
  (cd "$src" && go mod tidy)
  # The version the server reports (/version, kubectl's skew warnings); Kubernetes' own build sets it.
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$src" && "${build[@]}" -ldflags "$ldflags" -o "$apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$apiserver.tmp" "$apiserver"
  echo "built $apiserver in $(( $(date +%s) - started ))s" >&2
fi
link_current
