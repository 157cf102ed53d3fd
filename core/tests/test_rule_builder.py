"""The rule builder against Istio 1.6's istio-iptables.sh, as the reference documents it."""

import ipaddress
from pathlib import Path

import pytest
from plan_text import full_text, save_text

from meshcni_core.builtin.annotations import redirect_spec_from_annotations
from meshcni_core.pipeline import Pipeline
from meshcni_core.rules.builder import build_plan
from meshcni_hooks.types import NetnsFacts
from meshcni_testing.harness import EVERY_CORE_REDIRECT_ANNOTATION, make_pod

# The golden example: every core annotation plus the first-party extensions' own.
EVERY_REDIRECT_ANNOTATION = {**EVERY_CORE_REDIRECT_ANNOTATION, "sidecar.istio.io/interceptionMode": "TPROXY",
                             "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}

IPV4_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.5",))
IPV6_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv6_addresses=("2001:db8::5",))
GOLDEN = Path(__file__).parent / "golden"

# istio-cni-behavior.md §4.12, "Default pod (3.2 default vector), IPv4 pod, nat table", verbatim.
ISTIO_DEFAULT_NAT = """\
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"""

# §4.12 "TPROXY, -b *, defaults: mangle table", verbatim.
ISTIO_TPROXY_MANGLE = """\
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"""

ISTIO_IPV6_LOCKDOWN = """\
-A INPUT -m state --state ESTABLISHED -j ACCEPT
-A INPUT -d ::1/128 -i lo -j ACCEPT
-A INPUT -j REJECT --reject-with icmp6-port-unreachable"""


def plan_for(annotations, modes, facts=IPV4_POD, kubevirt=False):
    """The plan of a pod with these annotations, the installed extensions enabled by name."""
    pipeline = Pipeline.from_netconf(
        {"cniVersion": "1.0.0", "name": "net", "extensions": ["tproxy", "kubevirt"] if kubevirt else ["tproxy"]}, {}
    )
    pod = make_pod(annotations=annotations)
    spec = pipeline.with_extension_params(pod, redirect_spec_from_annotations(pod.annotations), [])
    return pipeline.plan(pod, spec, facts)


def test_default_pod_matches_istio_nat_dump(modes):
    plan = plan_for({}, modes)
    assert save_text(plan, 4, "nat") == ISTIO_DEFAULT_NAT
    assert save_text(plan, 6, "filter") == ISTIO_IPV6_LOCKDOWN
    assert plan.families() == (4, 6)
    assert not plan.routes


# The one deliberate difference from that dump (docs/rules.md, "Deliberate differences from Istio
# 1.6"): inbound lands on the inbound capture port, as today's istio-iptables sends it
# (tools/istio-iptables/pkg/capture/testdata/tproxy.golden: `--on-port 15006`).
ISTIO_16_TPROXY_TARGET = "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15001 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"
MESHCNI_TPROXY_TARGET = "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"


def test_tproxy_default_matches_istio_mangle_dump_but_lands_on_the_inbound_port(modes):
    plan = plan_for({"sidecar.istio.io/interceptionMode": "TPROXY"}, modes)
    ours, istio_16 = save_text(plan, 4, "mangle").splitlines(), ISTIO_TPROXY_MANGLE.splitlines()
    assert [(a, b) for a, b in zip(ours, istio_16, strict=True) if a != b] == [
        (MESHCNI_TPROXY_TARGET, ISTIO_16_TPROXY_TARGET)
    ]
    nat = save_text(plan, 4, "nat")
    # nat keeps both REDIRECT chains and the same ISTIO_OUTPUT, but PREROUTING has no jump.
    assert "-A PREROUTING" not in nat
    assert nat == "\n".join(line for line in ISTIO_DEFAULT_NAT.splitlines() if "ISTIO_INBOUND" not in line)
    assert [s.args for s in plan.routes] == [
        ("-f", "inet", "rule", "add", "fwmark", "1337", "lookup", "133"),
        ("-f", "inet", "route", "replace", "local", "default", "dev", "lo", "table", "133"),
    ]


