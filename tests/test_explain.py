"""`meshcni explain` gives the plugin's verdict: compared with the real istio-cni on generated pods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshcni_core import explain
from meshcni_core.cli.main import default_explain_netconf
from meshcni_core.pipeline import Pipeline
from meshcni_hooks.types import ContainerInfo, PodInfo
from meshcni_testing.netlab import cni

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
PODS = Path(__file__).resolve().parents[1] / "examples" / "pods"


@st.composite
def pods(draw) -> PodInfo:
    injected = draw(st.booleans())
    apps = draw(st.lists(st.sampled_from(["app", "worker"]), min_size=1 if injected else 0, max_size=2, unique=True))
    has_proxy = injected and draw(st.booleans())
    native = has_proxy and draw(st.booleans())  # istio-proxy as an init container with restartPolicy: Always
    init = draw(st.sampled_from([(), ("istio-validation",), ("istio-init",)])) + (("istio-proxy",) if native else ())
    annotations: dict[str, str] = {}
    if injected:  # what the injector writes: the containers and init containers it added (null when none)
        annotations["sidecar.istio.io/status"] = json.dumps(
            {"containers": ["istio-proxy"] if has_proxy and not native else None, "initContainers": list(init)})
    regular = (*apps, *(["istio-proxy"] if has_proxy and not native else []))
    specs = (*(ContainerInfo(c, init=True, restart_policy="Always" if c == "istio-proxy" else "") for c in init),
             *(ContainerInfo(c) for c in regular))
    for key, values in (
        ("sidecar.istio.io/inject", ["true", "false", "yes", "No", "0", "maybe"]),
        ("sidecar.istio.io/interceptionMode", ["REDIRECT", "TPROXY", "NONE", "tproxy"]),
        ("traffic.sidecar.istio.io/includeInboundPorts", ["*", "", "8080", "80,http"]),
        ("traffic.sidecar.istio.io/excludeOutboundIPRanges", ["198.51.100.0/24", "10.0.0.0/8, 10.1.0.0/16"]),
    ):
        value = draw(st.none() | st.sampled_from(values))
        if value is not None:
            annotations[key] = value
    return PodInfo(
        namespace=draw(st.sampled_from(["default", "istio-system", "prod"])), name="app-1",
        annotations=annotations, containers=regular, init_containers=init, container_specs=specs,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pod=pods())
@pytest.mark.netns
def test_explain_agrees_with_the_plugin(netns_lab, pod):
    expected = explain.explain(pod, Pipeline.from_netconf(default_explain_netconf(), {}))["outcome"]
    ns = netns_lab.netns(f"x{len(netns_lab.namespaces)}")
    netconf = {**default_explain_netconf(), "agent_socket": "",
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations": dict(pod.annotations)},
               "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}}
    proc = cni("ADD", ns, netconf, namespace=pod.namespace)
    actual = "error" if proc.returncode else ("redirect" if netns_lab.save(ns) else "skip")
    netns_lab.close_one(ns)
    assert actual == expected, (pod, proc.stdout)


def test_cli_text_and_json():
    text = subprocess.run([MESHCNI, "explain", "--pod", str(PODS / "30-reviews-excluded-range.yaml")],
                          capture_output=True, text=True, check=True).stdout
    assert "REDIRECT" in text and "from annotation traffic.sidecar.istio.io/excludeOutboundIPRanges" in text
    assert "-A ISTIO_OUTPUT -d 198.51.100.0/24 -j RETURN" in text
    report = json.loads(subprocess.run([MESHCNI, "explain", "--pod", str(PODS / "60-bad-annotation.yaml"),
                                        "--output", "json"], capture_output=True, text=True, check=True).stdout)
    assert report["outcome"] == "error" and report["error"]["code"] == 103
    skipped = json.loads(subprocess.run([MESHCNI, "explain", "--pod", str(PODS / "50-istio-system.yaml"),
                                         "--output", "json"], capture_output=True, text=True, check=True).stdout)
    assert skipped["outcome"] == "skip" and skipped["rules"][0]["vote"] == "skip"


def test_cli_explains_with_install_values_as_they_would_be_rendered(tmp_path):
    manifest = (PODS / "50-istio-system.yaml").read_text().replace("namespace: istio-system", "namespace: kube-system")
    pod = tmp_path / "pod.yaml"
    pod.write_text(manifest)

    def outcome(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MESHCNI, "explain", "--pod", str(pod), "--output", "json", *extra],
                              capture_output=True, text=True)

    assert json.loads(outcome().stdout)["outcome"] == "redirect"  # only istio-system is excluded by default
    overlay = Path(__file__).resolve().parents[1] / "examples" / "operator" / "cni.yaml"  # the seed's overlay
    assert json.loads(outcome("-f", str(overlay)).stdout)["outcome"] == "skip"
    assert json.loads(outcome("--set", "values.cni.excludeNamespaces[0]=kube-system").stdout)["outcome"] == "skip"
    refused = outcome("--set", "values.cni.excludeNamespace[0]=kube-system")
    assert refused.returncode == 2 and refused.stdout == "" and "did you mean 'excludeNamespaces'" in refused.stderr
    both = outcome("--netconf", str(tmp_path / "x.json"), "--set", "values.cni.logLevel=info")
    assert both.returncode == 2 and "either --netconf or install values" in both.stderr


# -- today's Istio: native sidecars, the proxy's UID from the pod, init containers before the proxy --

def injected_pod(tmp_path, *, init_containers: list[dict], containers: list[dict], status: dict) -> str:
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "app-1", "namespace": "default",
                             "annotations": {"sidecar.istio.io/status": json.dumps(status)}},
                "spec": {"initContainers": init_containers, "containers": containers}}
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def explained(path: str, output: str = "json"):
    proc = subprocess.run([MESHCNI, "explain", "--pod", path, "--output", output], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if output == "json" else proc.stdout


NATIVE_PROXY = {"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always",
                "securityContext": {"runAsUser": 1000650000, "runAsGroup": 1000650000}}
MIGRATE = {"name": "migrate", "image": "app"}
NATIVE_STATUS = {"initContainers": ["istio-validation", "istio-proxy"], "containers": None}
CLASSIC_STATUS = {"initContainers": ["istio-validation"], "containers": ["istio-proxy"]}


def test_native_sidecar_pod_is_redirected_with_the_proxys_uid(tmp_path):
    text = explained(injected_pod(tmp_path, init_containers=[{"name": "istio-validation"}, NATIVE_PROXY, MIGRATE],
                                  containers=[{"name": "app"}], status=NATIVE_STATUS), output="text")
    assert text.startswith("pod default/app-1: REDIRECT")
    assert "istio-proxy with restartPolicy: Always (a native sidecar)" in text
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1000650000 -j RETURN" in text
    assert "WARNING" not in text  # migrate runs after the native sidecar has started


def test_plain_init_container_named_istio_proxy_is_skipped(tmp_path):
    report = explained(injected_pod(tmp_path, init_containers=[{"name": "istio-proxy"}],
                                    containers=[{"name": "app"}, {"name": "worker"}], status=NATIVE_STATUS))
    assert report["outcome"] == "skip"
    assert {"rule": "istio-proxy", "vote": "skip", "by": "builtin",
            "reason": "init container istio-proxy has no restartPolicy: Always, so it is not a sidecar"} in report["rules"]


def test_warns_about_init_containers_that_run_before_a_classic_sidecar(tmp_path):
    report = explained(injected_pod(
        tmp_path, status=CLASSIC_STATUS,
        init_containers=[{"name": "istio-validation"}, MIGRATE, {"name": "fetch", "image": "app"},
                         {"name": "as-proxy", "securityContext": {"runAsUser": 1337}}],
        containers=[{"name": "app"}, {"name": "istio-proxy"}]))
    assert report["outcome"] == "redirect"
    [warning] = report["warnings"]
    assert warning.startswith("init containers migrate, fetch: the redirect rules exist before any init container runs")
    assert "securityContext.runAsUser: 1337" in warning
    assert "traffic.sidecar.istio.io/excludeOutboundIPRanges or traffic.sidecar.istio.io/excludeOutboundPorts" in warning
    assert "sidecar.istio.io/nativeSidecar" in warning


def test_warns_about_init_containers_listed_before_a_native_sidecar(tmp_path):
    report = explained(injected_pod(tmp_path, init_containers=[MIGRATE, {"name": "istio-validation"}, NATIVE_PROXY],
                                    containers=[{"name": "app"}], status=NATIVE_STATUS))
    [warning] = report["warnings"]
    assert warning.startswith("init container migrate:") and "listed before the native sidecar istio-proxy" in warning
    assert "securityContext.runAsUser: 1000650000" in warning


# -- the backend's exact transaction ---------------------------------------------------------------

@pytest.mark.netns
def test_explain_prints_the_exact_transaction_the_backend_hands_the_kernel(netns_lab):
    """Fed by hand to iptables-restore in one netns, explain's transaction leaves exactly the rules
    the real istio-cni's ADD leaves in another."""
    report = json.loads(subprocess.run([MESHCNI, "explain", "--pod", str(PODS / "30-reviews-excluded-range.yaml"),
                                        "--output", "json"], capture_output=True, text=True, check=True).stdout)
    plan = report["plan"]
    assert (plan["backend"], plan["chosen_by"]) == ("iptables-restore", "the default")
    by_hand, by_plugin = netns_lab.netns("hand"), netns_lab.netns("plugin")
    family_inputs = plan["transaction"].split("# IPv6: ip6tables-restore --noflush\n")
    assert family_inputs[0].startswith("# IPv4: iptables-restore --noflush\n")
    for tool, text in zip(("iptables-nft-restore", "ip6tables-nft-restore"), family_inputs, strict=True):
        subprocess.run(["ip", "netns", "exec", netns_lab.name_of(by_hand), tool, "--noflush"], input=text,
                       text=True, check=True)
    manifest = yaml.safe_load((PODS / "30-reviews-excluded-range.yaml").read_text())
    netconf = {**default_explain_netconf(), "agent_socket": "",
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations": manifest["metadata"]["annotations"]},
               "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}}
    proc = cni("ADD", by_plugin, netconf, pod=manifest["metadata"]["name"], namespace=manifest["metadata"]["namespace"])
    assert proc.returncode == 0, proc.stdout
    for family in (4, 6):
        assert netns_lab.save(by_hand, family) == netns_lab.save(by_plugin, family) != ""


def test_explain_shows_the_selected_backend_s_own_transaction(tmp_path):
    netconf = tmp_path / "netconf.json"
    netconf.write_text(json.dumps({**default_explain_netconf(), "backend": "iptc",
                                   "extensions": [*default_explain_netconf()["extensions"], "iptc"]}))  # type: ignore[misc]
    text = subprocess.run([MESHCNI, "explain", "--pod", str(PODS / "30-reviews-excluded-range.yaml"),
                           "--netconf", str(netconf)], capture_output=True, text=True, check=True).stdout
    assert "rules: what backend iptc (netconf key backend='iptc') hands the kernel:" in text
    assert "# IPv4 nat: one libiptc commit" in text and "-A ISTIO_OUTPUT -d 198.51.100.0/24 -j RETURN" in text


@pytest.mark.netns
def test_explain_prints_the_exact_nftables_transaction(netns_lab):
    """With values.global.nativeNftables, explain's transaction loaded by hand (nft -j -f) leaves
    exactly the ruleset the real ADD leaves."""
    pod_file = PODS / "30-reviews-excluded-range.yaml"
    report = json.loads(subprocess.run([MESHCNI, "explain", "--pod", str(pod_file), "--output", "json", "--set",
                                        "values.global.nativeNftables=true"], capture_output=True, text=True,
                                       check=True).stdout)
    plan = report["plan"]
    assert (plan["backend"], plan["chosen_by"]) == ("nftables", "netconf key native_nftables=true")
    by_hand, by_plugin = netns_lab.netns("hand"), netns_lab.netns("plugin")
    subprocess.run(["ip", "netns", "exec", netns_lab.name_of(by_hand), "nft", "-j", "-f", "-"],
                   input=plan["transaction"], text=True, check=True)
    manifest = yaml.safe_load(pod_file.read_text())
    netconf = {**default_explain_netconf(), "agent_socket": "", "native_nftables": True,
               "extensions": [*default_explain_netconf()["extensions"], "nftables"],  # type: ignore[misc]
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations": manifest["metadata"]["annotations"]},
               "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}}
    proc = cni("ADD", by_plugin, netconf, pod=manifest["metadata"]["name"], namespace=manifest["metadata"]["namespace"])
    assert proc.returncode == 0, proc.stdout

    def ruleset(ns: str) -> str:
        return subprocess.run(["ip", "netns", "exec", netns_lab.name_of(ns), "nft", "list", "ruleset"],
                              capture_output=True, text=True, check=True).stdout

    assert ruleset(by_hand) == ruleset(by_plugin) and "table inet istio-proxy-nat" in ruleset(by_hand)
