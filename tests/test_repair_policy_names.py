"""Repair policies chosen by their registered name, a third party's included, against a real
kube-apiserver; a name nobody registers is refused with the list of known policies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from meshcni_testing.controlplane import ControlPlane

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
NAMESPACE = "repair-names"
CONTAINER = {"name": "istio-validation", "image": "istio/proxyv2:1.6.0", "imageID": "sha256:1", "ready": False}
BROKEN = {"initContainerStatuses": [{**CONTAINER, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}}]}
THIRD_PARTY = '''
from meshcni_hooks import hookimpl
from meshcni_hooks.types import RepairPolicy


def note(pod, actions, settings):
    actions.event(pod, "NotedBrokenPod", "a third party's repair policy saw this pod")
    return "noted"


class NotePolicy:
    @hookimpl
    def meshcni_register_repair_policies(self):
        return [RepairPolicy("note", note, "record an Event only", provider="acme-repair-note")]
'''


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """A third party's extension, installed the way pip leaves one: a module beside its dist-info."""
    site = tmp_path_factory.mktemp("site")
    (site / "acme_repair_note.py").write_text(textwrap.dedent(THIRD_PARTY))
    info = site / "acme_repair_note-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-repair-note\nVersion: 1.0\n"
                                   "Requires-Dist: meshcni-hooks<1,>=0.1\n")
    (info / "entry_points.txt").write_text("[meshcni.extensions]\nacme-note = acme_repair_note:NotePolicy\n")
    return site


@pytest.fixture
def broken_pod(control_plane: ControlPlane) -> tuple[str, str]:
    control_plane.ensure_namespace(NAMESPACE)
    node, name = f"node-{uuid.uuid4().hex[:8]}", f"web-{uuid.uuid4().hex[:6]}"
    control_plane.create_pod(NAMESPACE, name, node=node, containers=("app", "istio-proxy"),
                             init_containers=("istio-validation",), annotations={"sidecar.istio.io/status": "{}"},
                             status=BROKEN)
    return node, name


def repair(control_plane: ControlPlane, *flags: str, site: Path | None = None, **env: str):
    environment = {**os.environ, **env}
    if site is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environment.get("PYTHONPATH")]))
    return subprocess.run([MESHCNI, "repair", "--kubeconfig", str(control_plane.admin_kubeconfig), *flags],
                          capture_output=True, text=True, timeout=60, env=environment)


def events_of(control_plane: ControlPlane, pod: str) -> list[str]:
    listed = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events"
                                          f"?fieldSelector=involvedObject.name%3D{pod}")
    return [event["reason"] for event in listed["items"]]


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_a_third_party_policy_is_used_by_its_name(control_plane, third_party, broken_pod, how):
    node, pod = broken_pod
    chosen = ("--policy", "note") if how == "flag" else ()
    done = repair(control_plane, "--node-name", node, *chosen, site=third_party,
                  **({"REPAIR_POLICY": "note"} if how == "variable" else {}))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {f"{NAMESPACE}/{pod}": "noted"}
    assert events_of(control_plane, pod) == ["NotedBrokenPod"]


def test_istios_delete_flag_finds_the_delete_policy_by_name(control_plane, broken_pod):
    node, pod = broken_pod
    done = repair(control_plane, "--node-name", node, **{"REPAIR_DELETE-PODS": "true"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {f"{NAMESPACE}/{pod}": "deleted"}


def test_an_unregistered_name_lists_the_known_policies_and_their_extensions(control_plane, third_party):
    done = repair(control_plane, "--policy", "relabel", site=third_party)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("meshcni repair: no repair policy 'relabel' is registered; known policies:\n"
                           "  label: built in\n"
                           "  reprogram: built in\n"
                           "  delete: extension repair-delete (installed, meshcni-repair-delete)\n"
                           "  note: extension acme-note (installed, acme-repair-note)\n"
                           "a policy comes from an extension that registers it through "
                           "meshcni_register_repair_policies: install its wheel\n")


def test_extensions_named_are_the_only_ones_searched(control_plane, third_party):
    done = repair(control_plane, "--policy", "note", "--extensions", "repair-delete", site=third_party)
    assert done.returncode == 2
    assert "no repair policy 'note' is registered" in done.stderr
    assert "  delete: extension repair-delete\n" in done.stderr
    assert "only the built-ins and --extensions repair-delete were searched" in done.stderr


def test_policy_and_a_contradicting_istio_flag_are_refused(control_plane):
    done = repair(control_plane, "--policy", "label", "--delete-pods")
    assert done.returncode == 2
    assert "--policy label contradicts the Istio flag that selects 'delete'" in done.stderr


def test_the_policy_named_in_the_install_values_is_the_one_the_repair_deployment_runs(control_plane, third_party,
                                                                                     broken_pod):
    """`values.cni.repair.policy`: the rendered Deployment's environment, as its container gets it,
    makes `meshcni repair` use that policy (Istio's label and delete flags, both on by default, off)."""
    from meshcni_core.manifest.render import render
    from meshcni_core.manifest.values import resolve

    node, pod = broken_pod
    deployment = next(d for d in render(resolve(sets=["values.cni.repair.policy=note"])) if d["kind"] == "Deployment")
    env = {v["name"]: v["value"] for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    done = repair(control_plane, "--node-name", node, "--run-as-daemon", "false", site=third_party, **env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {f"{NAMESPACE}/{pod}": "noted"}
    assert events_of(control_plane, pod) == ["NotedBrokenPod"]
