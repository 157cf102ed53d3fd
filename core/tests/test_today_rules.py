"""Rules for what today's Istio added (DNS capture, excluded interfaces), against our own expected
files written from the facts of today's Istio's golden files (istio/istio):

* ``dns-capture.rules``: ``cni/pkg/plugin/testdata/dns.txt.golden`` (the plugin with
  ``ISTIO_META_DNS_CAPTURE=true`` on istio-proxy: all port-53 traffic);
* ``dns-servers-uid-gid.rules``: ``tools/istio-iptables/pkg/capture/testdata/dns-uid-gid.golden``
  (istio-iptables, DNS servers 127.0.0.53 and ::127.0.0.53, uids 3,4, gids 1,2, no other capture);
* ``exclude-interfaces.rules``: ``.../capture/testdata/basic-exclude-nic.golden``;
* ``exclude-interfaces-tproxy.rules``: the excluded-interface rules of ``.../capture/testdata/tproxy.golden``;
* ``outbound-ports-include.rules``: ``.../capture/testdata/outbound-ports-include.golden`` (ports
  32000,31000 always to the proxy, no address ranges).

Where the base rules differ (Istio 1.6's port-22 inbound RETURN; today's inbound tunnel port 15008
and its exclusions, which Istio 1.6 never had), the expected files keep Istio 1.6's base: see
docs/rules.md. The DNS and interface rules themselves are today's, in ``iptables-save`` form.
"""

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from plan_text import full_text, save_text

from meshcni_core.builtin.annotations import redirect_spec_from_annotations
from meshcni_core.builtin.dns_capture import dns_capture_of, proxy_metadata
from meshcni_core.rules.builder import build_plan
from meshcni_hooks.errors import AnnotationError, MeshcniError, RuleBuildError
from meshcni_hooks.types import CidrList, ContainerInfo, NetnsFacts, PluginConfig, PodInfo, PortList, RedirectSpec

GOLDEN = Path(__file__).parent / "golden"
IPV4_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.5",))
DUAL_STACK_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.5",), ipv6_addresses=("2001:db8::5",))
CONFIG = PluginConfig(cni_version="1.0.0", network_name="k8s-pod-network")

