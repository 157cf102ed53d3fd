"""The ValidatingAdmissionPolicy that confines install-cni's node identity to its own taint.

Lifting the readiness taint needs ``patch`` on nodes, which RBAC cannot narrow to one node or one
field: with it alone, the token on every node (it is in the plugin's kubeconfig) could cordon,
relabel or untaint any node. This policy, bound with ``Deny``, refuses every node UPDATE (a patch
is one) by the DaemonSet's service account unless

- the node is the one its pod runs on: the API server puts that node's name into a token bound to
  a pod (``authentication.kubernetes.io/node-name``, Kubernetes 1.32; beta from 1.30), and
- the only change is the readiness taint going away or coming back (``key:NoSchedule``, no value:
  install-cni puts it back while the node cannot serve pods): the other taints stay as they were,
  and so do the rest of the spec and the metadata a client can write.

The node's status is reset from the stored node on an UPDATE before admission sees it.
"""

from __future__ import annotations

from typing import Any

from meshcni_core.manifest.repair_policy import cel_string, deny_policy, unchanged

POLICY_NAME = "istio-cni-node-taint-only"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
NODE_SPEC = ("podCIDR", "podCIDRs", "providerID", "unschedulable", "configSource", "externalID")
NODE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def variables() -> list[dict[str, str]]:
    return [{"name": "newTaints", "expression": "has(object.spec.taints) ? object.spec.taints : []"},
            {"name": "oldTaints", "expression": "has(oldObject.spec.taints) ? oldObject.spec.taints : []"}]


def validations(taint_key: str) -> list[dict[str, str]]:
    extra = cel_string(NODE_NAME_EXTRA)
    key = cel_string(taint_key)
    return [
        {"expression": f"{extra} in request.userInfo.extra && "
                       f"request.userInfo.extra[{extra}] == [object.metadata.name]",
         "message": "istio-cni may change only the node its own pod runs on (the node named in its token)"},
        {"expression": f"variables.newTaints.filter(t, t.key != {key}) == variables.oldTaints.filter(t, t.key != {key})"
                       f" && variables.newTaints.filter(t, t.key == {key}).all(t, t.effect == 'NoSchedule'"
                       f" && (!has(t.value) || t.value == ''))"
                       f" && size(variables.newTaints.filter(t, t.key == {key})) <= 1",
         "message": f"istio-cni may only remove the taint {taint_key} or add it back as {taint_key}:NoSchedule, "
                    "no other taint"},
        {"expression": " && ".join(unchanged(f"spec.{field}") for field in NODE_SPEC),
         "message": "istio-cni may not change a node's spec beyond its readiness taint"},
        {"expression": " && ".join(unchanged(f"metadata.{field}") for field in NODE_METADATA),
         "message": "istio-cni may not change a node's labels, annotations, owners or finalizers"},
    ]


def own_taint_only_policy(username: str, taint_key: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The policy and its binding for install-cni's identity ``username``."""
    return deny_policy(POLICY_NAME, "nodes", ("install-cni-identity", username), variables(),
                       validations(taint_key), labels)
