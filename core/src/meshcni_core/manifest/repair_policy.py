"""The ValidatingAdmissionPolicy that confines the repair identity to its label.

The ``label`` repair policy needs ``patch`` on every pod, which RBAC cannot narrow to one label:
with it alone the repair token could change any field of any pod. This policy, bound with
``Deny``, refuses every pod UPDATE (a patch is one) by the repair service account that changes
anything but the repair label, which it may only add with the configured value. Compared, old
against new: the spec, the label map without the repair label, and the metadata a client can
write (annotations, ownerReferences, finalizers, generateName, deletionGracePeriodSeconds).
Left out are the fields the server manages (resourceVersion, managedFields, generation) and
status, which the server resets from the stored pod on a pod UPDATE before admission sees it;
name, namespace, uid and creationTimestamp are immutable on any update. Needs Kubernetes 1.30
(admissionregistration.k8s.io/v1).
"""

from __future__ import annotations

import json
from typing import Any

POLICY_NAME = "istio-cni-repair-label-only"
API_VERSION = "admissionregistration.k8s.io/v1"
# Metadata a client may set on an update; each must stay as it was.
WRITABLE_METADATA = ("annotations", "ownerReferences", "finalizers", "generateName", "deletionGracePeriodSeconds")


def unchanged(path: str) -> str:
    """CEL: the field at ``path`` (e.g. ``metadata.labels``) is as it was, present or absent."""
    new, old = f"object.{path}", f"oldObject.{path}"
    return f"(has({new}) ? has({old}) && {new} == {old} : !has({old}))"


def cel_string(text: str) -> str:
    """A CEL string literal (JSON's escapes are CEL's for the characters label keys may hold)."""
    return json.dumps(text)


def variables() -> list[dict[str, str]]:
    return [{"name": "newLabels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
            {"name": "oldLabels", "expression": "has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}"}]


def validations(key: str, value: str) -> list[dict[str, str]]:
    k, v = cel_string(key), cel_string(value)
    new, old = "variables.newLabels", "variables.oldLabels"
    return [
        {"expression": "object.spec == oldObject.spec",
         "message": "the repair identity may not change a pod's spec"},
        {"expression": " && ".join(unchanged(f"metadata.{field}") for field in WRITABLE_METADATA),
         "message": "the repair identity may not change a pod's annotations, owners, finalizers, generateName "
                    "or deletionGracePeriodSeconds"},
        {"expression": f"{new}.all(k, k == {k} || (k in {old} && {old}[k] == {new}[k])) && "
                       f"{old}.all(k, k == {k} || k in {new})",
         "message": f"the repair identity may change no label but {key}"},
        {"expression": f"{k} in {new} ? {new}[{k}] == {v} || ({k} in {old} && {old}[{k}] == {new}[{k}]) "
                       f": !({k} in {old})",
         "message": f"the repair identity may only set {key}={value}, never change or remove it"},
    ]


def label_only_policy(username: str, key: str, value: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The policy and its binding for the repair identity ``username``
    (``system:serviceaccount:<namespace>:<name>``)."""
    return deny_policy(POLICY_NAME, "pods", ("repair-identity", username), variables(), validations(key, value),
                       labels)


def deny_policy(name: str, resource: str, identity: tuple[str, str], policy_variables: list[dict[str, str]],
                policy_validations: list[dict[str, str]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy on UPDATEs of core ``resource`` by one user (``identity``: the
    condition's name and the username), and its ``Deny`` binding."""
    condition, username = identity
    metadata = {"name": name, "labels": dict(labels)}
    policy = {
        "apiVersion": API_VERSION, "kind": "ValidatingAdmissionPolicy", "metadata": metadata,
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["UPDATE"], "resources": [resource]}]},
            "matchConditions": [{"name": condition,
                                 "expression": f"request.userInfo.username == {cel_string(username)}"}],
            "variables": policy_variables,
            "validations": policy_validations,
        },
    }
    binding = {
        "apiVersion": API_VERSION, "kind": "ValidatingAdmissionPolicyBinding", "metadata": dict(metadata),
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return [policy, binding]
