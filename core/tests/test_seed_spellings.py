"""The seed page's shorthand spellings (issue 15): accepted through one alias table, each use
reported with its canonical path, by `manifest values`, `generate`, `apply` and `explain`."""

import subprocess
from pathlib import Path

import pytest
import yaml
from seed_examples import (
    GKE_CELL_AS_PRINTED,
    GKE_STEP,
    GKE_STEP_TEXT,
    INJECTION_COMMAND,
    INSTALL_STEP,
    meshcni_words,
)

from meshcni_core.manifest.aliases import ALIASES
from meshcni_core.manifest.setpath import SetFlagError
from meshcni_core.manifest.values import ValuesError, resolve
from meshcni_testing.processes import MESHCNI

PODS = Path(__file__).resolve().parents[2] / "examples" / "pods"
GKE_NOTE = "meshcni: --set cniBinDir=/home/kubernetes/bin: the seed page's shorthand for values.cni.cniBinDir\n"


def meshcni(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCNI, *words], capture_output=True, text=True, timeout=120)


def daemon_set(documents: str) -> dict:
    return next(d for d in yaml.safe_load_all(documents) if d and d["kind"] == "DaemonSet")


def host_path(daemon: dict, volume: str) -> str:
    return next(v["hostPath"]["path"] for v in daemon["spec"]["template"]["spec"]["volumes"] if v["name"] == volume)


@pytest.mark.parametrize("command", [GKE_STEP, GKE_STEP_TEXT])
def test_the_gke_step_generates_what_its_canonical_spelling_does(command):
    done = meshcni(*meshcni_words(command, "generate"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith(GKE_NOTE)
    if command == GKE_STEP:
        assert done.stderr == "meshcni: '–set' (a typeset dash) read as '--set'\n" + GKE_NOTE  # noqa: RUF001
    canonical = meshcni("manifest", "generate", "--set", "values.cni.cniBinDir=/home/kubernetes/bin")
    assert done.stdout == canonical.stdout
    assert host_path(daemon_set(done.stdout), "cni-bin-dir") == "/home/kubernetes/bin"


def test_the_injection_sections_option_enables_the_cni():
    done = meshcni(*meshcni_words(INJECTION_COMMAND, "values"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "meshcni: --set cni.enabled=true: the seed page's shorthand for components.cni.enabled\n"
    assert yaml.safe_load(done.stdout.split("\n", 2)[2])["spec"]["components"]["cni"]["enabled"] is True
    off = meshcni("manifest", "generate", "--set", "cni.enabled=false")
    assert off.returncode == 0 and off.stdout.strip() == ""
    assert "components.cni.enabled is false: nothing to render" in off.stderr


def test_canonical_spellings_are_not_reported():
    done = meshcni(*meshcni_words(INSTALL_STEP, "values"))
    assert done.returncode == 0 and done.stderr == ""


def test_explain_takes_the_seed_spelling():
    done = meshcni("explain", "--pod", str(PODS / "50-istio-system.yaml"), "--set", "excludeNamespaces[0]=other")
    assert done.returncode == 0, done.stderr
    assert "the seed page's shorthand for values.cni.excludeNamespaces[0]" in done.stderr
    refused = meshcni("explain", "--pod", str(PODS / "50-istio-system.yaml"), "--set", "excludeNamespace[0]=x")
    assert refused.returncode == 2 and "did you mean 'excludeNamespaces'?" in refused.stderr


def test_the_table_cells_lost_space_is_refused_with_the_spelling_meant():
    done = meshcni(*meshcni_words(GKE_CELL_AS_PRINTED, "generate"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("meshcni: unknown option '--setvalues.cni.cniBinDir=/home/kubernetes/bin': "
                           "did you mean '--set values.cni.cniBinDir=/home/kubernetes/bin'?\n")


# One --set per alias (its shorthand path, its value); a new alias needs a line here.
SAMPLES = {
    "cni.enabled": ("cni.enabled", "false"), "cniBinDir": ("cniBinDir", "/home/kubernetes/bin"),
    "cniConfDir": ("cniConfDir", "/etc/cni/multus/net.d"), "cniConfFileName": ("cniConfFileName", "istio-cni.conf"),
    "excludeNamespaces": ("excludeNamespaces[1]", "foo_ns"), "logLevel": ("logLevel", "info"),
    "pullPolicy": ("pullPolicy", "IfNotPresent"), "psp_cluster_role": ("psp_cluster_role", "privileged"),
    "podAnnotations": ("podAnnotations.example\\.com/a", "b"), "chained": ("chained", "false"),
    "repair": ("repair.deletePods", "false"),
}


def test_every_alias_lands_on_its_canonical_path():
    assert set(SAMPLES) == set(ALIASES)
    for short, (path, value) in SAMPLES.items():
        canonical_path = ALIASES[short] + path[len(short):]
        via_alias, via_path = resolve(sets=[f"{path}={value}"]), resolve(sets=[f"{canonical_path}={value}"])
        assert via_alias.as_operator_spec() == via_path.as_operator_spec() != resolve().as_operator_spec()
        assert via_alias.shorthands == (f"--set {path}={value}: the seed page's shorthand for {canonical_path}",)


def test_nothing_outside_the_table_is_guessed():
    with pytest.raises(SetFlagError, match="cni.cniBinDir is no shorthand meshcni knows"):
        resolve(sets=["cni.cniBinDir=/x"])
    with pytest.raises(ValuesError) as refused:
        resolve(sets=["cniBinDri=/x", "profile=default"])
    assert refused.value.problems == ("cniBinDri: unknown IstioOperator key (did you mean 'cniBinDir'?)",)


def test_apply_takes_the_gke_step_as_printed(control_plane):
    control_plane.ensure_namespace("istio-system")  # istioctl creates it before the CNI component
    done = meshcni(*meshcni_words(GKE_STEP), "--kubeconfig", str(control_plane.admin_kubeconfig), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert GKE_NOTE in done.stderr
    assert "DaemonSet/istio-cni-node -n istio-system" in done.stdout
