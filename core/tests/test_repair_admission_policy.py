"""The repair identity's admission policy: its CEL judged on example pod updates (cel-python).

No API server can run here, so the expressions are evaluated by cel-python, a CEL implementation
of its own: it parses and evaluates them as CEL, but does not type-check them against the pod's
OpenAPI schema as the API server does. The verdicts below are what the policy's authors meant.
"""

import copy

import celpy
import pytest
from test_manifest_generate import by_name, generate

USER = "system:serviceaccount:istio-system:istio-cni-repair"
KEY = "cni.istio.io/uninitialized"
POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "default", "uid": "u1", "resourceVersion": "10",
                 "labels": {"app": "web"}, "annotations": {"sidecar.istio.io/status": "{}"},
                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1"}],
                 "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]},
    "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}], "nodeName": "node-1"},
    "status": {"phase": "Pending"},
}


def policy():
    objects = by_name(generate(sets=["values.cni.repair.deletePods=false"]))
    return objects["ValidatingAdmissionPolicy/istio-cni-repair-label-only"]


def evaluate(expression, activation):
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate(celpy.json_to_cel(activation))


def denials(old, new, username=USER):
    """The messages of the failed validations, [] when the update is admitted; None when the
    policy does not apply to the request at all."""
    spec = policy()["spec"]
    request = {"userInfo": {"username": username}, "operation": "UPDATE"}
    if not all(evaluate(c["expression"], {"request": request}) for c in spec["matchConditions"]):
        return None
    activation = {"object": new, "oldObject": old, "request": request}
    activation["variables"] = {v["name"]: evaluate(v["expression"], activation) for v in spec["variables"]}
    return [v["message"] for v in spec["validations"] if not evaluate(v["expression"], activation)]


def changed(change, pod=POD):
    new = copy.deepcopy(pod)
    change(new)
    return new


def set_path(path, value):
    def change(pod):
        *parents, last = path
        for key in parents:
            pod = pod[key]
        pod[last] = value
    return change


def remove_path(*path):
    def change(pod):
        *parents, last = path
        for key in parents:
            pod = pod[key]
        del pod[last]
    return change


ADMITTED = {
    "adds the repair label": set_path(("metadata", "labels", KEY), "true"),
    "server-managed fields change with the write": lambda pod: (
        set_path(("metadata", "labels", KEY), "true")(pod), set_path(("metadata", "resourceVersion"), "11")(pod),
        pod["metadata"]["managedFields"].append({"manager": "meshcni-repair", "operation": "Update"})),
    "nothing changes": lambda pod: None,
}
DENIED = {
    "another value for the repair label": set_path(("metadata", "labels", KEY), "false"),
    "another label": set_path(("metadata", "labels", "app"), "evil"),
    "an extra label": set_path(("metadata", "labels", "team"), "x"),
    "a label removed": remove_path("metadata", "labels", "app"),
    "an annotation changed": set_path(("metadata", "annotations", "sidecar.istio.io/status"), "x"),
    "annotations removed": remove_path("metadata", "annotations"),
    "an owner removed": remove_path("metadata", "ownerReferences"),
    "a finalizer added": set_path(("metadata", "finalizers"), ["example.com/hold"]),
    "the image": set_path(("spec", "containers", 0, "image"), "evil.invalid/miner:1"),
    "a toleration added": set_path(("spec", "tolerations"), [{"operator": "Exists"}]),
}


@pytest.mark.parametrize("case", ADMITTED)
def test_the_repair_identity_may_add_its_label(case):
    assert denials(POD, changed(ADMITTED[case])) == []


def test_a_pod_without_labels_may_get_the_repair_label():
    bare = changed(remove_path("metadata", "labels"))
    assert denials(bare, changed(lambda pod: pod["metadata"].update(labels={KEY: "true"}), bare)) == []
    assert denials(bare, changed(lambda pod: pod["metadata"].update(labels={"app": "x"}), bare))


@pytest.mark.parametrize("case", DENIED)
def test_the_repair_identity_may_change_nothing_else(case):
    assert denials(POD, changed(DENIED[case])), case


def test_the_repair_label_once_set_may_not_be_removed_or_changed():
    labelled = changed(set_path(("metadata", "labels", KEY), "true"))
    assert denials(labelled, changed(remove_path("metadata", "labels", KEY), labelled)) == [
        f"the repair identity may only set {KEY}=true, never change or remove it"]
    assert denials(labelled, labelled) == []


def test_other_identities_are_not_judged_by_it():
    assert denials(POD, changed(DENIED["the image"]), username="system:serviceaccount:kube-system:deployer") is None
    assert denials(POD, changed(DENIED["the image"]), username="system:serviceaccount:other:istio-cni-repair") is None


def test_only_the_label_policy_renders_it_and_its_binding_denies():
    def admission(*sets):
        return sorted(name for name in by_name(generate(sets=list(sets))) if name.startswith("ValidatingAdmission"))

    assert admission() == []  # delete policy (the seed's default)
    assert admission("values.cni.repair.deletePods=false", "values.cni.repair.labelPods=false") == []
    assert admission("values.cni.repair.deletePods=false", "values.cni.repair.repairPods=true") == []
    assert admission("values.cni.repair.deletePods=false") == [
        "ValidatingAdmissionPolicy/istio-cni-repair-label-only",
        "ValidatingAdmissionPolicyBinding/istio-cni-repair-label-only"]
    binding = by_name(generate(sets=["values.cni.repair.deletePods=false"]))[
        "ValidatingAdmissionPolicyBinding/istio-cni-repair-label-only"]
    assert binding["spec"] == {"policyName": "istio-cni-repair-label-only", "validationActions": ["Deny"]}
    assert policy()["spec"]["failurePolicy"] == "Fail"


def test_the_username_and_label_follow_the_values():
    objects = by_name(generate(sets=["values.cni.repair.deletePods=false", "components.cni.namespace=kube-system",
                                     "values.cni.repair.brokenPodLabelKey=example.com/broken"]))
    spec = objects["ValidatingAdmissionPolicy/istio-cni-repair-label-only"]["spec"]
    assert spec["matchConditions"][0]["expression"] == \
        'request.userInfo.username == "system:serviceaccount:kube-system:istio-cni-repair"'
    assert '"example.com/broken"' in spec["validations"][2]["expression"]
