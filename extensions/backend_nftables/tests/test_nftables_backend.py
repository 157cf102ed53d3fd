"""The nftables backend in real network namespaces, through the installed ``istio-cni``: Istio's
tables after ADD and nothing in iptables, nothing of ours after DEL, CHECK noticing damage,
all-or-nothing, refusal of a second flavour and of rules it cannot translate."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from meshcni_backend_nftables import backend_info
from meshcni_backend_nftables.backend import NftablesBackend
from meshcni_backend_nftables.layout import OUR_TABLES
from meshcni_hooks.errors import ApplyError, RuleBuildError
from meshcni_hooks.types import ChainDecl, RouteStep, Rule, RulePlan, Target
from meshcni_testing.netlab import cni, mesh_netconf

pytestmark = pytest.mark.netns

DUAL_STACK_IPS = [{"address": "192.0.2.2/24", "interface": 0}, {"address": "2001:db8:1::2/64", "interface": 0}]
PODS = {
    "default": ({}, False),
    "tproxy-kubevirt-excluded-dual-stack": (
        {"sidecar.istio.io/interceptionMode": "TPROXY", "istio.io/reroute-virtual-interfaces": "net1",
         "traffic.sidecar.istio.io/excludeInterfaces": "net2",
         "traffic.sidecar.istio.io/excludeOutboundIPRanges": "203.0.113.0/24,2001:db8:5::/48",
         "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
         "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"},
        True,
    ),
    "ranges-ports-uids-dual-stack": (
        {"traffic.sidecar.istio.io/includeOutboundIPRanges": "198.51.100.0/24,2001:db8:2::/48",
         "traffic.sidecar.istio.io/includeOutboundPorts": "443",
         "traffic.sidecar.istio.io/excludeInboundPorts": "9000,9001",
         "traffic.sidecar.istio.io/includeInboundPorts": "*"},
        True,
    ),
    "dns-capture-dual-stack": ({"proxy.istio.io/config": 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n'}, True),
}


def netconf(annotations: dict[str, str], dual_stack: bool = False, **extra) -> dict:
    conf = mesh_netconf(annotations, **extra)
    conf["extensions"] = [*conf["extensions"], "nftables"]
    conf["backend"] = "nftables"
    if dual_stack:
        conf["prevResult"]["ips"] = DUAL_STACK_IPS
    return conf


@pytest.fixture
def lab(netns_lab):
    return netns_lab


def pod_netns(lab, dual_stack: bool = False) -> str:
    pod, peer = lab.netns("pod"), lab.netns("peer")
    lab.link(pod, ["192.0.2.2/24"], peer, ["192.0.2.1/24"])
    if dual_stack:
        lab.ip(pod, "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
    return pod


def nft(lab, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", lab.name_of(ns), "nft", *args],
                          capture_output=True, text=True, check=check)


def our_tables(lab, ns: str) -> list[str]:
    listing = json.loads(nft(lab, ns, "-j", "list", "tables").stdout)["nftables"]
    return [t["table"]["name"] for t in listing if "table" in t and t["table"]["name"] in OUR_TABLES]


def iptables_dump(lab, ns: str) -> str:
    """Every iptables flavour and family's full save output (chains too; no timestamps, no counters)."""
    out = []
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        saved = subprocess.run(["ip", "netns", "exec", lab.name_of(ns), tool], capture_output=True, text=True,
                               check=True).stdout
        out += [re.sub(r" \[\d+:\d+\]$", "", line) for line in saved.splitlines() if not line.startswith("#")]
    return "\n".join(out)


def expect_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("annotations, dual_stack", PODS.values(), ids=PODS.keys())
def test_add_programs_istios_tables_only_and_del_removes_them(lab, annotations, dual_stack):
    ns = pod_netns(lab, dual_stack)
    conf = netconf(annotations, dual_stack)
    expect_ok(cni("ADD", ns, conf))
    tables = our_tables(lab, ns)
    assert "istio-proxy-nat" in tables
    if "TPROXY" in str(annotations):
        assert "istio-proxy-mangle" in tables
    if "DNS" in str(annotations):
        assert "istio-proxy-raw" in tables
    assert "ISTIO" not in iptables_dump(lab, ns)
    first = nft(lab, ns, "list", "ruleset").stdout
    expect_ok(cni("ADD", ns, conf))  # a repeated ADD leaves the same tables
    assert nft(lab, ns, "list", "ruleset").stdout == first
    expect_ok(cni("CHECK", ns, conf))
    proc = cni("DEL", ns, conf)
    assert proc.returncode == 0 and proc.stdout == ""
    assert our_tables(lab, ns) == [] and "ISTIO" not in iptables_dump(lab, ns)
    expect_ok(cni("DEL", ns, conf))


