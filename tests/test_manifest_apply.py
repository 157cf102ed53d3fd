"""``meshcni manifest apply`` against the API stand-in: the requests it sends (none for bad values),
DaemonSet status a real server only gets from its controller (the node clean-up), and moves between
namespaces. Real server-side apply, a second field manager and ApplySet pruning are in
test_manifest_apply_real.py and test_manifest_ownership_real.py."""

from __future__ import annotations

import subprocess

from meshcni_core.manifest.apply import object_path
from meshcni_core.manifest.applyset import PARENT_NAME, PARENT_NAMESPACE, PART_OF_LABEL, applyset_id, member
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.processes import MESHCNI

OPENSHIFT = ["values.cni.platform=openshift", "values.cni.platformSettings.applicationNamespaces[0]=bookinfo"]
PARENT = f"/api/v1/namespaces/{PARENT_NAMESPACE}/configmaps/{PARENT_NAME}"
KUBECTL_ID_VECTOR = ("my-set", "test", "Secret", "", "applyset-0eFHV8ySqp7XoShsGvyWFQD3s96yqwHmzc4e0HR1dsY-v1")


def apply(kubeconfig: str, *extra: str, sets: list[str] = OPENSHIFT) -> subprocess.CompletedProcess[str]:
    flags = [w for s in sets for w in ("--set", s)]
    return subprocess.run([MESHCNI, "manifest", "apply", "--kubeconfig", kubeconfig, *flags, *extra],
                          capture_output=True, text=True, timeout=120)


def stored_paths(api: FakeApiServer) -> set[str]:
    return set(api.objects) - {PARENT}


def lines(proc: subprocess.CompletedProcess[str], action: str) -> list[str]:
    return sorted(line for line in proc.stdout.splitlines() if line.endswith(f" {action}"))


