"""istio-cni under containerd's CRI plugin, driven the way kubelet drives it."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from containerd_node import ContainerdNode
from cri_api.v1 import api_pb2

from meshcni_testing.netlab import MESH_STATUS

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


@pytest.fixture
def containerd(node, tmp_path):
    node.write_conflist()
    work = tmp_path / "containerd"
    work.mkdir()
    runtime = ContainerdNode(work, node.netns, node.bin_dir, node.conf_dir)
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.close()


def rules_in(netns_path: str) -> str:
    out = subprocess.run(["nsenter", f"--net={netns_path}", "iptables-save"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line.startswith("-A"))


def test_mesh_pod_sandbox_is_redirected_and_both_dels_succeed(containerd):
    annotations = {"sidecar.istio.io/status": MESH_STATUS, "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}
    sandbox = containerd.run_pod("productpage", "bookinfo", annotations)
    netns_path = containerd.netns_of(sandbox)
    rules = rules_in(netns_path)
    assert "-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN" in rules
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in rules
    log = containerd.log
    assert '"command": "ADD"' in log and '"pod": "bookinfo/productpage"' in log  # K8S_* args arrived
    containerd.stop_and_remove(sandbox)
    log = containerd.log
    assert '"command": "DEL"' in log  # StopPodSandbox: DEL with the netns, rules removed
    assert "DEL bookinfo/productpage: no network namespace (any more): nothing to remove" in log  # RemovePodSandbox


def test_bad_annotation_fails_the_sandbox_with_our_message(containerd):
    annotations = {"sidecar.istio.io/status": MESH_STATUS, "sidecar.istio.io/interceptionMode": "tproxy"}
    with pytest.raises(grpc.RpcError) as info:
        containerd.run_pod("details", "bookinfo", annotations)
    message = info.value.details()
    assert "sidecar.istio.io/interceptionMode" in message and "'tproxy'" in message
    assert containerd.sandboxes == []


def test_non_mesh_pod_runs_without_rules(containerd):
    sandbox = containerd.run_pod("batch", "jobs", {})
    assert rules_in(containerd.netns_of(sandbox)) == ""
    containerd.stop_and_remove(sandbox)


def test_conflist_is_what_containerd_loaded(containerd):
    status = containerd.runtime.Status(api_pb2.StatusRequest(verbose=True))
    loaded = json.loads(status.info["cniconfig"])
    names = [p["Network"]["type"] for p in loaded["Networks"][-1]["Config"]["Plugins"]]
    assert names == ["ptp", "istio-cni"]


# The pod annotations today's injector writes with native sidecars (Kubernetes 1.28+) and the CNI:
# istio-proxy is an init container with restartPolicy: Always, so "containers" is null.
NATIVE_SIDECAR_ANNOTATIONS = {
    "istio.io/rev": "default",
    "kubectl.kubernetes.io/default-container": "reviews",
    "kubectl.kubernetes.io/default-logs-container": "reviews",
    "prometheus.io/path": "/stats/prometheus",
    "prometheus.io/port": "15020",
    "prometheus.io/scrape": "true",
    "sidecar.istio.io/status": '{"initContainers":["istio-validation","istio-proxy"],"containers":null,'
                               '"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy",'
                               '"istio-data","istio-podinfo","istio-token","istiod-ca-cert","istio-ca-crl"],'
                               '"imagePullSecrets":null,"revision":"default"}',
}


def test_native_sidecar_pod_sandbox_is_redirected(containerd):
    sandbox = containerd.run_pod("reviews", "bookinfo", NATIVE_SIDECAR_ANNOTATIONS)
    rules = rules_in(containerd.netns_of(sandbox))
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in rules and "-A PREROUTING -p tcp -j ISTIO_INBOUND" in rules
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    log = containerd.log
    assert '"pod": "bookinfo/reviews", "redirected": true' in log
    assert "restartPolicy: Always (a native sidecar) (from sidecar.istio.io/status)" in log
    assert "default: the pod's container spec is unknown" in log  # only annotations: the default UID, said so
    containerd.stop_and_remove(sandbox)
