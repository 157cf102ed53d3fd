"""The RBAC `manifest apply` installs, proven on a real kube-apiserver with tokens minted for the
generated ServiceAccounts: the plugin's identity reads pods and gets a real 403 for anything else;
the repair identity may do exactly what its policy needs."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni_core.pods.lookup import ApiClients, fetch_pod
from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.processes import MESHCNI
from test_manifest_apply_real import REMOVE, apply
from test_repair import BROKEN

INSTALL_NAMESPACE = "istio-system"
APPS = "rbac-apps"
LABEL_POLICY = ["values.cni.repair.deletePods=false", "values.cni.repair.labelPods=true"]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane):
    control_plane.ensure_namespace(INSTALL_NAMESPACE)
    control_plane.ensure_namespace(APPS)
    done = apply(control_plane, [], [])
    assert done.returncode == 0, done.stderr
    yield control_plane
    apply(control_plane, [], REMOVE)


def kubeconfig_of(control_plane: ControlPlane, service_account: str, tmp_path) -> str:
    token = control_plane.mint_token(INSTALL_NAMESPACE, service_account)
    return str(control_plane.write_kubeconfig(tmp_path / service_account, token=token))


def broken_pod(control_plane: ControlPlane, name: str) -> dict:
    return control_plane.create_pod(APPS, name, node="node-1", containers=("app", "istio-proxy"),
                                    init_containers=("istio-validation",),
                                    annotations={"sidecar.istio.io/status": "{}"}, status=BROKEN)


def pod_is_there(control_plane: ControlPlane, name: str) -> bool:
    """The pod exists and is not being deleted (deleted, a pod bound to a node stays until its kubelet
    confirms; none runs here)."""
    status, _, body = control_plane.send("GET", f"/api/v1/namespaces/{APPS}/pods/{name}")
    return status == 200 and "deletionTimestamp" not in json.loads(body)["metadata"]


def repair(kubeconfig: str, *flags: str) -> tuple[int, dict]:
    proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", kubeconfig, "--node-name", "node-1", *flags],
                          capture_output=True, text=True, timeout=60)
    outcomes = {k: v for k, v in json.loads(proc.stdout).items() if k.startswith(f"{APPS}/")}
    return proc.returncode, outcomes


def wait_until_allowed(kubeconfig: str, verb: str, allowed: bool) -> None:
    """Role changes reach the RBAC authorizer through its informer, a moment after the write."""
    authz = client.AuthorizationV1Api(ApiClients().get(kubeconfig))
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace=APPS, verb=verb, resource="pods")))
    deadline = time.monotonic() + 10
    while authz.create_self_subject_access_review(review).status.allowed != allowed:
        assert time.monotonic() < deadline, f"{verb} pods never became {'allowed' if allowed else 'forbidden'}"
        time.sleep(0.1)


def test_the_plugin_identity_reads_pods_and_is_refused_everything_else(installed, tmp_path):
    broken_pod(installed, "plugin-target")
    plugin = kubeconfig_of(installed, "istio-cni", tmp_path)
    assert fetch_pod(plugin, APPS, "plugin-target", timeout=5).name == "plugin-target"
    core = client.CoreV1Api(ApiClients().get(plugin))
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1").items
            if p.metadata.namespace == APPS] == ["plugin-target"]
    refused = {
        "delete pod": lambda: core.delete_namespaced_pod("plugin-target", APPS),
        "patch pod": lambda: core.patch_namespaced_pod("plugin-target", APPS, {"metadata": {"labels": {"x": "y"}}}),
        "create event": lambda: core.create_namespaced_event(APPS, client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="x-"), involved_object=client.V1ObjectReference(name="x"))),
        "read secrets": lambda: core.list_namespaced_secret(INSTALL_NAMESPACE),
        "read configmaps": lambda: core.list_namespaced_config_map(INSTALL_NAMESPACE),
    }
    for what, call in refused.items():
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 403, what
        assert "system:serviceaccount:istio-system:istio-cni" in info.value.body, what
    assert repair(plugin, "--label-pods") == (1, {f"{APPS}/plugin-target": "failed: HTTP 403 Forbidden"})
    assert pod_is_there(installed, "plugin-target")
    installed.delete_pod_now(APPS, "plugin-target")


def test_the_default_repair_identity_deletes_broken_pods_and_may_not_label_them(installed, tmp_path):
    uid = broken_pod(installed, "delete-target")["metadata"]["uid"]
    repairer = kubeconfig_of(installed, "istio-cni-repair", tmp_path)
    assert repair(repairer, "--label-pods") == (1, {f"{APPS}/delete-target": "failed: HTTP 403 Forbidden"})
    assert repair(repairer, "--delete-pods") == (0, {f"{APPS}/delete-target": "deleted"})
    assert not pod_is_there(installed, "delete-target")
    installed.delete_pod_now(APPS, "delete-target")  # what its kubelet would do; it is still listed until then
    events = installed.request("GET", f"/api/v1/namespaces/{APPS}/events")["items"]
    assert [(e["involvedObject"]["uid"], e["source"]["component"]) for e in events
            if e["reason"] == "DeleteBrokenPod"] == [(uid, "meshcni-repair")]


def policy_refusal(kubeconfig: str, pod: str) -> ApiException:
    """The repair identity (which RBAC lets patch any pod) changing another label: the generated
    ValidatingAdmissionPolicy refuses it once the server has loaded it (its informer takes a moment;
    each try sets a new value, so an attempt admitted before then is no reason to stop)."""
    core = client.CoreV1Api(ApiClients().get(kubeconfig))
    deadline = time.monotonic() + 20
    for attempt in range(1000):
        try:
            core.patch_namespaced_pod(pod, APPS, {"metadata": {"labels": {"app": f"changed-{attempt}"}}})
        except ApiException as exc:
            return exc
        assert time.monotonic() < deadline, "the repair identity may still change any label"
        time.sleep(0.2)
    raise AssertionError("unreachable")


def test_the_label_policy_swaps_delete_for_patch_in_the_repair_role(installed, tmp_path):
    relabelled = apply(installed, [], LABEL_POLICY)
    assert relabelled.returncode == 0, relabelled.stderr
    assert "ClusterRole/istio-cni-repair configured" in relabelled.stdout.splitlines()
    try:
        broken_pod(installed, "label-target")
        repairer = kubeconfig_of(installed, "istio-cni-repair", tmp_path)
        wait_until_allowed(repairer, "patch", True)
        wait_until_allowed(repairer, "delete", False)
        assert repair(repairer, "--delete-pods") == (1, {f"{APPS}/label-target": "failed: HTTP 403 Forbidden"})
        assert repair(repairer, "--label-pods") == (0, {f"{APPS}/label-target": "labelled"})
        labels = installed.request("GET", f"/api/v1/namespaces/{APPS}/pods/label-target")["metadata"]["labels"]
        assert labels == {"cni.istio.io/uninitialized": "true"}
        refused = policy_refusal(repairer, "label-target")
        assert refused.status == 422 and "may change no label but cni.istio.io/uninitialized" in refused.body
    finally:
        apply(installed, [], [])  # back to the default policy for the other tests of this module
        installed.delete_pod_now(APPS, "label-target")
