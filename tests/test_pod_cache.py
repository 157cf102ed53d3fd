"""The agent's pod cache against the API stand-in, for a watch dropped on demand (without the
API server restarting, which a real server cannot be made to do) and the fields it keeps; list,
watch, replaced pods and the real 410 after etcd compaction are in test_pod_cache_real.py."""

from __future__ import annotations

import time

import pytest

from meshcni_core.pods.cache import PodCache, wait_synced
from meshcni_core.pods.lookup import ApiClients
from meshcni_testing.apiserver import FakeApiServer


def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def cache(tmp_path):
    with FakeApiServer() as api:
        for i in range(3):
            api.add_pod("default", f"on-{i}", containers=["app", "istio-proxy"], node="node-1")
        api.add_pod("default", "elsewhere", containers=["app"], node="node-2")
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        clients = ApiClients()
        cache = PodCache(lambda: clients.get(kubeconfig), "node-1").start()
        assert wait_synced(cache, 10)
        try:
            yield api, cache
        finally:
            cache.stop()


def lists(api):
    return sum(1 for method, path, _ in api.requests if method == "GET" and "watch" not in path)


def test_dropped_watch_resumes_without_relisting(cache):
    api, pods = cache
    api.drop_watches()
    api.add_pod("default", "after-drop", containers=["app"], node="node-1")
    eventually(lambda: pods.get("default", "after-drop", "uid-default-after-drop") is not None)
    assert pods.lists == 1 and lists(api) == 1


def test_install_cni_serves_adds_from_its_pod_cache(install_cni, netns_lab):
    """No runtime annotations, yet no GET of the pod: the agent's watch already knows it."""
    from meshcni_testing.netlab import MESH_STATUS, cni

    api, netconf, cached_pods = install_cni
    api.add_pod("default", "app-1", containers=["app", "istio-proxy"], node="node-1",
                annotations={"sidecar.istio.io/status": MESH_STATUS})
    eventually(lambda: cached_pods() == 1)
    pod_ns = netns_lab.netns("pod")
    result = cni("ADD", pod_ns, netconf, uid="uid-default-app-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in netns_lab.save(pod_ns)
    assert not [r for r in api.requests if r[1].startswith("/api/v1/namespaces/default/pods/app-1")]


def test_keeps_what_a_native_sidecar_pod_needs(cache):
    """Init containers' names, restartPolicy and securityContext."""
    api, pods = cache
    api.add_pod("default", "native", node="node-1", containers=["app"], init_containers=[
        "istio-validation",
        {"name": "istio-proxy", "restartPolicy": "Always",
         "securityContext": {"runAsUser": 1000650000, "runAsGroup": 1000650001}},
    ])
    eventually(lambda: pods.get("default", "native", "uid-default-native") is not None)
    pod = pods.get("default", "native", "uid-default-native")
    assert pod.init_containers == ("istio-validation", "istio-proxy")
    proxy = next(c for c in pod.container_specs if c.name == "istio-proxy")
    assert proxy.native_sidecar and (proxy.run_as_user, proxy.run_as_group) == (1000650000, 1000650001)
    assert not next(c for c in pod.container_specs if c.name == "istio-validation").native_sidecar