def test_apply_creates_exactly_the_generated_objects_then_changes_nothing(tmp_path):
    expected = render(resolve(sets=OPENSHIFT))
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        dry = apply(kubeconfig, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert api.objects == {}
        assert dry.stdout.count("created (dry run)") == len(expected) == len(dry.stdout.splitlines())

        first = apply(kubeconfig)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[0] == "ServiceAccount/istio-cni -n kube-system created"
        assert first.stdout.count(" created\n") == len(expected)
        assert stored_paths(api) == {object_path(d) for d in expected}
        for document in expected:  # as generated, plus the applyset membership label
            stored = dict(api.objects[object_path(document)])
            stored["metadata"] = {k: v for k, v in stored["metadata"].items() if k not in ("resourceVersion", "uid")}
            assert stored == member(document)
            assert stored["metadata"]["labels"][PART_OF_LABEL] == applyset_id()
        versions = {path: obj["metadata"]["resourceVersion"] for path, obj in api.objects.items()}

        second = apply(kubeconfig)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count(" unchanged\n") == len(expected)
        assert {path: obj["metadata"]["resourceVersion"] for path, obj in api.objects.items()} == versions

        changed = apply(kubeconfig, "--set", "values.cni.logLevel=debug")
        assert changed.returncode == 0, changed.stderr
        assert sorted(line for line in changed.stdout.splitlines() if line.endswith(" configured")) == [
            "ConfigMap/istio-cni-config -n kube-system configured",
            "DaemonSet/istio-cni-node -n kube-system configured",
        ]
        assert {m for m, _, _ in api.requests} == {"PATCH", "GET"}  # nothing deleted


def test_bad_values_send_nothing(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        refused = apply(kubeconfig, "--set", "values.cni.chained=maybe")
        assert refused.returncode == 2 and refused.stdout == ""
        assert "values.cni.chained: expected true or false" in refused.stderr
        assert api.requests == []


def test_an_unauthorised_identity_fails_naming_the_object(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="wrong")
        refused = apply(kubeconfig)
        assert refused.returncode == 2
        assert "reading ConfigMap/istio-cni-applyset failed: 401" in refused.stderr  # the first request


def test_the_applyset_id_is_kubectls():
    *parent, expected = KUBECTL_ID_VECTOR  # from kubectl's own apply tests
    assert applyset_id(*parent) == expected


def test_moving_the_install_to_another_namespace_removes_it_from_the_old_one(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        assert apply(kubeconfig, sets=[]).returncode == 0
        moved_sets = ["components.cni.namespace=kube-system"]
        moved = apply(kubeconfig, sets=moved_sets)
        assert moved.returncode == 0, moved.stderr
        assert lines(moved, "pruned") == ["ConfigMap/istio-cni-config -n istio-system pruned",
                                          "DaemonSet/istio-cni-node -n istio-system pruned",
                                          "Deployment/istio-cni-repair -n istio-system pruned",
                                          "ServiceAccount/istio-cni -n istio-system pruned",
                                          "ServiceAccount/istio-cni-repair -n istio-system pruned"]
        assert lines(moved, "configured") == ["ClusterRoleBinding/istio-cni configured",  # their subjects moved
                                              "ClusterRoleBinding/istio-cni-repair configured",
                                              "RoleBinding/istio-cni -n default configured"]
        assert stored_paths(api) == {object_path(d) for d in render(resolve(sets=moved_sets))}
        assert not any("/namespaces/istio-system/" in path for path in api.objects)


UNINSTALL = "/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-uninstall"
DISABLED = ["components.cni.enabled=false"]


def daemon_set_status(api: FakeApiServer, path: str, desired: int, ready: int) -> None:
    """What the DaemonSet controller reports: pods scheduled to ``desired`` nodes, ``ready`` Ready."""
    api.objects[path]["status"] = {"observedGeneration": 0, "desiredNumberScheduled": desired,
                                   "updatedNumberScheduled": desired, "numberReady": ready}


def test_disabling_the_component_removes_everything_and_uninstalls_from_the_nodes(tmp_path):
    """Issue 9 item 13: with the install DaemonSet pruned, a clean-up DaemonSet with the same host
    mounts runs uninstall-cni on every node, and a later apply removes it once it ran everywhere."""
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        assert apply(kubeconfig).returncode == 0
        install = api.objects["/apis/apps/v1/namespaces/kube-system/daemonsets/istio-cni-node"]
        disabled = apply(kubeconfig, "--set", "components.cni.enabled=false")
        assert disabled.returncode == 0, disabled.stderr
        assert len(lines(disabled, "pruned")) == len(render(resolve(sets=OPENSHIFT)))
        assert lines(disabled, "created") == ["DaemonSet/istio-cni-uninstall -n kube-system created"]
        assert "removes the plugin from every node" in disabled.stderr
        cleanup_path = "/apis/apps/v1/namespaces/kube-system/daemonsets/istio-cni-uninstall"
        assert stored_paths(api) == {cleanup_path}
        cleanup = api.objects[cleanup_path]["spec"]["template"]["spec"]
        assert cleanup["initContainers"][0]["command"] == [
            "meshcni", "uninstall-cni", "--wait-for-agent", "/var/run/meshcni/cni.sock"]
        host_volumes = [v for v in install["spec"]["template"]["spec"]["volumes"] if "hostPath" in v
                        and v["name"] != "netns-dir"]
        assert cleanup["volumes"] == host_volumes  # the same host paths install-cni wrote to
        assert cleanup["hostNetwork"] is True  # the plugin, still chained, never runs for its pods

        still = apply(kubeconfig, "--set", "components.cni.enabled=false")  # not run everywhere yet: kept
        assert still.returncode == 0 and lines(still, "unchanged") == ["DaemonSet/istio-cni-uninstall -n kube-system unchanged"]
        daemon_set_status(api, cleanup_path, desired=3, ready=2)
        assert lines(apply(kubeconfig, "--set", "components.cni.enabled=false"), "pruned") == []
        daemon_set_status(api, cleanup_path, desired=3, ready=3)
        done = apply(kubeconfig, "--set", "components.cni.enabled=false")
        assert lines(done, "pruned") == ["DaemonSet/istio-cni-uninstall -n kube-system pruned"]
        assert stored_paths(api) == set()
        again = apply(kubeconfig, "--set", "components.cni.enabled=false")
        assert again.returncode == 0 and again.stdout == "" and stored_paths(api) == set()


def test_no_clean_up_without_an_install_and_none_left_when_reinstalling(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        never_installed = apply(kubeconfig, sets=DISABLED)
        assert never_installed.returncode == 0 and never_installed.stdout == "" and stored_paths(api) == set()
        assert apply(kubeconfig, sets=[]).returncode == 0
        assert apply(kubeconfig, sets=DISABLED).returncode == 0
        assert UNINSTALL in stored_paths(api)
        reinstalled = apply(kubeconfig, sets=[])  # back before the clean-up finished: it must not go on
        assert reinstalled.returncode == 0, reinstalled.stderr
        assert lines(reinstalled, "pruned") == ["DaemonSet/istio-cni-uninstall -n istio-system pruned"]
        assert stored_paths(api) == {object_path(d) for d in render(resolve(sets=[]))}


def test_a_namespace_move_or_a_rollout_never_uninstalls(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        assert apply(kubeconfig, sets=[]).returncode == 0
        moved = apply(kubeconfig, sets=["components.cni.namespace=kube-system"])
        changed = apply(kubeconfig, sets=["components.cni.namespace=kube-system", "values.cni.logLevel=debug"])
        assert moved.returncode == changed.returncode == 0
        assert not any("istio-cni-uninstall" in path for path in api.objects)


def test_an_applyset_of_another_tool_or_an_object_of_another_set_is_left_alone(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        api.objects[PARENT] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": PARENT_NAME, "namespace": PARENT_NAMESPACE, "uid": "u1", "resourceVersion": "1",
            "labels": {"applyset.kubernetes.io/id": applyset_id()},
            "annotations": {"applyset.kubernetes.io/tooling": "kubectl/v1.33"}}}
        refused = apply(kubeconfig)
        assert refused.returncode == 2 and refused.stdout == ""
        assert "is an applyset managed by kubectl/v1.33, not meshcni; refusing to change it" in refused.stderr
        assert {m for m, _, _ in api.requests} == {"GET"}

        del api.objects[PARENT]
        theirs = "/api/v1/namespaces/kube-system/serviceaccounts/istio-cni"
        api.objects[theirs] = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "istio-cni", "namespace": "kube-system", "uid": "u2", "resourceVersion": "2",
            "labels": {PART_OF_LABEL: "applyset-other-v1"}}}
        refused = apply(kubeconfig)
        assert refused.returncode == 2
        assert "ServiceAccount/istio-cni belongs to another applyset (applyset-other-v1)" in refused.stderr
        assert api.objects[theirs]["metadata"]["labels"] == {PART_OF_LABEL: "applyset-other-v1"}


def test_the_label_policy_brings_its_admission_policy_and_takes_it_away(tmp_path):
    """Issue 9 item 14: the ValidatingAdmissionPolicy and binding are applied with the label policy,
    and pruned when the policy changes."""
    admission = "/apis/admissionregistration.k8s.io/v1"
    policy = f"{admission}/validatingadmissionpolicies/istio-cni-repair-label-only"
    binding = f"{admission}/validatingadmissionpolicybindings/istio-cni-repair-label-only"
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        label = apply(kubeconfig, sets=["values.cni.repair.deletePods=false"])
        assert label.returncode == 0, label.stderr
        assert {policy, binding} <= stored_paths(api)
        assert api.objects[binding]["spec"] == {"policyName": "istio-cni-repair-label-only",
                                                "validationActions": ["Deny"]}
        delete = apply(kubeconfig, sets=[])
        assert delete.returncode == 0, delete.stderr
        assert lines(delete, "pruned") == ["ValidatingAdmissionPolicy/istio-cni-repair-label-only pruned",
                                           "ValidatingAdmissionPolicyBinding/istio-cni-repair-label-only pruned"]
        assert not {policy, binding} & stored_paths(api)
