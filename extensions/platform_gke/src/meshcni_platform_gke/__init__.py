"""GKE: the seed page's settings as defaults for ``meshcni manifest``, and the node checks of install-cni."""

from __future__ import annotations

from collections.abc import Sequence

from meshcni_hooks import hookimpl
from meshcni_hooks.types import NodeFacts, Platform

GKE_BIN_DIR = "/home/kubernetes/bin"  # GKE's kubelet --cni-bin-dir, containerd's bin_dir on GKE nodes
GKE_DEFAULTS = {
    "components": {"cni": {"namespace": "kube-system"}},
    "values": {"cni": {"cniBinDir": GKE_BIN_DIR}},
}


class GkePlatform:
    @hookimpl
    def meshcni_register_platforms(self) -> Sequence[Platform]:
        return [Platform(name="gke", defaults=GKE_DEFAULTS, provider="meshcni-platform-gke",
                         description=f"namespace kube-system, cniBinDir {GKE_BIN_DIR}")]

    @hookimpl
    def meshcni_install_check(self, node: NodeFacts) -> Sequence[str]:
        problems = []
        if node.chained and not node.conf_files:
            problems.append(
                f"no CNI configuration in {node.host_conf_dir} yet: GKE's kubelet runs CNI plugins only when the "
                "cluster has network policy enabled (gcloud container clusters update CLUSTER "
                "--enable-network-policy), the seed page's prerequisite for GKE")
        # GKE's runtime looks in exactly one bin dir. If the primary's plugins are not in ours,
        # ours is not the runtime's, and chaining istio-cni would fail every pod on the node.
        missing = [kind for kind in node.primary_plugin_types if kind not in node.bin_files]
        if missing:
            problems.append(
                f"{node.target_file} runs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not in "
                f"the mounted CNI bin dir {node.bin_dir}: the runtime takes plugins from another directory and "
                f"would not find istio-cni there; GKE's is {GKE_BIN_DIR} (set values.cni.cniBinDir={GKE_BIN_DIR})")
        return problems
