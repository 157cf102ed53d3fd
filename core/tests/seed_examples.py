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

# The seed's commands as its text prints them, typeset en dash and all (its GKE code block breaks
# the line after the dashed "set"; joined here as a shell would read it).
INJECTION_COMMAND = "istioctl manifest apply --set cni.enabled=true"  # "with the --set cni.enabled=true option"
GKE_STEP = "istioctl manifest apply –set cniBinDir=/home/kubernetes/bin"  # noqa: RUF001 - GKE setup, step 2's code
GKE_STEP_TEXT = "--set cniBinDir=/home/kubernetes/bin"  # GKE setup, step 2's sentence
INSTALL_STEP = "--set components.cni.enabled=true --set values.cni.cniBinDir=/home/kubernetes/bin"  # Installation 2
GKE_CELL_AS_PRINTED = ("--set components.cni.namespace=kube-system "
                       "--setvalues.cni.cniBinDir=/home/kubernetes/bin")  # the hosted-settings table's GKE cell


def meshcni_words(command_line: str, subcommand: str = "") -> list[str]:
    """The seed's command as meshcni's arguments: ``istioctl manifest apply ...`` becomes
    ``manifest <subcommand> ...``; a bare option list is given to ``manifest <subcommand>``."""
    words = shlex.split(command_line)
    if words[:3] == ["istioctl", "manifest", "apply"]:
        words = words[3:]
    return ["manifest", subcommand or "apply", *words]
