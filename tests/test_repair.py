"""The repair controller against the API stand-in, for what a real server cannot be made to do on
demand or cannot show: the exact patch sent, 429/500 storms, dropped watches, 410 Gone, a pod
changed or replaced between the read and the write. Labels, deletes, Events and the real
server's precondition checks are in test_repair_real.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from meshcni_core import extensions
from meshcni_core.pods.lookup import ApiClients
from meshcni_core.repair.actions import ApiRepairActions
from meshcni_core.repair.controller import RepairController, RepairOptions
from meshcni_testing.apiserver import FakeApiServer

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
STATUS = {"sidecar.istio.io/status": "{}"}
# As an API server reports them (image, imageID, ready and restartCount are always there).
CONTAINER = {"name": "istio-validation", "image": "istio/proxyv2:1.6.0", "imageID": "sha256:1", "ready": False}
BROKEN = {"initContainerStatuses": [{**CONTAINER, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}}]}
HEALTHY = {"initContainerStatuses": [{**CONTAINER, "restartCount": 0,
                                      "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}


@pytest.fixture
def api(tmp_path):
    with FakeApiServer() as server:
        server.kubeconfig = server.write_kubeconfig(str(tmp_path / "kubeconfig"))
        yield server


def pod(api, name, status, node="node-1", annotations=STATUS):
    api.add_pod("default", name, containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                node=node, annotations=annotations)
    return api.update_pod("default", name, status=status)


def repair_cli(api, *args, env=None):
    proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", api.kubeconfig, *args], capture_output=True, text=True,
                          timeout=60, env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else proc.stdout, proc.stderr


def test_one_shot_labels_only_broken_pods_of_the_node(api):
    judged = pod(api, "broken", BROKEN)["metadata"]
    pod(api, "healthy", HEALTHY)
    pod(api, "not-meshed", BROKEN, annotations={})
    pod(api, "other-node", BROKEN, node="node-2")
    code, outcomes, _ = repair_cli(api, "--node-name", "node-1", "--label-pods")
    assert code == 0 and outcomes == {"default/broken": "labelled"}
    assert api.pods[("default", "broken")]["metadata"]["labels"] == {"cni.istio.io/uninitialized": "true"}
    namespace, name, content_type, body = api.patches[-1]
    assert (namespace, name) == ("default", "broken") and content_type.startswith("application/merge-patch+json") and body == {
        "metadata": {"labels": {"cni.istio.io/uninitialized": "true"},  # the label only, and its preconditions
                     "uid": judged["uid"], "resourceVersion": judged["resourceVersion"]}}
    assert [e["reason"] for e in api.k8s_events] == ["LabelBrokenPod"]
    assert api.k8s_events[0]["involvedObject"]["uid"] == "uid-default-broken"
    code, outcomes, _ = repair_cli(api, "--node-name", "node-1", "--label-pods")
    assert outcomes == {"default/broken": "already labelled"} and len(api.patches) == 1


def test_istio_chart_environment_variables(api):
    pod(api, "broken", BROKEN)
    env = {**os.environ, "REPAIR_NODE-NAME": "node-1", "REPAIR_LABEL-PODS": "true",
           "REPAIR_BROKEN-POD-LABEL-KEY": "example.com/broken", "REPAIR_BROKEN-POD-LABEL-VALUE": "yes"}
    code, outcomes, _ = repair_cli(api, env=env)
    assert code == 0 and outcomes == {"default/broken": "labelled"}
    assert api.pods[("default", "broken")]["metadata"]["labels"] == {"example.com/broken": "yes"}


def test_without_a_policy_broken_pods_are_only_reported(api):
    pod(api, "broken", BROKEN)
    code, outcomes, _ = repair_cli(api, "--node-name", "node-1")
    assert code == 0 and outcomes == {"default/broken": "dry run"} and api.patches == []


def test_bad_environment_value_is_a_clear_error(api):
    env = {**os.environ, "REPAIR_DELETE-PODS": "perhaps"}
    code, _, stderr = repair_cli(api, env=env)
    assert code == 2 and "REPAIR_DELETE-PODS: expected true or false, got 'perhaps'" in stderr


def controller(api, policy_name="label", **options):
    clients = ApiClients()
    enabled = ["repair-delete"] if policy_name == "delete" else []
    policy = extensions.repair_policies(extensions.new_manager(enabled))[policy_name]
    return RepairController(lambda: clients.get(api.kubeconfig), RepairOptions(node_name="node-1", **options),
                            policy, ApiRepairActions)


def eventually(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_daemon_follows_the_node_backs_off_on_429_and_survives_dropped_watches(api):
    pod(api, "early", BROKEN)
    repair = controller(api)
    stop = threading.Event()
    thread = threading.Thread(target=repair.run, args=(stop,), daemon=True)
    thread.start()
    try:
        labelled = lambda name: "cni.istio.io/uninitialized" in api.pods[("default", name)]["metadata"]["labels"]  # noqa: E731
        eventually(lambda: labelled("early"))
        api.faults.fail_next = [429, 429]  # the API server is throttling
        pod(api, "late", BROKEN)
        eventually(lambda: labelled("late"))
        assert repair.stats.failures >= 1 and repair.stats.given_up == 0
        api.drop_watches()
        pod(api, "after-drop", {"initContainerStatuses": []})
        api.update_pod("default", "after-drop", status=BROKEN)  # becomes broken later
        eventually(lambda: labelled("after-drop"))
        pod(api, "fine", HEALTHY)
        time.sleep(0.5)
        assert not labelled("fine")
        assert repair.stats.repaired == {"label:labelled": 3}
    finally:
        stop.set()
        thread.join(timeout=10)


def test_gives_up_after_max_attempts(api):
    repair = controller(api, max_attempts=3)
    stop = threading.Event()
    thread = threading.Thread(target=repair.run, args=(stop,), daemon=True)
    thread.start()
    try:
        eventually(lambda: any(method == "WATCH" for method, _, _ in api.requests))  # listed and watching
        api.faults.fail_next = [500] * 10
        pod(api, "doomed", BROKEN)
        eventually(lambda: repair.stats.given_up == 1)
        assert repair.queue_depth() == 0
    finally:
        api.faults.fail_next = []
        stop.set()
        thread.join(timeout=10)


def test_daemon_metrics(api):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pod(api, "broken", BROKEN)
    proc = subprocess.Popen([MESHCNI, "repair", "--kubeconfig", api.kubeconfig, "--node-name", "node-1",
                             "--label-pods", "--run-as-daemon", "--monitoring-port", str(port)])
    try:
        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return ""

        eventually(lambda: 'meshcni_repair_actions_total{policy="label",result="labelled"} 1.0' in metrics())
        assert "meshcni_repair_broken_pods_total 1.0" in metrics() and "meshcni_repair_queue_depth 0.0" in metrics()
        scraped = metrics()  # today's Istio's name for the same count
        assert 'istio_cni_repair_pods_repaired_total{result="success",type="label"} 1.0' in scraped
        assert 'istio_cni_repair_pods_repaired_total{result="fail",type="label"} 0.0' in scraped
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM ends the daemon promptly


def test_repair_runs_inside_install_cni_when_enabled(api, tmp_path):
    from meshcni_testing.hostlayout import make_host

    pod(api, "broken", BROKEN)
    pod(api, "elsewhere", BROKEN, node="node-2")
    with open(api.certs.ca, "rb") as f:
        env = make_host(tmp_path / "host", token=api.token, ca_pem=f.read(), api_port=api.url.rsplit(":", 1)[1],
                        REPAIR_ENABLED="true", **{"REPAIR_LABEL-PODS": "true"}, KUBECONFIG=api.kubeconfig)
    proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(tmp_path / "cni.sock"), "--monitoring-port", "0"],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: "cni.istio.io/uninitialized" in api.pods[("default", "broken")]["metadata"]["labels"])
        time.sleep(0.3)
        assert not api.pods[("default", "elsewhere")]["metadata"]["labels"]  # scoped to this node (node-1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_in_agent_repair_refuses_the_plugins_identity(api, tmp_path):
    from meshcni_testing.hostlayout import make_host

    env = make_host(tmp_path / "host", REPAIR_ENABLED="true", **{"REPAIR_DELETE-PODS": "true"})
    env.pop("KUBECONFIG", None)
    proc = subprocess.run([MESHCNI, "install-cni", "--socket", str(tmp_path / "cni.sock"), "--monitoring-port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "separate repair identity" in proc.stderr


def test_daemon_follows_deletions_and_relists_after_410(api):
    repair = controller(api)
    stop = threading.Event()
    thread = threading.Thread(target=repair.run, args=(stop,), daemon=True)
    thread.start()
    try:
        eventually(lambda: any(method == "WATCH" for method, _, _ in api.requests))
        lists = lambda: sum(1 for m, path, _ in api.requests if m == "GET" and "watch" not in path)  # noqa: E731
        api.compact()
        api.drop_watches()  # resuming from before the compaction: 410 Gone, so list again
        eventually(lambda: lists() == 2)
        pod(api, "late", BROKEN)
        eventually(lambda: "cni.istio.io/uninitialized" in api.pods[("default", "late")]["metadata"]["labels"])
        api.delete_pod("default", "late")
        eventually(lambda: not repair.tracks("default", "late"))
    finally:
        stop.set()
        thread.join(timeout=10)


def test_a_replacement_under_the_same_name_is_never_reprogrammed(api):
    from meshcni_core.repair.actions import NodeRepairActions
    from meshcni_core.repair.controller import broken_pod

    stale = broken_pod(pod(api, "web-0", BROKEN))
    api.pods[("default", "web-0")]["metadata"]["uid"] = "uid-replacement"
    programmed = []
    actions = NodeRepairActions(ApiClients().get(api.kubeconfig), programmed.append)
    with pytest.raises(ApiException) as info:  # the controller drops a pod on 409
        actions.reprogram(stale)
    assert info.value.status == 409 and programmed == []
    api.pods[("default", "web-0")]["metadata"]["uid"] = stale.uid
    actions.reprogram(stale)
    assert [p["metadata"]["uid"] for p in programmed] == [stale.uid]  # the pod as read just now


def run_daemon(repair):
    stop = threading.Event()
    thread = threading.Thread(target=repair.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


@pytest.mark.parametrize("policy", ["delete", "label"])
def test_a_pod_changed_under_the_repair_is_repaired_on_its_next_state(api, policy):
    """Issue 9 item 4: kubelet keeps updating a crash-looping pod, so a write carrying the
    resourceVersion the controller judged can meet a 409. The pod (same UID) is read again and
    repaired, not dropped for good."""
    repair = controller(api, policy)
    stop, thread = run_daemon(repair)
    try:
        eventually(lambda: any(method == "WATCH" for method, _, _ in api.requests))  # listed and watching
        api.faults.changed_before_writes[("default", "crashing")] = 1
        pod(api, "crashing", BROKEN)
        if policy == "delete":
            eventually(lambda: ("default", "crashing") not in api.pods)
        else:
            eventually(lambda: api.pods[("default", "crashing")]["metadata"]["labels"] == {
                "cni.istio.io/uninitialized": "true"})
        assert (DELETE_OR_PATCH[policy], 409) in [(m, s) for m, path, s in api.requests if "/pods/crashing" in path]
        assert api.faults.changed_before_writes[("default", "crashing")] == 0
        assert repair.stats.given_up == 0
    finally:
        stop.set()
        thread.join(timeout=10)


DELETE_OR_PATCH = {"delete": "DELETE", "label": "PATCH"}


@pytest.mark.parametrize("policy", ["delete", "label"])
def test_a_pod_replaced_under_the_repair_is_dropped_and_its_successor_untouched(api, policy, caplog):
    """The 409's fresh read finds another UID: the replacement is never acted on."""
    caplog.set_level(logging.INFO, logger="meshcni.repair")
    repair = controller(api, policy)
    stop, thread = run_daemon(repair)
    try:
        eventually(lambda: any(method == "WATCH" for method, _, _ in api.requests))
        api.faults.replaced_before_write.add(("default", "web-0"))
        pod(api, "web-0", BROKEN)
        eventually(lambda: "was replaced under the same name" in caplog.text)
        time.sleep(0.5)
        successor = api.pods[("default", "web-0")]
        assert successor["metadata"]["uid"] == "uid-default-web-0-replacement" and successor["metadata"]["labels"] == {}
        assert repair.stats.failures == 0 and repair.stats.given_up == 0 and repair.queue_depth() == 0
    finally:
        stop.set()
        thread.join(timeout=10)
