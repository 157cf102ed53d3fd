"""The readiness taint on a real kube-apiserver, with the token a real install-cni pod would hold
(bound to its pod on a node, so the server names that node in it): install-cni lifts its own
node's taint and records an Event; the generated RBAC and ValidatingAdmissionPolicy refuse it
every other node and every other change."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni_core.install import taint
from meshcni_core.pods.lookup import ApiClients
from meshcni_testing.controlplane import ControlPlane
from test_manifest_apply_real import REMOVE, apply

NAMESPACE = "istio-system"
KEY = "cni.istio.io/not-ready"
OTHER_TAINT = {"key": "example.com/dedicated", "value": "db", "effect": "NoSchedule"}
OWN, OTHER = "taint-node-own", "taint-node-other"


def make_node(plane: ControlPlane, name: str) -> None:
    plane.request("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"role": "worker"}},
        "spec": {"taints": [{"key": KEY, "effect": "NoSchedule"}, OTHER_TAINT]}})


def taints(plane: ControlPlane, name: str) -> list[dict]:
    return plane.request("GET", f"/api/v1/nodes/{name}")["spec"].get("taints", [])


def pod_bound_token(plane: ControlPlane, node: str) -> str:
    """What kubelet mounts into the DaemonSet's pod on ``node``: a token bound to that pod."""
    pod = plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"istio-cni-node-{node}"},
        "spec": {"nodeName": node, "serviceAccountName": "istio-cni",
                 "containers": [{"name": "install-cni", "image": "install-cni:1"}]}})
    answer = plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/istio-cni/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                               "name": pod["metadata"]["name"],
                                                               "uid": pod["metadata"]["uid"]}}})
    return answer["status"]["token"]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory):
    control_plane.ensure_namespace(NAMESPACE)
    done = apply(control_plane, [], ["values.cni.taint.enabled=true"])
    assert done.returncode == 0, done.stderr
    for node in (OWN, OTHER):
        make_node(control_plane, node)
    path = tmp_path_factory.mktemp("taint") / "kubeconfig"
    kubeconfig = str(control_plane.write_kubeconfig(path, token=pod_bound_token(control_plane, OWN)))
    api = ApiClients().get(kubeconfig)
    wait_for_the_policy(api)
    yield control_plane, api
    control_plane.delete_pod_now(NAMESPACE, f"istio-cni-node-{OWN}")
    for node in (OWN, OTHER):
        control_plane.request("DELETE", f"/api/v1/nodes/{node}")
    apply(control_plane, [], REMOVE)


