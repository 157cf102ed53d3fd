#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run against (meshcni_testing.controlplane):
# kube-apiserver from k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3, at pinned versions,
# from the Go module proxy. Built once per machine: the binaries are kept by version in the machine's
# cache ($MESHCNI_CACHE_DIR, default ~/.cache/meshcni/control-plane), because CI runs `make test` in
# a fresh clone each time; build/control-plane/bin/{kube-apiserver,etcd} in the checkout link to
# them. Go's own module and build caches keep the sources and compiled packages of a first build.
#
# The generated modules they are built from: scripts/kubernetes-build-common.sh. etcd's server module
# replaces its sibling modules the way k8s.io/kubernetes does (go install pkg@version refuses that),
# hence the same kind of generated module for etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/kubernetes-build-common.sh
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

if [ ! -x "$etcd" ]; then
  started=$(date +%s)
  src=$top/src/etcd-$ETCD_VERSION
  write_module "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" go.etcd.io/etcd/server/v3
  (cd "$src" && go mod tidy)
  (cd "$src" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd.tmp" "$etcd"
  echo "built $etcd in $(( $(date +%s) - started ))s" >&2
fi

if [ ! -x "$apiserver" ]; then
  started=$(date +%s)
  src=$top/src/kube-apiserver-$KUBERNETES_VERSION
  build_kubernetes_commands "$src" kube-apiserver
  mv "$src/bin/kube-apiserver" "$apiserver"
  echo "built $apiserver in $(( $(date +%s) - started ))s" >&2
fi
link_current
