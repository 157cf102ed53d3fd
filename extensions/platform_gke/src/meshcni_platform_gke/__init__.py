"""GKE: the seed page's settings as defaults for ``meshcni manifest``."""

from __future__ import annotations

from collections.abc import Sequence

from meshcni_hooks import hookimpl
from meshcni_hooks.types import Platform

GKE_DEFAULTS = {
    "components": {"cni": {"namespace": "kube-system"}},
    "values": {"cni": {"cniBinDir": "/home/kubernetes/bin"}},  # GKE's kubelet --cni-bin-dir
}


class GkePlatform:
    @hookimpl
    def meshcni_register_platforms(self) -> Sequence[Platform]:
        return [Platform(name="gke", defaults=GKE_DEFAULTS, provider="meshcni-platform-gke",
                         description="namespace kube-system, cniBinDir /home/kubernetes/bin")]
