"""The repair controller against a real kube-apiserver: what it labels or deletes, the Events it
writes, and the preconditions (uid, resourceVersion) the real server enforces on its writes — a pod
changed since it was judged, or replaced under the same name, is never written to. The daemon
follows a real watch. (429/500 storms and writes raced on demand stay on the stand-in:
test_repair.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from meshcni_core import extensions
from meshcni_core.pods.lookup import ApiClients
from meshcni_core.repair.actions import ApiRepairActions
from meshcni_core.repair.controller import RepairController, RepairOptions, broken_pod
from meshcni_hooks.types import BrokenPod, RepairSettings
from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.processes import MESHCNI
from test_repair import BROKEN, HEALTHY

APPS = "repair-real"
LABEL = {"cni.istio.io/uninitialized": "true"}


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> ControlPlane:
    control_plane.ensure_namespace(APPS)
    return control_plane


@pytest.fixture
def node() -> str:
    """A node of the test's own: the shared control plane holds other tests' pods."""
    return f"node-{uuid.uuid4().hex[:8]}"


def pod(plane: ControlPlane, name: str, node: str, status: dict[str, Any], meshed: bool = True) -> dict[str, Any]:
    return plane.create_pod(APPS, name, node=node, containers=("app", "istio-proxy"),
                            init_containers=("istio-validation",),
                            annotations={"sidecar.istio.io/status": "{}"} if meshed else {}, status=status)


def read(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    status, _, body = plane.send("GET", f"/api/v1/namespaces/{APPS}/pods/{name}")
    return json.loads(body) if status == 200 else None


def deleted(plane: ControlPlane, name: str) -> bool:
    """Gone or terminating (a pod bound to a node stays until its kubelet confirms; none runs here)."""
    current = read(plane, name)
    return current is None or "deletionTimestamp" in current["metadata"]


def events_for(plane: ControlPlane, name: str) -> list[dict[str, Any]]:
    listed = plane.request("GET", f"/api/v1/namespaces/{APPS}/events?fieldSelector=involvedObject.name%3D{name}")
    return list(listed["items"])


def repair_cli(plane: ControlPlane, node: str, *flags: str) -> tuple[int, dict[str, str]]:
    proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", str(plane.admin_kubeconfig), "--node-name", node, *flags],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("{"), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def controller(plane: ControlPlane, node: str, policy_name: str) -> RepairController:
    clients = ApiClients()
    enabled = ["repair-delete"] if policy_name == "delete" else []
    policy = extensions.repair_policies(extensions.new_manager(enabled))[policy_name]
    return RepairController(lambda: clients.get(str(plane.admin_kubeconfig)), RepairOptions(node_name=node),
                            policy, ApiRepairActions)


def test_labels_only_the_broken_meshed_pods_of_its_node_and_says_so_in_an_event(plane, node):
    judged = pod(plane, "broken", node, BROKEN)
    pod(plane, "healthy", node, HEALTHY)
    pod(plane, "not-meshed", node, BROKEN, meshed=False)
    code, outcomes = repair_cli(plane, node, "--label-pods")
    assert code == 0 and outcomes == {f"{APPS}/broken": "labelled"}
    labelled = read(plane, "broken")
    assert labelled is not None and labelled["metadata"]["labels"] == LABEL
    assert labelled["metadata"]["uid"] == judged["metadata"]["uid"]
    assert read(plane, "healthy")["metadata"].get("labels") is None  # type: ignore[index]
    events = events_for(plane, "broken")
    assert [(e["type"], e["reason"], e["involvedObject"]["uid"]) for e in events] == [
        ("Warning", "LabelBrokenPod", judged["metadata"]["uid"])]
    code, outcomes = repair_cli(plane, node, "--label-pods")
    assert outcomes == {f"{APPS}/broken": "already labelled"}
    assert read(plane, "broken")["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]  # type: ignore[index]
    for name in ("broken", "healthy", "not-meshed"):
        plane.delete_pod_now(APPS, name)


def test_deletes_a_broken_pod_and_records_the_event(plane, node):
    judged = pod(plane, f"broken-{node}", node, BROKEN)
    code, outcomes = repair_cli(plane, node, "--delete-pods")
    assert code == 0 and outcomes == {f"{APPS}/broken-{node}": "deleted"}
    assert deleted(plane, f"broken-{node}")
    assert [(e["reason"], e["involvedObject"]["uid"]) for e in events_for(plane, f"broken-{node}")] == [
        ("DeleteBrokenPod", judged["metadata"]["uid"])]
    plane.delete_pod_now(APPS, f"broken-{node}")


def refused_write(plane: ControlPlane, stale: BrokenPod, write: str) -> ApiException:
    """The server's refusal of the policy's write to the pod as it was judged."""
    actions = ApiRepairActions(ApiClients().get(str(plane.admin_kubeconfig)))
    with pytest.raises(ApiException) as refused:
        if write == "label":
            actions.label(stale, LABEL)
        else:
            actions.delete(stale)
    return refused.value


@pytest.mark.parametrize("write", ["label", "delete"])
def test_a_pod_changed_since_it_was_judged_is_not_written(plane, node, write):
    """kubelet updates a crash-looping pod all the time: the write carries the judged
    resourceVersion, and the real server refuses it with 409 Conflict."""
    name = f"changing-{node}"
    stale = broken_pod(pod(plane, name, node, BROKEN))
    plane.request("PATCH", f"/api/v1/namespaces/{APPS}/pods/{name}/status",
                  {"status": {"initContainerStatuses": [{**BROKEN["initContainerStatuses"][0], "restartCount": 2}]}},
                  content_type="application/merge-patch+json")
    refused = refused_write(plane, stale, write)
    assert refused.status == 409
    current = read(plane, name)
    assert current is not None and "deletionTimestamp" not in current["metadata"]
    assert current["metadata"].get("labels") is None
    plane.delete_pod_now(APPS, name)


@pytest.mark.parametrize("policy_name", ["label", "delete"])
def test_a_refused_write_records_no_event(plane, node, policy_name):
    """The Event says what was done, so it follows the successful write only: a pod changed since
    it was judged gets neither the write nor an Event claiming it."""
    name = f"unwritten-{node}"
    stale = broken_pod(pod(plane, name, node, BROKEN))
    plane.request("PATCH", f"/api/v1/namespaces/{APPS}/pods/{name}/status",
                  {"status": {"initContainerStatuses": [{**BROKEN["initContainerStatuses"][0], "restartCount": 2}]}},
                  content_type="application/merge-patch+json")
    enabled = ["repair-delete"] if policy_name == "delete" else []
    policy = extensions.repair_policies(extensions.new_manager(enabled))[policy_name]
    actions = ApiRepairActions(ApiClients().get(str(plane.admin_kubeconfig)))
    with pytest.raises(ApiException) as refused:
        policy.act(stale, actions, RepairSettings())
    assert refused.value.status == 409
    assert events_for(plane, name) == []
    plane.delete_pod_now(APPS, name)


@pytest.mark.parametrize("policy_name", ["label", "delete"])
def test_a_write_stands_when_its_event_cannot_be_recorded(plane, node, policy_name, tmp_path, caplog):
    """An identity that may write pods but not create Events (a real 403 after the write): the
    outcome is the write's, the failure to record the Event is logged, and nothing is retried."""
    plane.grant(APPS, "repair-without-events",
                [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch", "delete"]}])
    token = plane.mint_token(APPS, "repair-without-events")
    plane.wait_until_served(f"/api/v1/namespaces/{APPS}/pods?limit=1", token)
    actions = ApiRepairActions(ApiClients().get(str(plane.write_kubeconfig(tmp_path / "kubeconfig", token=token))))
    name = f"quiet-{node}"
    judged = broken_pod(pod(plane, name, node, BROKEN))
    enabled = ["repair-delete"] if policy_name == "delete" else []
    policy = extensions.repair_policies(extensions.new_manager(enabled))[policy_name]
    with caplog.at_level("WARNING", logger="meshcni.repair"):
        outcome = policy.act(judged, actions, RepairSettings())
    assert outcome == ("deleted" if policy_name == "delete" else "labelled")
    current = read(plane, name)
    if policy_name == "delete":
        assert deleted(plane, name)
    else:
        assert current is not None and current["metadata"]["labels"] == LABEL
    assert events_for(plane, name) == []
    assert f"{APPS}/{name} {outcome}, but its Event could not be recorded" in caplog.text
    plane.delete_pod_now(APPS, name)


@pytest.mark.parametrize("write", ["label", "delete"])
def test_a_replacement_under_the_same_name_is_never_written(plane, node, write):
    """A StatefulSet's replacement: same name, new UID. The judged pod's UID is a precondition."""
    name = f"web-{node}"
    stale = broken_pod(pod(plane, name, node, BROKEN))
    plane.delete_pod_now(APPS, name)
    successor = pod(plane, name, node, BROKEN)  # broken too, so only the preconditions protect it
    refused = refused_write(plane, stale, write)
    assert refused.status == 409, refused
    current = read(plane, name)
    assert current is not None and current["metadata"]["uid"] == successor["metadata"]["uid"]
    assert "deletionTimestamp" not in current["metadata"] and current["metadata"].get("labels") is None
    plane.delete_pod_now(APPS, name)


def test_the_controller_refuses_to_act_on_a_pod_replaced_since_it_was_listed(plane, node):
    name = f"web-{node}"
    listed = pod(plane, name, node, BROKEN)
    plane.delete_pod_now(APPS, name)
    pod(plane, name, node, HEALTHY)
    repair = controller(plane, node, "delete")
    with pytest.raises(ApiException) as refused:
        repair.repair(listed, ApiClients().get(str(plane.admin_kubeconfig)))
    assert refused.value.status == 409
    assert not deleted(plane, name)
    plane.delete_pod_now(APPS, name)


@pytest.mark.parametrize("policy", ["label", "delete"])
def test_the_daemon_follows_its_node_through_a_real_watch(plane, node, policy):
    repair = controller(plane, node, policy)
    stop = threading.Event()
    thread = threading.Thread(target=repair.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(1)  # listed and watching
        pod(plane, "late-healthy", node, HEALTHY)
        pod(plane, "late-broken", node, BROKEN)
        deadline = time.monotonic() + 20
        done = (lambda: deleted(plane, "late-broken")) if policy == "delete" else (
            lambda: (read(plane, "late-broken") or {}).get("metadata", {}).get("labels") == LABEL)
        while not done():
            assert time.monotonic() < deadline, "the daemon never repaired the pod it watched appear"
            time.sleep(0.1)
        assert not deleted(plane, "late-healthy") and read(plane, "late-healthy")["metadata"].get("labels") is None  # type: ignore[index]
        assert repair.stats.given_up == 0
    finally:
        stop.set()
        thread.join(timeout=10)
        for name in ("late-healthy", "late-broken"):
            if read(plane, name) is not None:
                plane.delete_pod_now(APPS, name)