def wait_for_the_policy(api) -> None:
    """RBAC and the policy reach the server's authorizer and admission through informers, a moment
    after they are written: try a change the policy forbids (a label on its own node, harmless
    if admitted) until it is refused."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 30
    for attempt in range(10_000):
        try:
            core.patch_node(OWN, {"metadata": {"labels": {"probe": f"p{attempt}"}}})
        except ApiException as exc:
            if exc.status == 422:
                return
        assert time.monotonic() < deadline, "the node policy never took effect"
        time.sleep(0.2)


def refusal(call) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    return info.value


def test_the_token_names_the_node_of_its_pod(installed):
    _, api = installed
    review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.extra["authentication.kubernetes.io/node-name"] == [OWN]


def test_install_cni_may_not_touch_another_node(installed):
    plane, api = installed
    before = taints(plane, OTHER)
    refused = refusal(lambda: taint.remove_taint(api, OTHER, KEY))
    assert refused.status == 422 and "only the node its own pod runs on" in refused.body
    assert KEY in {t["key"] for t in before} and taints(plane, OTHER) == before


def test_install_cni_may_change_nothing_else_on_its_own_node(installed):
    plane, api = installed
    core = client.CoreV1Api(api)
    before = plane.request("GET", f"/api/v1/nodes/{OWN}")
    attempts = {
        "label": lambda: core.patch_node(OWN, {"metadata": {"labels": {"role": "db"}}}),
        "another taint removed": lambda: core.patch_node(OWN, {"spec": {"taints": [{"key": KEY,
                                                                                     "effect": "NoSchedule"}]}}),
        "a taint added": lambda: core.patch_node(OWN, {"spec": {"taints": [
            {"key": KEY, "effect": "NoSchedule"}, OTHER_TAINT, {"key": "x", "effect": "NoExecute"}]}}),
        "cordon": lambda: core.patch_node(OWN, {"spec": {"unschedulable": True}}),
        "status": lambda: core.patch_node_status(OWN, {"status": {"capacity": {"pods": "1"}}}),
        "delete": lambda: core.delete_node(OWN),
    }
    for what, call in attempts.items():
        refused = refusal(call)
        assert refused.status in (403, 422), what
    after = plane.request("GET", f"/api/v1/nodes/{OWN}")
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"] == before["spec"]


def keys(taint_list: list[dict]) -> set[str]:
    return {t["key"] for t in taint_list}


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_install_cni_lifts_its_taint_once_ready_puts_it_back_while_not_ready_and_lifts_it_again(installed):
    """The node's life: born tainted, lifted once ready; later the entry is lost (not ready): a
    blip shorter than the grace changes nothing, a longer one puts the taint back with a Warning
    Event saying why; ready again, it is lifted again. Each change is an Event on the node."""
    plane, api = installed
    ready, stop = threading.Event(), threading.Event()
    problem = "waiting for the primary CNI to write its configuration into /host/etc/cni/net.d"
    worker = threading.Thread(target=taint.guard, args=(lambda: api, OWN, KEY, ready.is_set, lambda: [problem],
                                                        stop, 1.5), kwargs={"interval": 0.1})
    worker.start()
    try:
        time.sleep(0.5)
        before = taints(plane, OWN)
        assert KEY in keys(before), "lifted before ready"
        ready.set()
        wait_for(lambda: KEY not in keys(taints(plane, OWN)))
        others = [t for t in before if t["key"] != KEY]  # OTHER_TAINT, and the server's own not-ready one
        assert OTHER_TAINT in others and taints(plane, OWN) == others

        ready.clear()  # e.g. the primary's conflist is gone: our entry cannot be restored
        time.sleep(0.7)
        assert KEY not in keys(taints(plane, OWN)), "tainted within the grace period"
        wait_for(lambda: KEY in keys(taints(plane, OWN)))
        assert taints(plane, OWN) == [*others, {"key": KEY, "effect": "NoSchedule"}]

        ready.set()
        wait_for(lambda: KEY not in keys(taints(plane, OWN)))
        assert taints(plane, OWN) == others
    finally:
        stop.set()
        worker.join(timeout=20)
    events = [e for e in plane.request("GET", "/api/v1/namespaces/default/events")["items"]  # the server is shared
              if e["involvedObject"]["name"] == OWN and e["reason"] in (taint.REASON, taint.REASON_ADDED)]
    assert all((e["involvedObject"]["kind"], e["source"]["component"]) == ("Node", "istio-cni-node") for e in events)
    assert sorted((e["reason"], e["type"]) for e in events) == [
        (taint.REASON_ADDED, "Warning"), (taint.REASON, "Normal"), (taint.REASON, "Normal")]
    added = next(e for e in events if e["reason"] == taint.REASON_ADDED)
    assert f"not ready for 2s: {problem}): added the taint {KEY}" in added["message"]
    assert taint.remove_taint(api, OWN, KEY) is False  # gone: nothing to do, nothing refused


def test_install_cni_may_put_back_only_its_own_taint_as_no_schedule(installed):
    plane, api = installed
    core = client.CoreV1Api(api)
    others = taints(plane, OWN)
    assert KEY not in keys(others)
    attempts = {
        "another effect": [*others, {"key": KEY, "effect": "NoExecute"}],
        "a value": [*others, {"key": KEY, "value": "yes", "effect": "NoSchedule"}],
        "twice": [*others, {"key": KEY, "effect": "NoSchedule"}, {"key": KEY, "effect": "PreferNoSchedule"}],
        "another taint with it": [*others, {"key": KEY, "effect": "NoSchedule"}, {"key": "x", "effect": "NoSchedule"}],
    }
    for what, wanted in attempts.items():
        refused = refusal(lambda wanted=wanted: core.patch_node(OWN, {"spec": {"taints": wanted}}))
        assert refused.status == 422 and "may only remove the taint" in refused.body, what
    assert taints(plane, OWN) == others
    assert taint.add_taint(api, OWN, KEY) is True
    assert taints(plane, OWN) == [*others, {"key": KEY, "effect": "NoSchedule"}]
    assert taint.add_taint(api, OWN, KEY) is False  # there: nothing to do
    assert taint.remove_taint(api, OWN, KEY) is True
