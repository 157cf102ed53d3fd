"""``meshcni manifest apply`` beside another field manager, and its ApplySet pruning, on a real
kube-apiserver: real server-side apply decides who owns which field, and real deletes with
preconditions remove what the configuration no longer renders, following kubectl's ApplySet
conventions (parent ConfigMap labelled with the set's id, members labelled part-of it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshcni_core.manifest.apply import FIELD_MANAGER, object_path
from meshcni_core.manifest.applyset import PARENT_NAME, PARENT_NAMESPACE, PART_OF_LABEL, applyset_id
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing.controlplane import ApiError, ControlPlane
from test_manifest_apply_real import REMOVE, apply, stored

CONFIG = "/api/v1/namespaces/istio-system/configmaps/istio-cni-config"
PARENT = f"/api/v1/namespaces/{PARENT_NAMESPACE}/configmaps/{PARENT_NAME}"
OPERATOR = "ops-team"  # a second field manager, e.g. `kubectl apply --server-side --field-manager ops-team`
NO_REPAIR = ["values.cni.repair.enabled=false"]


@pytest.fixture
def installed(control_plane: ControlPlane):
    control_plane.ensure_namespace("istio-system")
    done = apply(control_plane, [], [])
    assert done.returncode == 0, done.stderr
    try:
        yield control_plane
    finally:
        apply(control_plane, [], REMOVE)


def server_side_apply(plane: ControlPlane, path: str, document: dict[str, Any], manager: str,
                      force: bool = False) -> dict[str, Any]:
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return plane.request("PATCH", path + query, document, content_type="application/apply-patch+yaml")


def config_patch(data: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "istio-cni-config", "namespace": "istio-system"}}
    if annotations:
        document["metadata"]["annotations"] = annotations
    if data:
        document["data"] = data
    return document


def owners_of(stored_object: dict[str, Any], field: str) -> set[str]:
    """The managers whose managedFields entry lists ``field`` (``f:<name>`` under any parent)."""
    return {m["manager"] for m in stored_object["metadata"]["managedFields"] if f'"f:{field}"' in json.dumps(m)}


def lines(stdout: str, action: str) -> list[str]:
    return sorted(line for line in stdout.splitlines() if line.endswith(f" {action}"))


def test_a_second_manager_cannot_take_our_fields_without_force_and_ours_come_back(installed):
    ours = installed.request("GET", CONFIG)["data"]["cni_network_config"]
    with pytest.raises(ApiError) as conflict:
        server_side_apply(installed, CONFIG, config_patch({"cni_network_config": "{}"}), OPERATOR)
    assert conflict.value.status == 409
    assert [(c["message"], c["field"]) for c in json.loads(conflict.value.body)["details"]["causes"]] == [
        (f'conflict with "{FIELD_MANAGER}"', ".data.cni_network_config")]

    taken = server_side_apply(installed, CONFIG, config_patch({"cni_network_config": "{}"}), OPERATOR, force=True)
    assert taken["data"]["cni_network_config"] == "{}" and owners_of(taken, "cni_network_config") == {OPERATOR}

    again = apply(installed, [], [])
    assert again.returncode == 0, again.stderr
    assert "ConfigMap/istio-cni-config -n istio-system configured" in again.stdout.splitlines()
    restored = installed.request("GET", CONFIG)
    assert restored["data"]["cni_network_config"] == ours
    assert owners_of(restored, "cni_network_config") == {FIELD_MANAGER}


def test_fields_only_another_manager_sets_are_left_to_it(installed):
    server_side_apply(installed, CONFIG, config_patch(annotations={"ops.example.com/owner": "team-a"}), OPERATOR)
    again = apply(installed, [], [])
    assert again.returncode == 0, again.stderr
    assert "ConfigMap/istio-cni-config -n istio-system unchanged" in again.stdout.splitlines()
    kept = installed.request("GET", CONFIG)
    assert kept["metadata"]["annotations"]["ops.example.com/owner"] == "team-a"
    assert owners_of(kept, "ops.example.com/owner") == {OPERATOR}


def test_pruning_follows_kubectls_applyset_conventions_and_spares_other_objects(installed):
    parent = installed.request("GET", PARENT)["metadata"]
    assert parent["labels"]["applyset.kubernetes.io/id"] == applyset_id()
    assert parent["annotations"]["applyset.kubernetes.io/tooling"].startswith("meshcni/")
    assert parent["annotations"]["applyset.kubernetes.io/contains-group-kinds"] == (
        "ClusterRole.rbac.authorization.k8s.io,ClusterRoleBinding.rbac.authorization.k8s.io,ConfigMap,"
        "DaemonSet.apps,Deployment.apps,Role.rbac.authorization.k8s.io,RoleBinding.rbac.authorization.k8s.io,"
        "ServiceAccount")
    # "default": the node-events Role and RoleBinding (the API server keeps Events about nodes there)
    assert parent["annotations"]["applyset.kubernetes.io/additional-namespaces"] == "default,istio-system"
    for document in render(resolve()):
        assert stored(installed, document)["metadata"]["labels"][PART_OF_LABEL] == applyset_id()  # type: ignore[index]
    bystander = installed.create("/api/v1/namespaces/istio-system/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses"}})
    other_set = installed.create("/api/v1/namespaces/istio-system/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "other-tool", "labels": {PART_OF_LABEL: "applyset-other-v1"}}})
    try:
        pruning = apply(installed, [], NO_REPAIR)
        pruned = lines(pruning.stdout, "pruned")
        assert pruned == ["ClusterRole/istio-cni-repair pruned", "ClusterRoleBinding/istio-cni-repair pruned",
                          "Deployment/istio-cni-repair -n istio-system pruned",
                          "ServiceAccount/istio-cni-repair -n istio-system pruned"], pruning.stdout + pruning.stderr
        for document in render(resolve()):
            expected_there = document in render(resolve(sets=NO_REPAIR))
            assert (stored(installed, document) is not None) == expected_there, object_path(document)
        assert "Deployment.apps" not in installed.request("GET", PARENT)["metadata"]["annotations"][
            "applyset.kubernetes.io/contains-group-kinds"]
        for spared in (bystander, other_set):
            still = installed.request("GET", object_path(spared))
            assert still["metadata"]["uid"] == spared["metadata"]["uid"]
        again = apply(installed, [], NO_REPAIR)
        assert again.returncode == 0 and lines(again.stdout, "pruned") == []
    finally:
        for spared in (bystander, other_set):
            installed.request("DELETE", object_path(spared))
