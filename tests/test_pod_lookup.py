"""Pod lookup faults a real API server cannot be made to produce on demand, through the real
kubernetes client against the project's HTTPS stand-in: 500/429 answers, a slow server, and the
requests made (none for an excluded namespace). Everything a real server can answer (a pod
created after the ADD started, a replaced pod, real 401s, client certificates) is in
test_pod_lookup_real.py."""

from __future__ import annotations

import json
import time

import pytest

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import Lab, cni

pytestmark = pytest.mark.netns
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def pod_ns():
    lab = Lab()
    try:
        yield lab, lab.netns("pod")
    finally:
        lab.close()


def netconf(kubeconfig: str, timeout: float = 5.0) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": "k8s-pod-network",
        "type": "istio-cni",
        "kubernetes": {"kubeconfig": kubeconfig, "exclude_namespaces": ["istio-system"], "pod_lookup_timeout": timeout},
        "prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "192.0.2.9/24"}]},
    }


def mesh_pod(api: FakeApiServer, name: str = "app-1", **kwargs) -> None:
    api.add_pod("default", name, containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                annotations={"sidecar.istio.io/status": STATUS}, **kwargs)


def test_transient_server_errors_are_retried(api, pod_ns, tmp_path):
    _lab, ns = pod_ns
    mesh_pod(api)
    api.faults.fail_next = [500, 429]
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))))
    assert proc.returncode == 0, proc.stdout


def test_slow_api_fails_after_the_configured_deadline(api, pod_ns, tmp_path):
    lab, ns = pod_ns
    mesh_pod(api)
    api.faults.delay_seconds = 6  # far beyond the deadline, and beyond any start-up time of the plugin
    started = time.monotonic()
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig")), timeout=1.0))
    elapsed = time.monotonic() - started
    error = json.loads(proc.stdout)
    assert error["code"] == 11 and "within 1s" in error["msg"], error
    assert elapsed < 5, elapsed  # it gave up without waiting for the server's answer
    assert lab.save(ns) == ""


def test_excluded_namespace_never_calls_the_api(api, pod_ns, tmp_path):
    _lab, ns = pod_ns
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))), namespace="istio-system")
    assert proc.returncode == 0 and api.requests == []


def test_missing_kubeconfig_is_a_clear_error(pod_ns, tmp_path):
    _lab, ns = pod_ns
    proc = cni("ADD", ns, netconf(str(tmp_path / "absent")))
    error = json.loads(proc.stdout)
    assert error["code"] == 102 and "cannot read kubeconfig" in error["msg"]
