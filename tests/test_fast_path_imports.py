"""The plugin's per-pod path never imports the configuration edges' schema library: a real
``istio-cni`` ADD that programs a pod in-process, with Python's import log on."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from meshcni_testing.netlab import PLUGIN

pytestmark = pytest.mark.netns
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
PREV = {"interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "192.0.2.9/24", "gateway": "192.0.2.1", "interface": 0}]}


def test_an_add_programs_the_pod_without_importing_marshmallow_or_the_edge_schemas(netns_lab):
    ns = netns_lab.netns("pod")
    netconf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"sidecar.istio.io/status": STATUS}},
               "prevResult": {"cniVersion": "1.0.0", **PREV}}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CNI_")},
           "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1",
           "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([PLUGIN], input=json.dumps(netconf).encode(), env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ISTIO_OUTPUT" in netns_lab.save(ns)
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()
                if line.startswith("import time:")]
    assert "meshcni_core.cni.plugin" in imported  # the log is there, so its silence below means something
    # The one boolean parser (meshcni_core.schemas.boolean) is dependency-free by design and serves
    # the pod's DNS-capture flag too; the rest of the edge schemas must stay off this path.
    light = ("meshcni_core.schemas", "meshcni_core.schemas.boolean")
    assert [m for m in imported if m.split(".")[0] in ("marshmallow", "yaml")
            or (m.startswith(("meshcni_core.schemas", "meshcni_core.install", "meshcni_core.manifest"))
                and m not in light)] == []
