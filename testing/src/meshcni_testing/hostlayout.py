"""A throwaway host for running ``meshcni install-cni`` outside a cluster (benchmarks, tests).

Creates a conf dir (optionally with a primary conflist), a bin dir, a plugin source dir and a
service-account dir, and returns the environment install-cni reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PRIMARY = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}
TEMPLATE = json.dumps({"type": "istio-cni", "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})


def make_host(root: Path, *, token: str = "t0k3n", ca_pem: bytes = b"ca", api_host: str = "127.0.0.1",
              api_port: str = "6443", node: str = "node-1", primary: dict[str, Any] | None = PRIMARY,
              **extra_env: str) -> dict[str, str]:
    conf, bins, source, sa = (root / d for d in ("net.d", "bin", "plugin", "sa"))
    for directory in (conf, bins, source, sa):
        directory.mkdir(parents=True, exist_ok=True)
    (source / "istio-cni").write_text("#!/bin/sh\n")
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(ca_pem)
    if primary is not None:
        (conf / "10-ptp.conflist").write_text(json.dumps(primary))
    return {
        **os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins),
        "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
        "KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": api_port, "KUBERNETES_NODE_NAME": node,
        "CNI_NETWORK_CONFIG": TEMPLATE, **extra_env,
    }
