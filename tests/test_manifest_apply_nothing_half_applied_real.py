"""``meshcni manifest apply`` against a real kube-apiserver writes all of its objects or none: a
namespace that does not exist yet is created first (as istioctl creates its install namespace), and
an object the server refuses stops the apply before anything is written."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from meshcni_core.manifest.applyset import member
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing.controlplane import ApiError, ControlPlane
from meshcni_testing.processes import MESHCNI
from test_manifest_apply_real import REMOVE, stored

UNINSTALL = "/apis/apps/v1/namespaces/{}/daemonsets/istio-cni-uninstall"
# Everything an installer needs except writing DaemonSets (RBAC has no deny: the groups are listed).
DAEMON_SETS_READ_ONLY = [
    {"apiGroups": ["", "rbac.authorization.k8s.io", "admissionregistration.k8s.io", "k8s.cni.cncf.io"],
     "resources": ["*"], "verbs": ["*"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
    {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "watch"]},
]


def manifest_apply(kubeconfig: Path, sets: list[str], *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [MESHCNI, "manifest", "apply", "--kubeconfig", str(kubeconfig), *flags]
    return subprocess.run(argv + [w for s in sets for w in ("--set", s)], capture_output=True, text=True, timeout=120)


def expected_members(sets: list[str]) -> list[dict]:
    return [member(d) for d in render(resolve(sets=sets))]


def remove_everything(control_plane: ControlPlane, namespace: str) -> None:
    """Uninstalls, then deletes the clean-up DaemonSet the uninstall leaves (no kubelet runs it
    here), so the shared control plane holds none of this test's objects."""
    manifest_apply(control_plane.admin_kubeconfig, [f"components.cni.namespace={namespace}", *REMOVE])
    try:
        control_plane.request("DELETE", UNINSTALL.format(namespace))
    except ApiError as exc:
        if exc.status != 404:
            raise


def namespace_exists(control_plane: ControlPlane, name: str) -> bool:
    try:
        control_plane.request("GET", f"/api/v1/namespaces/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_a_missing_namespace_is_created_before_any_object(control_plane):
    namespace = f"cni-{uuid.uuid4().hex[:8]}"
    sets = [f"components.cni.namespace={namespace}"]
    expected = expected_members(sets)
    assert any(d["metadata"].get("namespace") == namespace for d in expected)
    try:
        dry = manifest_apply(control_plane.admin_kubeconfig, sets, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines()[0] == f"Namespace/{namespace} created (dry run)"
        assert not namespace_exists(control_plane, namespace)

        done = manifest_apply(control_plane.admin_kubeconfig, sets)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == f"Namespace/{namespace} created"
        assert [d["metadata"]["name"] for d in expected if stored(control_plane, d) is None] == []
    finally:
        remove_everything(control_plane, namespace)


def test_an_object_the_server_refuses_stops_the_apply_before_anything_is_written(control_plane, tmp_path):
    namespace = f"cni-{uuid.uuid4().hex[:8]}"
    control_plane.ensure_namespace(namespace)
    control_plane.grant(namespace, "no-daemon-sets", DAEMON_SETS_READ_ONLY)
    token = control_plane.mint_token(namespace, "no-daemon-sets")
    control_plane.wait_until_served(f"/api/v1/namespaces/{namespace}/configmaps", token)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    sets = [f"components.cni.namespace={namespace}"]
    expected = expected_members(sets)
    try:
        refused = manifest_apply(kubeconfig, sets)
        assert refused.returncode != 0
        assert "DaemonSet/istio-cni-node" in refused.stderr and "403" in refused.stderr, refused.stderr
        assert refused.stdout == ""
        assert [d["metadata"]["name"] for d in expected if stored(control_plane, d) is not None] == []
    finally:
        remove_everything(control_plane, namespace)
