"""One boolean parser at every configuration edge: Go's strconv.ParseBool spellings, which Istio's
install-cni and istio-cni-repair read through viper, and nothing else (Istio turned any other text
silently into false; meshcni refuses it)."""

import os
import subprocess

import pytest

from meshcni_core.cli.repair import build_parser, settings
from meshcni_core.install.settings import SettingsError, from_env
from meshcni_core.manifest.values import ValuesError, resolve
from meshcni_testing.processes import MESHCNI

TRUE = ["1", "t", "T", "TRUE", "true", "True"]
FALSE = ["0", "f", "F", "FALSE", "false", "False"]
REFUSED = ["yes", "no", "on", "off", "y", "tRUE", " true", "true ", "2", "ture"]
READS = [(text, True) for text in TRUE] + [(text, False) for text in FALSE]


def repair_settings(*flags, **env):
    return settings(build_parser().parse_args(list(flags)), env)


@pytest.mark.parametrize(("text", "value"), READS)
def test_every_edge_reads_gos_spellings_alike(text, value):
    node = {"KUBERNETES_NODE_NAME": "node-a"}
    assert from_env({**node, "CHAINED_CNI_PLUGIN": text}).chained is value
    assert from_env({**node, "SKIP_TLS_VERIFY": text}).skip_tls_verify is value
    assert from_env({**node, "REPAIR_ENABLED": text}).repair_enabled is value
    assert repair_settings(**{"REPAIR_DELETE-PODS": text})["delete_pods"] is value
    assert repair_settings(f"--label-pods={text}")["label_pods"] is value
    assert resolve(sets=[f"values.cni.chained={text}"]).cni["chained"] is value
    assert resolve(sets=[f"components.cni.enabled={text}"]).enabled is value


@pytest.mark.parametrize("text", REFUSED)
def test_every_edge_refuses_anything_else_naming_where_it_came_from(text):
    wanted = f"expected true or false, got {text!r}"
    with pytest.raises(SettingsError) as caught:
        from_env({"KUBERNETES_NODE_NAME": "node-a", "CHAINED_CNI_PLUGIN": text, "REPAIR_ENABLED": text})
    assert caught.value.problems == (f"CHAINED_CNI_PLUGIN: {wanted}", f"REPAIR_ENABLED: {wanted}")
    with pytest.raises(Exception, match=f"  REPAIR_DELETE-PODS: {wanted}"):
        repair_settings(**{"REPAIR_DELETE-PODS": text})
    with pytest.raises(Exception, match=f"  --run-as-daemon: {wanted}"):
        repair_settings(f"--run-as-daemon={text}")
    with pytest.raises(ValuesError) as refused:
        resolve(sets=[f"values.cni.repair.labelPods={text}"])
    assert refused.value.problems == (f"values.cni.repair.labelPods: {wanted}",)


def test_the_repair_command_refuses_the_istio_chart_spelling_yes_with_exit_2():
    """Before: REPAIR_DELETE-PODS=yes was accepted while REPAIR_ENABLED=yes was refused."""
    done = subprocess.run([MESHCNI, "repair", "--label-pods=on"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "REPAIR_DELETE-PODS": "yes"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("meshcni repair: invalid settings:\n"
                           "  --label-pods: expected true or false, got 'on'\n"
                           "  REPAIR_DELETE-PODS: expected true or false, got 'yes'\n")


def test_install_cni_refuses_every_bad_variable_at_once(tmp_path):
    env = {"PATH": os.environ["PATH"], "KUBERNETES_NODE_NAME": "node-a", "REPAIR_ENABLED": "yes",
           "UPDATE_CNI_BINARIES": "no", "KUBECONFIG_MODE": "800", "MOUNTED_CNI_NET_DIR": str(tmp_path)}
    done = subprocess.run([MESHCNI, "install-cni", "--once"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr == ("meshcni: invalid settings:\n"
                           "  KUBECONFIG_MODE: '800' is not an octal file mode\n"
                           "  UPDATE_CNI_BINARIES: expected true or false, got 'no'\n"
                           "  REPAIR_ENABLED: expected true or false, got 'yes'\n")
    assert os.listdir(tmp_path) == []


def test_yaml_booleans_are_yamls_but_quoted_text_is_ours(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
                       "spec: {values: {cni: {chained: off, repair: {deletePods: 'False', labelPods: 'yes'}}}}\n")
    with pytest.raises(ValuesError) as refused:
        resolve([overlay])
    assert refused.value.problems == ("values.cni.repair.labelPods: expected true or false, got 'yes'",)
    overlay.write_text(overlay.read_text().replace("'yes'", "yes"))  # YAML 1.1's boolean, as Go's yaml.v2 reads it
    cni = resolve([overlay]).cni
    assert (cni["chained"], cni["repair"]["deletePods"], cni["repair"]["labelPods"]) == (False, False, True)
