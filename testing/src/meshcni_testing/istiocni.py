"""Today's Istio CNI plugin, run beside ours: the live comparison suite and ``make bench`` use it.

``scripts/build-istio-cni.sh`` (``make istio-cni``) builds istio.io/istio's ``cni/cmd/istio-cni``
at a pinned version into ``build/istio-cni/bin``. It runs in sidecar mode with the conflist entry
Istio's install-cni writes for that version (``cni/pkg/install``): ``cni_agent_run_dir`` is where
install-cni puts the plugin's kubeconfig (``istio-cni-kubeconfig``) and where the plugin keeps its
log; the netconf names no kubeconfig.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meshcni_testing.kubeconfig import write_kubeconfig

# Where the plugin reads its kubeconfig: cni/pkg/constants CNIPluginKubeconfName in its run dir.
KUBECONFIG_NAME = "istio-cni-kubeconfig"
BIN_DIR = Path(__file__).resolve().parents[3] / "build" / "istio-cni" / "bin"


class IstioCniMissing(RuntimeError):
    pass


def binary(bin_dir: Path = BIN_DIR) -> str:
    """The built ``istio-cni``, or :class:`IstioCniMissing` saying how to build it."""
    path = bin_dir / "istio-cni"
    if not os.access(path, os.X_OK):
        raise IstioCniMissing(f"{path} is missing: run `make istio-cni` (scripts/build-istio-cni.sh)")
    return str(path)


def version(bin_dir: Path = BIN_DIR) -> str:
    """"<release> <module version>", as the build script recorded them."""
    return (bin_dir / "VERSION").read_text().strip()


def prepare_run_dir(run_dir: Path, server: str, ca: Path, token: str) -> Path:
    """What install-cni leaves in the plugin's run dir: a kubeconfig with the plugin identity's token."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_kubeconfig(run_dir / KUBECONFIG_NAME, server, ca, {"token": token})
    return run_dir


def sidecar_entry(run_dir: Path, *, exclude_namespaces: list[str], pod_namespace: str = "istio-system",
                  log_level: str = "info") -> dict[str, Any]:
    """The plugin's entry as install-cni writes it for sidecar mode (ambient off, iptables)."""
    return {
        "type": "istio-cni",
        "plugin_log_level": log_level,
        "cni_agent_run_dir": str(run_dir),
        "ambient_enabled": False,
        "enablement_selectors": [],
        "exclude_namespaces": exclude_namespaces,
        "pod_namespace": pod_namespace,
        "native_nftables": False,
        "enable_ambient_detection_retry": False,
    }
