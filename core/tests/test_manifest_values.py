"""``meshcni manifest values``: Istio's CNI values resolved istioctl's way, and refused when wrong."""

import json
import subprocess

import pytest
from seed_examples import GKE, OPENSHIFT, SEED_OVERLAY, sets_of

from meshcni_core.logs import LEVEL_NAMES
from meshcni_core.manifest.schema import SEED_LOG_LEVELS
from meshcni_core.manifest.setpath import SetFlagError, parse_set
from meshcni_core.manifest.values import ValuesError, resolve
from meshcni_testing.processes import MESHCNI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCNI, "manifest", "values", *args],
                          capture_output=True, text=True, timeout=60)


def test_defaults_are_the_seed_tables():
    cni = resolve().cni
    assert (cni["pullPolicy"], cni["logLevel"], cni["excludeNamespaces"]) == ("Always", "warn", ["istio-system"])
    assert (cni["cniBinDir"], cni["cniConfDir"], cni["cniConfFileName"], cni["chained"]) == \
        ("/opt/cni/bin", "/etc/cni/net.d", "", True)
    assert cni["repair"]["initContainerName"] == "istio-validation"
    assert (cni["repair"]["brokenPodLabelKey"], cni["repair"]["brokenPodLabelValue"]) == \
        ("cni.istio.io/uninitialized", "true")


def test_seed_overlay_file():
    resolved = resolve([SEED_OVERLAY])
    assert resolved.enabled
    assert resolved.cni["excludeNamespaces"] == ["istio-system", "kube-system", "foo_ns", "bar_ns"]
    assert resolved.cni["logLevel"] == "info"


def test_seed_gke_line():
    resolved = resolve(sets=sets_of(GKE))
    assert (resolved.namespace, resolved.cni["cniBinDir"]) == ("kube-system", "/home/kubernetes/bin")


def test_seed_openshift_line_and_the_injector_value_is_reported_not_dropped():
    resolved = resolve(sets=sets_of(OPENSHIFT))
    cni = resolved.cni
    assert (resolved.namespace, cni["cniBinDir"], cni["cniConfDir"], cni["chained"], cni["cniConfFileName"]) == \
        ("kube-system", "/var/lib/cni/bin", "/etc/cni/multus/net.d", False, "istio-cni.conf")
    assert resolved.elsewhere == (
        "values.sidecarInjectorWebhook.injectedAnnotations.k8s\\.v1\\.cni\\.cncf\\.io/networks: 'istio-cni' "
        "(meant for Istio's sidecarInjectorWebhook, not the CNI)",)


def test_set_paths_escapes_quotes_and_indexes():
    assert parse_set('a.b\\.c."d.e"=1').path == ("a", "b.c", "d.e")
    assert parse_set("values.cni.excludeNamespaces[1]='x=y'").path == ("values", "cni", "excludeNamespaces", 1)
    assert parse_set("values.cni.excludeNamespaces[1]='x=y'").value == "x=y"
    cni = resolve(sets=["values.cni.excludeNamespaces[0]=kube-system", "values.cni.excludeNamespaces[1]=foo"]).cni
    assert cni["excludeNamespaces"] == ["kube-system", "foo"]
    with pytest.raises(SetFlagError, match="index 3 is past the end of values.cni.excludeNamespaces"):
        resolve(sets=["values.cni.excludeNamespaces[3]=x"])
    with pytest.raises(SetFlagError, match="expected PATH=VALUE"):
        parse_set("values.cni.chained")
    with pytest.raises(SetFlagError, match="expected PATH=VALUE"):
        parse_set('values."cni.chained=1')  # the quote is never closed, so = is part of the key
    with pytest.raises(SetFlagError, match="malformed path"):
        parse_set("values..cni=1")


def test_later_layers_win(tmp_path):
    later = tmp_path / "later.yaml"
    later.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
                     "spec: {values: {cni: {logLevel: debug, cniBinDir: /x}}}\n")
    cni = resolve([SEED_OVERLAY, later], sets=["values.cni.logLevel=error"]).cni
    assert (cni["logLevel"], cni["cniBinDir"], cni["excludeNamespaces"][-1]) == ("error", "/x", "bar_ns")


