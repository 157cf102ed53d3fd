"""``meshcni manifest apply`` against a real kube-apiserver: every object `manifest generate` renders
for the defaults and the seed's three examples is accepted and stored by real server-side apply, a
second apply changes nothing, and removing the component prunes it all."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshcni_core.manifest.apply import FIELD_MANAGER, Applied, object_path
from meshcni_core.manifest.applyset import PART_OF_LABEL, applyset_id, member
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing.controlplane import ApiError, ControlPlane
from meshcni_testing.processes import MESHCNI

_spec = importlib.util.spec_from_file_location(
    "seed_examples", Path(__file__).resolve().parents[1] / "core" / "tests" / "seed_examples.py")
assert _spec is not None and _spec.loader is not None
seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed)

CASES: dict[str, tuple[list[str], list[str]]] = {
    "defaults": ([], []),
    "seed-overlay": ([str(seed.SEED_OVERLAY)], []),
    "seed-gke": ([], seed.sets_of(seed.GKE)),
    "seed-openshift": ([], seed.sets_of(seed.OPENSHIFT)),
    "node-ops": ([], ["values.cni.taint.enabled=true", "values.cni.resourceQuotas.enabled=true",
                      "values.cni.istioOwnedCNIConfig=true", "values.cni.seccompProfile.type=RuntimeDefault"]),
}
REMOVE = ["components.cni.enabled=false"]
CLEANUP_PRUNED = "DaemonSet/istio-cni-uninstall -n istio-system pruned"


def apply(control_plane: ControlPlane, files: list[str], sets: list[str]) -> subprocess.CompletedProcess[str]:
    flags = [w for f in files for w in ("-f", f)] + [w for s in sets for w in ("--set", s)]
    return subprocess.run([MESHCNI, "manifest", "apply", "--kubeconfig", str(control_plane.admin_kubeconfig), *flags],
                          capture_output=True, text=True, timeout=120)


def stored(control_plane: ControlPlane, document: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return control_plane.request("GET", object_path(document))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def assert_holds(actual: Any, expected: Any, where: str = "") -> None:
    """Every field of ``expected`` is in ``actual`` with the same value. The server adds defaults, and
    stores no empty map or list (``annotations: {}`` comes back absent)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            if value in ({}, []) and key not in actual:
                continue
            assert key in actual, f"{where}.{key} missing"
            assert_holds(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_holds(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES)
def test_every_generated_object_is_stored_by_a_real_server_and_a_second_apply_changes_nothing(control_plane, case):
    files, sets = CASES[case]
    expected = [member(d) for d in render(resolve(files=files, sets=sets))]
    control_plane.ensure_namespace("istio-system")  # istioctl creates it before the CNI component
    try:
        first = apply(control_plane, files, sets)
        assert first.returncode == 0, first.stderr
        # installing again prunes the node clean-up an earlier case's removal left (no kubelet runs it here)
        first_lines = [line for line in first.stdout.splitlines() if line != CLEANUP_PRUNED]
        assert sorted(first_lines) == sorted(
            str(Applied(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", ""), "created"))
            for d in expected)
        versions = {}
        for document in expected:
            server_copy = stored(control_plane, document)
            assert server_copy is not None, object_path(document)
            assert_holds(server_copy, document, object_path(document))
            assert server_copy["metadata"]["labels"][PART_OF_LABEL] == applyset_id()
            assert (FIELD_MANAGER, "Apply") in {(m["manager"], m["operation"])
                                                for m in server_copy["metadata"]["managedFields"]}
            versions[object_path(document)] = server_copy["metadata"]["resourceVersion"]

        second = apply(control_plane, files, sets)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count(" unchanged\n") == len(expected) == len(second.stdout.splitlines())
        assert {object_path(d): stored(control_plane, d)["metadata"]["resourceVersion"]  # type: ignore[index]
                for d in expected} == versions

        removed = apply(control_plane, [], REMOVE)
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.count(" pruned\n") == len(expected)
        assert "DaemonSet/istio-cni-uninstall -n istio-system created" in removed.stdout.splitlines()
        assert [d for d in expected if stored(control_plane, d) is not None] == []
    finally:
        apply(control_plane, [], REMOVE)  # leaves the shared control plane as it was, whatever failed
