"""The seed page's install examples, as an operator would type them."""

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED_OVERLAY = REPO / "examples" / "operator" / "cni.yaml"
# The seed's hosted-platform lines, joined from its table cells (the GKE cell lost a space: "--setvalues").
GKE = "--set components.cni.namespace=kube-system --set values.cni.cniBinDir=/home/kubernetes/bin"
OPENSHIFT = ('--set components.cni.namespace=kube-system --set values.cni.cniBinDir=/var/lib/cni/bin '
             '--set values.cni.cniConfDir=/etc/cni/multus/net.d --set values.cni.chained=false '
             '--set values.cni.cniConfFileName="istio-cni.conf" '
             '--set values.sidecarInjectorWebhook.injectedAnnotations."k8s\\.v1\\.cni\\.cncf\\.io/networks"=istio-cni')


def sets_of(command_line: str) -> list[str]:
    words = shlex.split(command_line)  # as the operator's shell would pass them
    assert words[::2] == ["--set"] * (len(words) // 2)
    return words[1::2]