CASES = {
    "dns-capture": (RedirectSpec(dns_capture=True), IPV4_POD),
    "dns-servers-uid-gid": (
        RedirectSpec(
            proxy_uids=("3", "4"), proxy_gids=("1", "2"), include_outbound=CidrList(), exclude_outbound_ports=(),
            include_inbound_ports=PortList(), dns_capture=True,
            dns_servers=(ipaddress.ip_network("127.0.0.53/32"), ipaddress.ip_network("::127.0.0.53/128")),
        ),
        DUAL_STACK_POD,
    ),
    "exclude-interfaces": (redirect_spec_from_annotations(
        {"traffic.sidecar.istio.io/excludeInterfaces": "not-istio-nic"}), IPV4_POD),
    "outbound-ports-include": (redirect_spec_from_annotations(
        {"traffic.sidecar.istio.io/includeOutboundIPRanges": "",
         "traffic.sidecar.istio.io/includeOutboundPorts": "32000,31000"}), IPV4_POD),
    "exclude-interfaces-tproxy": (redirect_spec_from_annotations(
        {"traffic.sidecar.istio.io/excludeInterfaces": "not-istio-nic",
         "sidecar.istio.io/interceptionMode": "TPROXY"}), IPV4_POD),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_match_our_expected_files(case, modes, request):
    spec, facts = CASES[case]
    text = full_text(build_plan(spec, facts, modes))
    path = GOLDEN / f"{case}.rules"
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert text == path.read_text(), f"plan for {case} changed; review and rerun with --update-golden"


def test_dns_capture_facts_of_todays_plugin(modes):
    """The facts of dns.txt.golden, rule by rule where they matter."""
    plan = build_plan(RedirectSpec(dns_capture=True), IPV4_POD, modes)
    nat, raw = save_text(plan, 4, "nat"), save_text(plan, 4, "raw")
    assert "-A OUTPUT -j ISTIO_OUTPUT" in nat.splitlines()  # every protocol enters ISTIO_OUTPUT
    output = [line for line in nat.splitlines() if line.startswith("-A ISTIO_OUTPUT ")]
    assert output.index("-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS") == output.index(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN") - 1  # right after the proxy's owner rules
    assert [line for line in nat.splitlines() if line.startswith("-A ISTIO_OUTPUT_DNS")] == [
        "-A ISTIO_OUTPUT_DNS -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
    ]
    assert raw.splitlines() == [
        "-A PREROUTING -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT_DNS",
        "-A ISTIO_INBOUND -p udp -m udp --sport 53 -j CT --zone 1",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
        "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j CT --zone 2",
    ]


def test_without_dns_capture_nothing_changes(modes):
    plan = build_plan(RedirectSpec(), IPV4_POD, modes)
    assert save_text(plan, 4, "raw") == "" and "udp" not in save_text(plan, 4, "nat")


def pod(annotations=None, env=None, known_spec=True) -> PodInfo:
    specs = (ContainerInfo("app"), ContainerInfo("istio-proxy", env_dns_capture=env)) if known_spec else ()
    return PodInfo("default", "app-1", annotations=annotations or {}, container_specs=specs)


@pytest.mark.parametrize(("annotations", "env", "default", "expected"), [
    ({}, None, False, (False, "default")),
    ({}, None, True, (True, "netconf dns_capture (the mesh-wide default)")),
    ({}, "true", False, (True, "container istio-proxy's env ISTIO_META_DNS_CAPTURE")),
    ({}, "False", True, (False, "container istio-proxy's env ISTIO_META_DNS_CAPTURE")),
    ({"proxy.istio.io/config": 'proxyMetadata: {ISTIO_META_DNS_CAPTURE: "1"}'}, "false", False,
     (True, "annotation proxy.istio.io/config (proxyMetadata.ISTIO_META_DNS_CAPTURE)")),
    ({"proxy.istio.io/config": "concurrency: 2"}, "true", False, (True, "container istio-proxy's env ISTIO_META_DNS_CAPTURE")),
    ({"proxy.istio.io/config": ""}, None, True, (True, "netconf dns_capture (the mesh-wide default)")),
])
def test_where_dns_capture_comes_from(annotations, env, default, expected):
    config = PluginConfig(cni_version="1.0.0", network_name="n", dns_capture=default)
    assert dns_capture_of(pod(annotations, env), config) == expected


def test_a_bad_env_value_fails_naming_the_container_and_variable():
    with pytest.raises(MeshcniError, match="container istio-proxy's env ISTIO_META_DNS_CAPTURE: .*'yes' is not true or false"):
        dns_capture_of(pod(env="yes"), CONFIG)


@pytest.mark.parametrize("value", [
    "{", "proxyMetadata: [", "[1, 2]", "just text", "proxyMetadata: {A: 1}", "proxyMetadata: {A: [x]}",
    "proxyMetadata: text", "proxyMetadata: {ISTIO_META_DNS_CAPTURE: yes}", "&a [*a]", "[" * 5000,
])
def test_malformed_proxy_config_is_an_annotation_error(value):
    with pytest.raises(AnnotationError) as caught:
        proxy_metadata(value)
    assert caught.value.annotation == "proxy.istio.io/config" and caught.value.code == 103


def test_proxy_config_as_json_and_yaml():
    assert proxy_metadata('{"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}, "holdApplicationUntilProxyStarts": true}') == {
        "ISTIO_META_DNS_CAPTURE": "true"}
    assert proxy_metadata("proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: 'true'\n  OTHER: x\n")["ISTIO_META_DNS_CAPTURE"] == "true"
    assert proxy_metadata("# nothing\n") == {}


@pytest.mark.parametrize(("field", "value"), [
    ("dns_capture", "true"), ("dns_port", 0), ("dns_servers", (ipaddress.ip_network("10.0.0.0/8"),)),
    ("dns_servers", ("10.0.0.1",)), ("exclude_interfaces", ("eth0 ",)), ("exclude_interfaces", "eth0"),
])
def test_spec_values_no_rule_may_carry_are_refused(modes, field, value):
    with pytest.raises(RuleBuildError, match=field):
        build_plan(RedirectSpec(**{field: value}), IPV4_POD, modes)


EXPLAINED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: app-1
  namespace: default
  annotations:
    sidecar.istio.io/status: '{"containers":["istio-proxy"]}'
    traffic.sidecar.istio.io/excludeInterfaces: net1,net2
spec:
  initContainers: [{name: migrate, image: m}]
  containers:
  - {name: app, image: a}
  - name: istio-proxy
    image: p
    env: [{name: ISTIO_META_DNS_CAPTURE, value: "true"}]
"""


def _explain(tmp_path, pod_text: str, *args: str) -> dict:
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(pod_text)
    proc = subprocess.run([str(Path(sys.executable).with_name("meshcni")), "explain", "--pod", str(pod_file),
                           "--output", "json", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_explain_shows_dns_capture_and_excluded_interfaces_with_their_origins(tmp_path):
    report = _explain(tmp_path, EXPLAINED_POD)
    params = report["parameters"]
    assert params["dns_capture"] == {"value": True, "from": "container istio-proxy's env ISTIO_META_DNS_CAPTURE"}
    assert params["exclude_interfaces"] == {"value": ["net1", "net2"],
                                            "from": "annotation traffic.sidecar.istio.io/excludeInterfaces"}
    assert "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053" in report["plan"]["transaction"]
    assert "-A OUTPUT -o net2 -j RETURN" in report["plan"]["transaction"]
    assert "their DNS queries go to port 15053" in report["warnings"][0]


def test_explain_names_the_mesh_wide_default_from_install_values(tmp_path):
    pod = EXPLAINED_POD.replace("    env: [{name: ISTIO_META_DNS_CAPTURE, value: \"true\"}]\n", "")
    assert _explain(tmp_path, pod)["parameters"]["dns_capture"]["value"] is False
    report = _explain(tmp_path, pod, "--set", "meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE=true")
    assert report["parameters"]["dns_capture"] == {"value": True, "from": "netconf dns_capture (the mesh-wide default)"}


def test_explain_reports_a_malformed_proxy_config_as_the_adds_error(tmp_path):
    pod = EXPLAINED_POD.replace("    traffic.sidecar", "    proxy.istio.io/config: 'proxyMetadata: ['\n    traffic.sidecar")
    report = _explain(tmp_path, pod)
    assert report["outcome"] == "error" and report["error"]["code"] == 103
    assert report["error"]["message"].startswith("invalid annotation proxy.istio.io/config='proxyMetadata: ['")
