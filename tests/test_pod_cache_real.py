"""The agent's pod cache against a real kube-apiserver's list and watch, with the plugin's own
ClusterRole (as `manifest generate` renders it) as its only permission."""

from __future__ import annotations

import time
import uuid

import pytest

from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_core.pods.cache import PodCache, wait_synced
from meshcni_core.pods.lookup import ApiClients
from meshcni_testing.controlplane import ControlPlane, start_control_plane

NAMESPACE = "cache-apps"
READER = "pod-cache-reader"


def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reader_kubeconfig(control_plane: ControlPlane, tmp_path_factory) -> str:
    """A ServiceAccount allowed exactly what the generated plugin ClusterRole allows."""
    plugin_role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole"
                       and d["metadata"]["name"] == "istio-cni")
    control_plane.ensure_namespace(NAMESPACE)
    control_plane.grant(NAMESPACE, READER, plugin_role["rules"])
    token = control_plane.mint_token(NAMESPACE, READER)
    path = control_plane.write_kubeconfig(tmp_path_factory.mktemp("pod-cache") / "kubeconfig", token=token)
    control_plane.wait_until_served("/api/v1/pods?limit=1", token)
    return str(path)


@pytest.fixture
def node(control_plane: ControlPlane, reader_kubeconfig: str):
    """A node name of its own (the control plane is shared), three pods on it, one elsewhere, and a
    started cache for it."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        control_plane.create_pod(NAMESPACE, f"{name}-on-{i}", node=name, containers=("app", "istio-proxy"))
    control_plane.create_pod(NAMESPACE, f"{name}-elsewhere", node=f"{name}-other")
    clients = ApiClients()
    cache = PodCache(lambda: clients.get(reader_kubeconfig), name).start()
    try:
        assert wait_synced(cache, 15)
        yield name, cache
    finally:
        cache.stop()


def uid_of(control_plane, pod: str) -> str:
    return control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")["metadata"]["uid"]


def test_lists_only_this_nodes_pods_with_their_real_fields(control_plane, node):
    name, pods = node
    assert len(pods) == 3 and pods.get(NAMESPACE, f"{name}-elsewhere", uid_of(control_plane, f"{name}-elsewhere")) is None
    server_copy = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}-on-0")
    cached = pods.get(NAMESPACE, f"{name}-on-0", server_copy["metadata"]["uid"])
    assert cached is not None
    assert (cached.uid, cached.containers) == (server_copy["metadata"]["uid"], ("app", "istio-proxy"))


def test_follows_adds_updates_and_deletes_through_the_real_watch(control_plane, node):
    name, pods = node
    late = f"{name}-late"
    uid = control_plane.create_pod(NAMESPACE, late, node=name,
                                   annotations={"sidecar.istio.io/status": "{}"})["metadata"]["uid"]
    eventually(lambda: pods.get(NAMESPACE, late, uid) is not None)
    control_plane.request("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{late}",
                          {"metadata": {"annotations": {"changed": "yes"}}},
                          content_type="application/merge-patch+json")
    eventually(lambda: pods.get(NAMESPACE, late, uid).annotations.get("changed") == "yes")  # type: ignore[union-attr]
    control_plane.delete_pod_now(NAMESPACE, late)
    eventually(lambda: pods.get(NAMESPACE, late, uid) is None)
    assert len(pods) == 3 and pods.lists == 1


def test_a_pod_replaced_under_the_same_name_is_served_only_with_its_new_uid(control_plane, node):
    name, pods = node
    pod = f"{name}-on-1"
    old_uid = uid_of(control_plane, pod)
    assert pods.get(NAMESPACE, pod, uid=old_uid) is not None
    control_plane.delete_pod_now(NAMESPACE, pod)
    new_uid = control_plane.create_pod(NAMESPACE, pod, node=name)["metadata"]["uid"]
    assert new_uid != old_uid
    eventually(lambda: pods.get(NAMESPACE, pod, uid=new_uid) is not None)
    assert pods.get(NAMESPACE, pod, uid=old_uid) is None


def test_a_real_410_after_etcd_compaction_makes_the_cache_list_again(control_plane_bin, tmp_path_factory):
    """The cache's watch is cut (kube-apiserver restarts) after etcd compacted past the
    resourceVersion it holds: the server answers its resumed watch with 410 Gone, and the cache
    lists again and goes on following the node. On a control plane of its own: the API server
    serves watches from etcd (no watch cache, whose own window would decide instead) and does not
    compact by itself."""
    directory = tmp_path_factory.mktemp("compacted")
    flags = ("--watch-cache=false", "--etcd-compaction-interval=0")
    with start_control_plane(control_plane_bin, directory, apiserver_flags=flags) as plane:
        plugin_role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole"
                           and d["metadata"]["name"] == "istio-cni")
        plane.ensure_namespace(NAMESPACE)
        plane.grant(NAMESPACE, READER, plugin_role["rules"])
        token = plane.mint_token(NAMESPACE, READER)
        kubeconfig = str(plane.write_kubeconfig(directory / "reader-kubeconfig", token=token))
        plane.wait_until_served("/api/v1/pods?limit=1", token)
        plane.create_pod(NAMESPACE, "before", node="node-c")
        clients = ApiClients()
        pods = PodCache(lambda: clients.get(kubeconfig), "node-c").start()
        try:
            assert wait_synced(pods, 15) and pods.lists == 1 and len(pods) == 1
            # history the cache's watch does not see (other nodes' pods), then compacted away
            for i in range(3):
                plane.create_pod(NAMESPACE, f"elsewhere-{i}", node="node-d")
            plane.compact_etcd()
            plane.restart_apiserver()
            eventually(lambda: pods.lists == 2, timeout=30)
            late = plane.create_pod(NAMESPACE, "after", node="node-c")["metadata"]["uid"]
            eventually(lambda: pods.get(NAMESPACE, "after", late) is not None)
            assert len(pods) == 2
        finally:
            pods.stop()