def test_del_leaves_tables_that_are_not_ours(lab):
    ns = pod_netns(lab)
    nft(lab, ns, "add", "table", "inet", "someone-else")
    expect_ok(cni("ADD", ns, netconf({})))
    expect_ok(cni("DEL", ns, netconf({})))
    assert "table inet someone-else" in nft(lab, ns, "list", "tables").stdout
    assert our_tables(lab, ns) == []


def test_check_notices_a_deleted_rule_and_a_deleted_chain(lab):
    ns = pod_netns(lab)
    conf = netconf({})
    expect_ok(cni("ADD", ns, conf))
    listing = json.loads(nft(lab, ns, "-j", "-a", "list", "chain", "inet", "istio-proxy-nat", "istio-output").stdout)
    handle = next(o["rule"]["handle"] for o in listing["nftables"] if "rule" in o)
    nft(lab, ns, "delete", "rule", "inet", "istio-proxy-nat", "istio-output", "handle", str(handle))
    error = json.loads(cni("CHECK", ns, conf).stdout)
    assert error["code"] == 106 and "istio-proxy-nat istio-output" in error["details"]

    expect_ok(cni("ADD", ns, conf))  # ADD repairs it
    expect_ok(cni("CHECK", ns, conf))
    nft(lab, ns, "flush", "chain", "inet", "istio-proxy-nat", "istio-output")
    nft(lab, ns, "delete", "chain", "inet", "istio-proxy-nat", "istio-redirect")
    error = json.loads(cni("CHECK", ns, conf).stdout)
    assert error["code"] == 106 and "chain istio-proxy-nat istio-redirect is missing" in error["details"]


@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_a_netns_holding_iptables_rules_is_refused(lab, flavour):
    """Never both flavours in one pod: iptables rules of ours (or Istio's init container's) stay
    alone, and the ADD says why."""
    ns = pod_netns(lab)
    expect_ok(cni("ADD", ns, mesh_netconf({}, iptables_flavour=flavour)))  # the iptables-restore backend
    before = iptables_dump(lab, ns)
    proc = cni("ADD", ns, netconf({}))
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert "already holds iptables redirect rules" in error["msg"]
    assert f"iptables-{flavour}" in error["details"] and "ISTIO_OUTPUT" in error["details"]
    assert our_tables(lab, ns) == [] and iptables_dump(lab, ns) == before


