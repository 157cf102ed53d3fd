#!/usr/bin/env bash
# Builds what makes this machine a Kubernetes node for the whole-node end-to-end test
# (tests/e2e/test_kube_node.py): kubelet, and the kube-controller-manager and kube-scheduler that
# turn a DaemonSet into pods bound to it, from the same pinned k8s.io/kubernetes as the control plane
# (scripts/kubernetes-build-common.sh). Like the control plane, built once per machine and kept by
# version in the machine's cache ($MESHCNI_CACHE_DIR, default ~/.cache/meshcni/kube-node);
# build/kube-node/bin/ in the checkout links to them.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/kubernetes-build-common.sh
COMMANDS=(kubelet kube-controller-manager kube-scheduler)

top=${MESHCNI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcni}/kube-node
links=$PWD/build/kube-node/bin
built() { for c in "${COMMANDS[@]}"; do [ -x "$top/$c-$KUBERNETES_VERSION" ] || return 1; done; }
link_current() {
  mkdir -p "$links"
  for c in "${COMMANDS[@]}"; do ln -sfn "$top/$c-$KUBERNETES_VERSION" "$links/$c"; done
}
built && link_current && exit 0

. scripts/go-build-common.sh
require_go build-kube-node 26
lock_cache "$top"
built && link_current && exit 0

started=$(date +%s)
src=$top/src/kube-node-$KUBERNETES_VERSION
build_kubernetes_commands "$src" "${COMMANDS[@]}"
for c in "${COMMANDS[@]}"; do mv "$src/bin/$c" "$top/$c-$KUBERNETES_VERSION"; done
rm -rf "$src/bin"
echo "built ${COMMANDS[*]} $KUBERNETES_VERSION in $(( $(date +%s) - started ))s" >&2
link_current