def test_every_problem_is_reported_with_its_path_and_a_suggestion(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
                       "spec: {values: {cni: {tag: 1.10, excludeNamespaces: foo}}}\n")
    with pytest.raises(ValuesError) as caught:
        resolve([overlay], sets=["values.cni.cniBinDri=/x", "values.cni.logLevel=verbose", "values.cni.chained=ture",
                                 "values.cni.repair.labelpods=true", "values.cni.cniConfFileName=a/b.conf"])
    assert caught.value.problems == (
        "values.cni.cniBinDri: unknown option (did you mean 'cniBinDir'?)",
        "values.cni.tag: expected a string, got 1.1; quote it so YAML keeps it as text",
        "values.cni.logLevel: 'verbose' is not one of panic, fatal, error, warn, info, debug",
        "values.cni.excludeNamespaces: expected a list of strings, got 'foo'",
        "values.cni.cniConfFileName: 'a/b.conf' is refused: it is not a plain file name (holds '/' or '..')",
        "values.cni.chained: expected true or false, got 'ture'",
        "values.cni.repair.labelpods: unknown option (did you mean 'labelPods'?)",
    )


def test_not_an_istio_operator_file(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nspec: {}\n")
    with pytest.raises(Exception, match="apiVersion 'v1' is not one of install.istio.io/v1alpha1; "
                                        "kind 'ConfigMap' is not IstioOperator"):
        resolve([other])


def test_extension_settings_need_the_extension_enabled():
    with pytest.raises(ValuesError, match="extensionSettings.tproxy: extension 'tproxy' is not in"):
        resolve(sets=["values.cni.extensionSettings.tproxy.mark=1"])
    cni = resolve(sets=["values.cni.extensions[0]=tproxy", "values.cni.extensionSettings.tproxy.mark=1"]).cni
    assert cni["extensionSettings"] == {"tproxy": {"mark": "1"}}


def test_image_follows_istioctl_rules():
    assert resolve(sets=["hub=registry.example/istio", "tag=1.6.0"]).image == "registry.example/istio/install-cni:1.6.0"
    from_globals = resolve(sets=["values.global.hub=g.example", "values.global.tag=2", "values.global.proxy.x=1"])
    assert from_globals.image == "g.example/install-cni:2"
    assert from_globals.elsewhere == ("values.global.proxy.x: '1' (meant for Istio's global, not the CNI)",)
    both = resolve(sets=["values.cni.hub=a.example", "values.cni.tag=t", "values.cni.repair.tag=r"])
    assert (both.image, both.repair_image) == ("a.example/install-cni:t", "a.example/install-cni:r")
    assert resolve(sets=["values.cni.image=b.example/cni:x"]).image == "b.example/cni:x"


def test_every_seed_log_level_is_one_the_plugin_accepts():
    assert set(SEED_LOG_LEVELS) <= set(LEVEL_NAMES)


def test_cli_prints_a_document_that_resolves_to_itself(tmp_path):
    first = run_cli("-f", str(SEED_OVERLAY), *[w for s in sets_of(OPENSHIFT) for w in ("--set", s)])
    assert first.returncode == 0, first.stderr
    assert "injectedAnnotations" in first.stderr
    printed = tmp_path / "resolved.yaml"
    printed.write_text(first.stdout)
    again = run_cli("-f", str(printed), "--output", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["spec"]["values"]["cni"]["cniConfDir"] == "/etc/cni/multus/net.d"
    assert run_cli("-f", str(printed)).stdout == first.stdout


def test_cli_refuses_bad_values_and_prints_nothing():
    done = run_cli("--set", "values.cni.logLevl=info", "--set", "components.cni.namespce=x")
    assert done.returncode == 2 and done.stdout == ""
    assert "values.cni.logLevl: unknown option (did you mean 'logLevel'?)" in done.stderr
    assert "components.cni.namespce: not supported by meshcni (did you mean 'namespace'?)" in done.stderr


def test_problems_inside_lists_and_nested_maps_are_named_by_their_path(tmp_path):
    overlay = tmp_path / "nested.yaml"
    overlay.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
                       "spec: {values: {cni: {excludeNamespaces: [istio-system, 3], cniConfFileName: ..hidden.conf}}}\n")
    with pytest.raises(ValuesError) as caught:
        resolve([overlay], sets=["values.cni.repair=off", "values.cni.extensions[0]=-x"])
    assert caught.value.problems == (
        "values.cni.excludeNamespaces[1]: expected a string, got 3; quote it so YAML keeps it as text",
        "values.cni.cniConfFileName: '..hidden.conf' is refused: it is not a plain file name (holds '/' or '..')",
        "values.cni.repair: expected a map",
        "values.cni.extensions[0]: '-x' is not an extension name",
    )