def test_specific_lists_as_in_the_reference(modes):
    # §4.12: -b 8080,9090 -i 10.0.0.0/8 -x 10.96.0.1/32 -o 5432 (REDIRECT)
    plan = plan_for(
        {
            "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        },
        modes,
    )
    inbound = [r.text for r in plan.chain_rules(4, "nat", "ISTIO_INBOUND")]
    assert inbound == ["-p tcp -m tcp --dport 8080 -j ISTIO_IN_REDIRECT", "-p tcp -m tcp --dport 9090 -j ISTIO_IN_REDIRECT"]
    output = [r.text for r in plan.chain_rules(4, "nat", "ISTIO_OUTPUT")]
    assert output[0] == "-p tcp -m tcp --dport 5432 -j RETURN"
    tail = output[output.index("-d 127.0.0.1/32 -j RETURN") + 1 :]
    assert tail == ["-d 10.96.0.1/32 -j RETURN", "-d 10.0.0.0/8 -j ISTIO_REDIRECT", "-j RETURN"]


def test_kubevirt_wildcard_order_matches_the_reference(modes):
    plan = plan_for({"traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2"}, modes, kubevirt=True)
    assert [r.text for r in plan.chain_rules(4, "nat", "PREROUTING")] == [
        "-i net2 -j ISTIO_REDIRECT",
        "-i net1 -j ISTIO_REDIRECT",
        "-i net2 -j RETURN",
        "-i net1 -j RETURN",
        "-p tcp -j ISTIO_INBOUND",
    ]


def test_empty_include_lists_disable_capture(modes):
    plan = plan_for(
        {"traffic.sidecar.istio.io/includeInboundPorts": "", "traffic.sidecar.istio.io/includeOutboundIPRanges": ""},
        modes,
    )
    nat = save_text(plan, 4, "nat")
    assert "ISTIO_INBOUND" not in nat
    assert not any("ISTIO_REDIRECT" in r.text for r in plan.chain_rules(4, "nat", "ISTIO_OUTPUT"))
    assert plan.chain_rules(4, "nat", "ISTIO_OUTPUT")[-1].text == "-d 127.0.0.1/32 -j RETURN"


def test_ipv6_only_include_list_gives_no_ipv4_capture(modes):
    plan = plan_for({"traffic.sidecar.istio.io/includeOutboundIPRanges": "2001:db8::/32"}, modes)
    assert plan.chain_rules(4, "nat", "ISTIO_OUTPUT")[-1].text == "-d 127.0.0.1/32 -j RETURN"


def test_ipv6_pod_gets_the_mirrored_nat_rules_and_the_self_address(modes):
    plan = plan_for({}, modes, facts=IPV6_POD)
    v6 = save_text(plan, 6, "nat")
    assert v6 == (
        ISTIO_DEFAULT_NAT.replace("127.0.0.6/32", "::6/128").replace("127.0.0.1/32", "::1/128")
    )
    assert save_text(plan, 6, "filter") == ""  # no lock-down when IPv6 is redirected
    assert plan.routes[0].args == ("-6", "addr", "replace", "::6/128", "dev", "lo")


def test_ipv6_ignores_tproxy_and_uses_nat_redirect(modes):
    plan = plan_for({"sidecar.istio.io/interceptionMode": "TPROXY"}, modes, facts=IPV6_POD)
    assert save_text(plan, 6, "mangle") == ""
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in save_text(plan, 6, "nat")


def test_ipv6_kubevirt_wildcard_redirects_like_ipv4(modes):
    """Documented deviation: Istio's script RETURNed here, so VM IPv6 traffic bypassed the proxy."""
    plan = plan_for({"traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}, modes, facts=IPV6_POD, kubevirt=True)
    for family in (4, 6):
        assert [r.text for r in plan.chain_rules(family, "nat", "PREROUTING")][:2] == [
            "-i net1 -j ISTIO_REDIRECT",
            "-i net1 -j RETURN",
        ]


def test_kubevirt_with_include_list_inserts_per_range_and_interface(modes):
    plan = plan_for(
        {
            "traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2",
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8,2001:db8::/32,172.16.0.0/12",
        },
        modes,
        facts=IPV6_POD,
        kubevirt=True,
    )
    assert [r.text for r in plan.chain_rules(4, "nat", "PREROUTING")] == [
        "-d 172.16.0.0/12 -i net2 -j ISTIO_REDIRECT",
        "-d 172.16.0.0/12 -i net1 -j ISTIO_REDIRECT",
        "-d 10.0.0.0/8 -i net2 -j ISTIO_REDIRECT",
        "-d 10.0.0.0/8 -i net1 -j ISTIO_REDIRECT",
        "-i net2 -j RETURN",
        "-i net1 -j RETURN",
        "-p tcp -j ISTIO_INBOUND",
    ]
    # IPv6 with a list: Istio adds no RETURN rules, only the per-range redirects.
    assert [r.text for r in plan.chain_rules(6, "nat", "PREROUTING")] == [
        "-d 2001:db8::/32 -i net2 -j ISTIO_REDIRECT",
        "-d 2001:db8::/32 -i net1 -j ISTIO_REDIRECT",
        "-p tcp -j ISTIO_INBOUND",
    ]


GOLDEN_CASES = {
    "default": ({}, IPV4_POD),
    "tproxy-ports": (
        {"sidecar.istio.io/interceptionMode": "TPROXY", "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090"},
        IPV4_POD,
    ),
    "annotated-example": (EVERY_REDIRECT_ANNOTATION, IPV4_POD),
    "dual-stack": (
        {"traffic.sidecar.istio.io/excludeOutboundIPRanges": "192.0.2.0/24,2001:db8:1::/48"},
        NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.5",), ipv6_addresses=("2001:db8::5",)),
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_plans(case, modes, request):
    annotations, facts = GOLDEN_CASES[case]
    text = full_text(plan_for(annotations, modes, facts=facts, kubevirt=True))
    path = GOLDEN / f"{case}.rules"
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert text == path.read_text(), f"plan for {case} changed; review and rerun with --update-golden"


def test_cidrs_are_normalised_like_iptables_save(modes):
    plan = plan_for({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.1.2.3/8"}, modes)
    assert "-d 10.0.0.0/8 -j RETURN" in [r.text for r in plan.chain_rules(4, "nat", "ISTIO_OUTPUT")]
    assert ipaddress.ip_network("10.1.2.3/8", strict=False) == ipaddress.ip_network("10.0.0.0/8")


def test_kernel_without_ipv6_gets_no_ipv6_rules_at_all(modes):
    """Istio ignored its lock-down's failures there; we do not try (ip6tables would fail every ADD)."""
    facts = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.5",), ipv6_stack=False)
    plan = plan_for({}, modes, facts=facts)
    assert plan.families() == (4,)
    assert save_text(plan, 4, "nat") == ISTIO_DEFAULT_NAT


def test_addresses_are_spelt_as_iptables_save_spells_them(modes):
    """From the network's integer (inet_ntop's spelling), and no '-d' for a /0, which iptables-save
    leaves out: otherwise CHECK reports such a pod's rules as missing."""
    plan = plan_for({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "::ffff:192.0.2.1/120,0.0.0.0/0,::/0"},
                    modes, facts=NetnsFacts(ipv4_addresses=("192.0.2.5",), ipv6_addresses=("2001:db8::5",)))
    v4 = [r.text for r in plan.chain_rules(4, "nat", "ISTIO_OUTPUT")]
    v6 = [r.text for r in plan.chain_rules(6, "nat", "ISTIO_OUTPUT")]
    assert v4[-2:] == ["-j RETURN", "-j ISTIO_REDIRECT"]
    assert v6[-3:] == ["-d ::ffff:192.0.2.0/120 -j RETURN", "-j RETURN", "-j ISTIO_REDIRECT"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("proxy_port", "15001 -j ACCEPT"),
        ("proxy_port", True),
        ("proxy_uids", ("1337\n",)),
        ("proxy_uids", ("\u0661\u0663\u0663\u0667",)),
        ("exclude_outbound_ports", (80, "81")),
        ("exclude_outbound", "ZONED"),
        ("extension_params", ({"not": "ExtensionParams"},)),
    ],
)
def test_a_spec_from_any_provider_is_checked_before_a_rule_is_built(modes, field, value):
    import dataclasses

    from meshcni_hooks.errors import RuleBuildError
    from meshcni_hooks.types import CidrList, RedirectSpec

    if value == "ZONED":
        value = CidrList(networks=(ipaddress.ip_network("fd00::%1 -j ACCEPT/64"),))
    spec = dataclasses.replace(RedirectSpec(), **{field: value})
    with pytest.raises(RuleBuildError) as info:
        build_plan(spec, IPV4_POD, modes)
    assert field in info.value.msg
