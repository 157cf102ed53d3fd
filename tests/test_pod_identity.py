"""A pod is identified by its UID, not its name: a same-named pod (a replacement, or one the
agent's watch has not caught up with) is never used for another pod's ADD."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import MESH_STATUS, PLUGIN, cni

pytestmark = pytest.mark.netns
PREV_RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}


def add_without_uid(netns_path: str, netconf: dict, pod: str = "app-1") -> subprocess.CompletedProcess[str]:
    """ADD as a runtime that passes no K8S_POD_UID."""
    env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
    return subprocess.run([PLUGIN], input=json.dumps(netconf), env=env, capture_output=True, text=True, timeout=60)


def replace_unseen(api: FakeApiServer, name: str, uid: str) -> None:
    """Replace the pod in the API's store without a watch event: a watch that lags behind."""
    with api._lock:
        pod = api.pods[("default", name)]
        pod["metadata"]["uid"] = uid
        pod["metadata"]["annotations"] = {"sidecar.istio.io/status": MESH_STATUS}
        pod["spec"]["containers"] = [{"name": "app"}, {"name": "istio-proxy"}]


def test_without_a_pod_uid_the_agents_cache_is_not_trusted_on_the_name_alone(install_cni, netns_lab):
    api, netconf, cached_pods = install_cni
    api.add_pod("default", "app-1", containers=["app"], node="node-1")  # not in the mesh
    deadline = time.monotonic() + 30
    while cached_pods() != 1:
        assert time.monotonic() < deadline, "the agent's pod cache never saw the pod"
        time.sleep(0.05)
    replace_unseen(api, "app-1", "uid-replacement")  # now a mesh pod; the cache still has the old one
    ns = netns_lab.netns("pod")
    result = add_without_uid(ns, netconf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in netns_lab.save(ns), "the pod started unredirected: decided from a same-named cached pod"
    assert ("GET", "/api/v1/namespaces/default/pods/app-1", 200) in api.requests


def test_a_pod_read_from_the_api_with_another_uid_fails_the_add(tmp_path, netns_lab):
    with FakeApiServer() as api:
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"],
                    annotations={"sidecar.istio.io/status": MESH_STATUS})
        netconf = {"cniVersion": "1.0.0", "name": "n", "type": "istio-cni", "agent_socket": "",
                   "kubernetes": {"kubeconfig": api.write_kubeconfig(str(tmp_path / "kubeconfig")),
                                  "pod_lookup_timeout": 5},
                   "prevResult": PREV_RESULT}
        ns = netns_lab.netns("pod")
        result = cni("ADD", ns, netconf, uid="uid-of-the-deleted-pod")
    assert result.returncode == 1, result.stdout + result.stderr
    error = json.loads(result.stdout)
    assert error["code"] == 102
    assert error["msg"] == ("pod default/app-1 has UID uid-default-app-1, not uid-of-the-deleted-pod: the pod this "
                            "sandbox is for was replaced by another pod of the same name"), error
    assert netns_lab.save(ns) == ""
