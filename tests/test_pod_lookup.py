"""Pod metadata through the real kubernetes client against the project's HTTPS API stand-in."""

from __future__ import annotations

import json
import time

import pytest

from meshcni_core.devtools.apiserver import FakeApiServer
from meshcni_core.devtools.netlab import Lab, cni

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


def test_pod_read_from_the_api_is_redirected(api, pod_ns, tmp_path):
    lab, ns = pod_ns
    mesh_pod(api)
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in lab.save(ns)
    assert ("GET", "/api/v1/namespaces/default/pods/app-1", 200) in api.requests


def test_single_container_pod_from_the_api_is_skipped(api, pod_ns, tmp_path):
    lab, ns = pod_ns
    api.add_pod("default", "app-1", containers=["app"], annotations={"sidecar.istio.io/status": STATUS})
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))))
    assert proc.returncode == 0 and lab.save(ns) == ""


def test_pod_not_yet_visible_is_retried_until_it_appears(api, pod_ns, tmp_path):
    lab, ns = pod_ns
    mesh_pod(api, hidden_reads=2)
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))))
    assert proc.returncode == 0, proc.stdout
    assert [s for _, path, s in api.requests if path.endswith("/app-1")] == [404, 404, 200]
    assert lab.save(ns) != ""


def test_transient_server_errors_are_retried(api, pod_ns, tmp_path):
    _lab, ns = pod_ns
    mesh_pod(api)
    api.faults.fail_next = [500, 429]
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))))
    assert proc.returncode == 0, proc.stdout


def test_unauthorized_fails_at_once_with_a_clear_error(api, pod_ns, tmp_path):
    lab, ns = pod_ns
    mesh_pod(api)
    started = time.monotonic()
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="expired")))
    assert time.monotonic() - started < 5
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 102
    assert "refused the kubeconfig's credentials (HTTP 401" in error["msg"]
    assert lab.save(ns) == ""


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


def test_client_certificate_kubeconfig(pod_ns, tmp_path):
    lab, ns = pod_ns
    with FakeApiServer(require_client_cert=True) as api:
        mesh_pod(api)
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), client_cert=True)
        proc = cni("ADD", ns, netconf(kubeconfig))
    assert proc.returncode == 0, proc.stdout
    assert lab.save(ns) != ""


def test_excluded_namespace_never_calls_the_api(api, pod_ns, tmp_path):
    _lab, ns = pod_ns
    proc = cni("ADD", ns, netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig"))), namespace="istio-system")
    assert proc.returncode == 0 and api.requests == []


def test_missing_kubeconfig_is_a_clear_error(pod_ns, tmp_path):
    _lab, ns = pod_ns
    proc = cni("ADD", ns, netconf(str(tmp_path / "absent")))
    error = json.loads(proc.stdout)
    assert error["code"] == 102 and "cannot read kubeconfig" in error["msg"]
