"""The control-plane fixture itself: a real API server that authenticates, authorises and expires tokens."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshcni_core.pods.lookup import ApiClients
from meshcni_testing.controlplane import ApiError, ControlPlaneError, start_control_plane


def test_the_admin_kubeconfig_works_with_the_kubernetes_client(control_plane):
    version = client.VersionApi(ApiClients().get(str(control_plane.admin_kubeconfig))).get_code()
    assert version.git_version == "v1.37.2"
    names = {n.metadata.name for n in client.CoreV1Api(ApiClients().get(str(control_plane.admin_kubeconfig)))
             .list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_a_minted_token_is_that_service_account_and_rbac_decides(control_plane, tmp_path):
    control_plane.ensure_namespace("fixture-rbac")
    control_plane.create("/api/v1/namespaces/fixture-rbac/serviceaccounts",
                         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})
    token = control_plane.mint_token("fixture-rbac", "reader")
    review = control_plane.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                   {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                                   token=token)
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:fixture-rbac:reader"
    with pytest.raises(ApiError) as refused:
        control_plane.request("GET", "/api/v1/namespaces/fixture-rbac/pods", token=token)
    assert refused.value.status == 403
    # A Role of its own: the built-in "view" is aggregated by the controller-manager, which does not run here.
    control_plane.create("/apis/rbac.authorization.k8s.io/v1/namespaces/fixture-rbac/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    control_plane.create("/apis/rbac.authorization.k8s.io/v1/namespaces/fixture-rbac/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "fixture-rbac"}]})
    deadline = time.monotonic() + 10  # the RBAC authorizer's informer sees the binding shortly after
    while True:
        status, _, _ = control_plane.send("GET", "/api/v1/namespaces/fixture-rbac/pods", token=token)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    # Through a kubeconfig, as the product's clients read it.
    core = client.CoreV1Api(ApiClients().get(str(control_plane.write_kubeconfig(tmp_path / "kc", token=token))))
    assert core.list_namespaced_pod("fixture-rbac").items == []
    with pytest.raises(ApiException) as forbidden:
        core.list_namespaced_pod("default")
    assert forbidden.value.status == 403


def test_a_token_bound_to_a_secret_dies_with_it_and_short_lifetimes_are_refused(control_plane):
    control_plane.ensure_namespace("fixture-tokens")
    token = control_plane.mint_token("fixture-tokens", "default", expiration_seconds=600, bound_secret="lease")
    who = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    assert control_plane.send("POST", path, who, token=token)[0] == 201
    control_plane.request("DELETE", "/api/v1/namespaces/fixture-tokens/secrets/lease")
    deadline = time.monotonic() + 30  # the token authenticator looks the Secret up through an informer
    while (status := control_plane.send("POST", path, who, token=token)[0]) != 401 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 401
    with pytest.raises(ApiError) as refused:
        control_plane.mint_token("fixture-tokens", "default", expiration_seconds=60)
    assert refused.value.status == 422 and "may not specify a duration less than 10 minutes" in refused.value.body


def test_stopping_ends_both_processes(control_plane_bin, tmp_path):
    plane = start_control_plane(control_plane_bin, tmp_path / "plane")
    processes = list(plane.processes.values())
    assert all(p.poll() is None for p in processes)
    plane.stop()
    assert all(p.poll() is not None for p in processes)


def test_validating_admission_policies_are_enforced(control_plane):
    control_plane.ensure_namespace("fixture-vap")
    control_plane.create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "fixture-no-forbidden-configmaps"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                         "operations": ["CREATE"], "resources": ["configmaps"]}]},
                 "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)",
                                  "message": "fixture: no key named forbidden"}]}})
    control_plane.create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "fixture-no-forbidden-configmaps"},
        "spec": {"policyName": "fixture-no-forbidden-configmaps", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": "fixture-vap"}}}}})

    def create(name: str, data: dict) -> tuple[int, str]:
        status, _, body = control_plane.send("POST", "/api/v1/namespaces/fixture-vap/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        return status, body

    deadline = time.monotonic() + 15  # the policy reaches the admission plugin through an informer
    attempt = 0
    while True:
        attempt += 1
        status, body = create(f"refused-{attempt}", {"forbidden": "x"})
        if status != 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 422 and "fixture: no key named forbidden" in body
    assert create("allowed", {"fine": "x"})[0] == 201


def test_missing_binaries_are_a_clear_error_naming_the_build(tmp_path):
    with pytest.raises(ControlPlaneError, match=r"kube-apiserver is missing: run `make control-plane`"):
        start_control_plane(tmp_path / "no-bin", tmp_path / "plane")
    assert not (tmp_path / "plane").exists()