def test_a_rule_it_cannot_translate_is_refused_and_nothing_is_applied(lab):
    ns = pod_netns(lab)
    plan = RulePlan(
        chains=(ChainDecl(4, "nat", "ISTIO_OUTPUT"),),
        rules=(Rule(4, "nat", "OUTPUT", ("-p", "tcp", "-j", "ISTIO_OUTPUT")),
               Rule(4, "nat", "ISTIO_OUTPUT", ("-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "RETURN"))),
    )
    with pytest.raises(RuleBuildError, match="cannot translate '-m multiport'"):
        NftablesBackend().apply(plan, Target(ns))
    with pytest.raises(RuleBuildError, match="LOG"):
        NftablesBackend().transaction(RulePlan(rules=(Rule(4, "nat", "OUTPUT", ("-j", "LOG")),)))
    assert our_tables(lab, ns) == []


def test_a_transaction_the_kernel_rejects_changes_nothing(lab):
    ns = pod_netns(lab)
    expect_ok(cni("ADD", ns, netconf({})))
    before = nft(lab, ns, "list", "ruleset").stdout
    # TPROXY is valid only in a prerouting chain: the kernel refuses the whole transaction.
    bad = RulePlan(rules=(Rule(4, "nat", "OUTPUT", ("-p", "tcp", "-j", "TPROXY", "--on-port", "15006")),))
    with pytest.raises(ApplyError, match="libnftables rejected"):
        NftablesBackend().apply(bad, Target(ns))
    assert nft(lab, ns, "list", "ruleset").stdout == before


def failing_route_plan() -> RulePlan:
    return RulePlan(
        chains=(ChainDecl(4, "nat", "ISTIO_OUTPUT"),),
        rules=(Rule(4, "nat", "OUTPUT", ("-p", "tcp", "-j", "ISTIO_OUTPUT")),
               Rule(4, "nat", "ISTIO_OUTPUT", ("-d", "203.0.113.0/24", "-j", "RETURN"))),
        routes=(RouteStep(4, ("-4", "addr", "add", "198.51.100.9/32", "dev", "lo"),
                          undo=("-4", "addr", "del", "198.51.100.9/32", "dev", "lo")),
                RouteStep(4, ("-4", "route", "add", "203.0.113.0/24", "via", "198.51.100.77"))),  # unreachable
    )


def test_a_failing_route_step_rolls_a_new_pod_back_to_nothing(lab):
    ns = pod_netns(lab)
    with pytest.raises(ApplyError, match="route add"):
        NftablesBackend().apply(failing_route_plan(), Target(ns))
    assert our_tables(lab, ns) == []
    addresses = subprocess.run(["ip", "-n", lab.name_of(ns), "addr", "show", "dev", "lo"],
                               capture_output=True, text=True, check=True).stdout
    assert "198.51.100.9" not in addresses


def test_a_failing_route_step_on_a_repeated_add_restores_the_earlier_tables(lab):
    ns = pod_netns(lab)
    expect_ok(cni("ADD", ns, netconf({}, dual_stack=False)))
    before = nft(lab, ns, "list", "ruleset").stdout
    with pytest.raises(ApplyError, match="route add"):
        NftablesBackend().apply(failing_route_plan(), Target(ns))
    assert nft(lab, ns, "list", "ruleset").stdout == before
    expect_ok(cni("CHECK", ns, netconf({})))


def test_the_transaction_explain_prints_is_what_the_kernel_gets(lab):
    """``transaction()`` loaded with ``nft -j -f`` builds exactly the tables an ADD builds."""
    by_add, by_nft = pod_netns(lab), lab.netns("by-nft")
    expect_ok(cni("ADD", by_add, netconf({"sidecar.istio.io/interceptionMode": "TPROXY"})))
    plan = RulePlan(
        chains=(ChainDecl(4, "nat", "ISTIO_OUTPUT"), ChainDecl(6, "nat", "ISTIO_OUTPUT")),
        rules=(Rule(4, "nat", "OUTPUT", ("-p", "tcp", "-j", "ISTIO_OUTPUT")),
               Rule(6, "nat", "OUTPUT", ("-p", "tcp", "-j", "ISTIO_OUTPUT")),
               Rule(4, "nat", "ISTIO_OUTPUT", ("!", "-d", "127.0.0.1/32", "-j", "RETURN")),
               Rule(6, "nat", "ISTIO_OUTPUT", ("!", "-d", "::1/128", "-j", "RETURN"))),
    )
    text = NftablesBackend().transaction(plan)
    subprocess.run(["ip", "netns", "exec", lab.name_of(by_nft), "nft", "-j", "-f", "-"], input=text, text=True,
                   check=True)
    listing = nft(lab, by_nft, "list", "ruleset").stdout
    # one inet table for both families; the common jump written once, the address rules per family
    assert listing.count("jump istio-output") == 1
    assert "ip daddr != 127.0.0.1 return" in listing and "ip6 daddr != ::1 return" in listing
    NftablesBackend().apply(plan, Target(by_add))  # replaces the TPROXY tables with exactly the plan's
    assert nft(lab, by_add, "list", "ruleset").stdout == listing


def test_a_v4_only_rule_is_bound_to_ipv4_in_the_inet_table(lab):
    """An IPv4-only pod's rules must not capture IPv6: each is bound to its family."""
    ns = lab.netns("pod")
    plan = RulePlan(chains=(ChainDecl(4, "nat", "ISTIO_REDIRECT"),),
                    rules=(Rule(4, "nat", "OUTPUT", ("-p", "tcp", "-j", "ISTIO_REDIRECT")),
                           Rule(4, "nat", "ISTIO_REDIRECT", ("-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"))))
    NftablesBackend().apply(plan, Target(ns))
    listing = nft(lab, ns, "list", "ruleset").stdout
    assert "meta nfproto ipv4 meta l4proto tcp jump istio-redirect" in listing
    assert "meta nfproto ipv4 meta l4proto tcp redirect to :15001" in listing


def test_registered_under_istios_switch():
    info = backend_info()
    assert info.name == "nftables" and isinstance(info.factory(), NftablesBackend)
    if hasattr(info, "netconf_switch"):
        assert info.netconf_switch == "native_nftables"
