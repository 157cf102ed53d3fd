"""Values from a pod, a netconf or CNI_ARGS can never write netfilter rules of their own.

Issue 9 item 1: an IPv6 "zone" in a CIDR annotation closed our nat transaction and opened a
filter one. Here, against the installed ``istio-cni`` and a real dual-stack netns read back with
``iptables-save``/``ip6tables-save``: an invalid value fails the ADD with one error object naming
the key and the value, nothing applied in either family; a valid one yields exactly the rules of
its parsed value, as an independent reference parser (``inet_pton``-based) renders it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from meshcni_backend_iptc.backend import IptcBackend
from meshcni_core import netns
from meshcni_core.backends.iptables_restore import IptablesRestoreBackend
from meshcni_core.pipeline import Pipeline
from meshcni_core.pods.lookup import pod_from_annotations
from meshcni_core.rules.builder import build_plan
from meshcni_core.rules.restore import parse_save
from meshcni_hooks.errors import AnnotationError, ApplyError, MeshcniError
from meshcni_hooks.ruleargs import unsafe_arguments
from meshcni_hooks.types import NetnsFacts, RedirectSpec, RouteStep, Rule, RulePlan, Target
from meshcni_testing.netlab import PLUGIN, Lab, cni, mesh_netconf, run

MODE = "sidecar.istio.io/interceptionMode"
INCLUDE_CIDRS = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_IN_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUT_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
INJECT, STATUS = "sidecar.istio.io/inject", "sidecar.istio.io/status"
# Istio's validation order: the first invalid one is the one reported.
VALUE_KEYS = (MODE, INCLUDE_CIDRS, INCLUDE_PORTS, EXCLUDE_OUTBOUND, EXCLUDE_IN_PORTS, EXCLUDE_OUT_PORTS, KUBEVIRT)
MESH_STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
POD4, POD6 = "192.0.2.2", "2001:db8:1::2"
DUAL_STACK = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=(POD4,), ipv6_addresses=(POD6,))

# issue 9 item 1, verbatim: an IPv6 "zone" that closes our nat transaction and opens a filter one
SCOPE_ID_INJECTION = (
    "fd00::%1 -j RETURN\n-I ISTIO_OUTPUT 1 -j RETURN\nCOMMIT\n*filter\n-I INPUT 1 -p tcp --dport 4444 "
    "-j ACCEPT\nCOMMIT\n*nat\n-A ISTIO_OUTPUT -d fd00::/128"
)


# -- the reported injection and the kubevirt '$', through the executable ----------------------------

@pytest.fixture
def pod(netns_lab):
    """A dual-stack pod netns (eth0 192.0.2.2/24 and 2001:db8:1::2/64), as a primary CNI leaves it."""
    ns, peer = netns_lab.netns("pod"), netns_lab.netns("peer")
    netns_lab.link(ns, [f"{POD4}/24", f"{POD6}/64"], peer, ["192.0.2.1/24", "2001:db8:1::1/64"])
    return ns


def dual_stack_netconf(annotations: dict[str, str], **extra) -> dict:
    conf = mesh_netconf(annotations, **extra)
    conf["prevResult"]["ips"].append({"address": f"{POD6}/64", "interface": 0})
    return conf


def assert_refused_and_untouched(lab, ns: str, proc, key: str, value: str) -> dict:
    assert proc.returncode != 0, f"ADD accepted {value!r}: {proc.stdout}"
    error = json.loads(proc.stdout)  # exactly one JSON document
    assert error["code"] not in (0, 9, 10) and key in error["msg"] and repr(value) in error["msg"], error
    assert lab.save(ns, 4) == "" and lab.save(ns, 6) == "", "a refused ADD left rules behind"
    return error


@pytest.mark.netns
def test_ipv6_scope_id_cannot_inject_rules(netns_lab, pod):
    proc = cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: SCOPE_ID_INJECTION}))
    error = assert_refused_and_untouched(netns_lab, pod, proc, EXCLUDE_OUTBOUND, SCOPE_ID_INJECTION)
    assert "zone" in error["msg"]


@pytest.mark.netns
def test_a_plain_scope_id_is_refused_as_go_refuses_it(netns_lab, pod):
    proc = cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: "fd00::%eth0/64"}))
    assert_refused_and_untouched(netns_lab, pod, proc, EXCLUDE_OUTBOUND, "fd00::%eth0/64")


@pytest.mark.netns
@pytest.mark.parametrize("value", ["eth0\n", "net1,eth0\n", "eth0\x00", "eth0 -j ACCEPT", "eth+"])
def test_kubevirt_interface_must_be_a_whole_interface_name(netns_lab, pod, value):
    proc = cni("ADD", pod, dual_stack_netconf({KUBEVIRT: value}))
    assert_refused_and_untouched(netns_lab, pod, proc, KUBEVIRT, value)


# -- the backends' own wall, whoever built the plan ---------------------------------------------------

def plan_with(bad: Rule) -> RulePlan:
    """Istio's default dual-stack plan plus one rule a buggy builder produced."""
    plan = build_plan(RedirectSpec(), DUAL_STACK, Pipeline.from_netconf(
        {"cniVersion": "1.0.0", "name": "net", "extensions": []}, {}).modes)
    return RulePlan(chains=plan.chains, flushes=plan.flushes, rules=(*plan.rules, bad), routes=plan.routes)


BAD_ARGUMENTS = [
    SCOPE_ID_INJECTION.replace("fd00::%1", "fd00::%1/128"),  # the injection, already rendered
    "fd00::/8 -j ACCEPT",
    "eth0\n",
    "\x00",
    "",
    "2001:db8::/32\u2028",
    "caf\u00e9",
    '"-j',
]


@pytest.mark.netns
@pytest.mark.parametrize("backend, flavour", [(IptablesRestoreBackend, "nft"), (IptcBackend, "legacy")],
                         ids=["iptables-restore", "iptc"])
@pytest.mark.parametrize("word", BAD_ARGUMENTS)
def test_backend_refuses_an_unsafe_argument_and_applies_nothing(netns_lab, backend, flavour, word):
    ns = netns_lab.netns("wall")
    plan = plan_with(Rule(6, "nat", "ISTIO_OUTPUT", ("-d", word, "-j", "RETURN"), source="buggy-builder"))
    with pytest.raises(ApplyError) as info:
        backend().apply(plan, Target(netns=ns, iptables_flavour=flavour))
    assert repr(word) in info.value.details and "buggy-builder" in info.value.details
    assert "nothing was applied" in info.value.msg
    for family in (4, 6):
        assert netns_lab.save(ns, family, flavour) == "", "the backend applied part of a refused plan"
    with netns.entered(ns):
        assert "::6" not in run("ip", "-6", "addr", "show", "dev", "lo").stdout


@pytest.mark.parametrize("field", ["chain", "table", "route"])
def test_every_place_an_argument_sits_is_checked(field):
    base = plan_with(Rule(4, "nat", "ISTIO_OUTPUT", ("-j", "RETURN")))
    if field == "chain":
        plan = RulePlan(chains=base.chains, rules=(Rule(4, "nat", "ISTIO_OUTPUT\n*filter", ("-j", "RETURN")),))
    elif field == "table":
        plan = RulePlan(chains=base.chains, rules=(Rule(4, "nat filter", "ISTIO_OUTPUT", ("-j", "RETURN")),))
    else:
        plan = RulePlan(routes=(RouteStep(family=4, args=("rule", "add", "x y")),))
    assert unsafe_arguments(plan), f"an unsafe {field} passed"
    assert unsafe_arguments(base) == []


@pytest.mark.netns
def test_a_second_add_after_a_refused_one_programs_normally(netns_lab, pod):
    assert cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: SCOPE_ID_INJECTION})).returncode != 0
    proc = cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: "2001:db8:2::/48,198.51.100.0/24"}))
    assert proc.returncode == 0, proc.stdout
    assert "-A ISTIO_OUTPUT -d 2001:db8:2::/48 -j RETURN" in netns_lab.save(pod, 6)
    assert "-A ISTIO_OUTPUT -d 198.51.100.0/24 -j RETURN" in netns_lab.save(pod, 4)


# -- the reference: what each annotation value must yield, parsed independently ----------------------

ASCII_SPACE = " \t\n\r\x0b\x0c"
INTERFACE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def reference_cidr(element: str) -> tuple[int, str] | None:
    """(family, iptables-save text) of one CIDR as Go's ParseCIDR takes it, via libc's inet_pton."""
    address, sep, prefix = element.partition("/")
    if not sep or not (prefix.isascii() and prefix.isdigit()) or len(prefix) > 3:
        return None
    for family, af, bits in ((4, socket.AF_INET, 32), (6, socket.AF_INET6, 128)):
        if (family == 4) == (":" in address):
            continue
        try:
            packed = socket.inet_pton(af, address)
        except (OSError, ValueError):  # ValueError: NUL in the text
            return None
        length = int(prefix)
        if length > bits:
            return None
        number = int.from_bytes(packed, "big") & (((1 << bits) - 1) ^ ((1 << (bits - length)) - 1))
        return family, f"{socket.inet_ntop(af, number.to_bytes(bits // 8, 'big'))}/{length}"
    return None


def reference_cidrs(value: str, allow_all: bool) -> list[tuple[int, str]] | str | None:
    if value == "*":
        return "*" if allow_all else None
    if value == "":
        return []
    parsed = [reference_cidr(e) for e in value.split(",")]
    if any(p is None for p in parsed):
        return None
    return list(dict.fromkeys(p for p in parsed if p is not None))


def reference_ports(value: str, allow_all: bool) -> list[int] | str | None:
    if value == "*":
        return "*" if allow_all else None
    if value == "":
        return []
    ports = []
    for element in value.split(","):
        text = element.strip(ASCII_SPACE)
        if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
            return None
        ports.append(int(text))
    return list(dict.fromkeys(ports))


def reference_interfaces(value: str) -> list[str] | None:
    if value == "":
        return []
    names = value.split(",")
    if any(not (0 < len(n) <= 15 and set(n) <= INTERFACE_CHARS and n not in (".", "..")) for n in names):
        return None
    return list(dict.fromkeys(names))


DEFAULTS = {MODE: "REDIRECT", INCLUDE_CIDRS: "*", INCLUDE_PORTS: "*", EXCLUDE_OUTBOUND: "",
            EXCLUDE_IN_PORTS: "15020", EXCLUDE_OUT_PORTS: "15020", KUBEVIRT: ""}


def reference(annotations: dict[str, str]) -> dict[str, object] | str:
    """Each value annotation parsed, or the key of the first invalid one (Istio's order; a mode
    that is well-formed but not registered is found only once the others parsed)."""
    parsed: dict[str, object] = {}
    for key in VALUE_KEYS:
        value = annotations.get(key, DEFAULTS[key])
        if key == MODE:
            result: object = value if re.fullmatch(r"[A-Z][A-Z0-9_]{0,31}", value) else None
        elif key in (INCLUDE_CIDRS, EXCLUDE_OUTBOUND):
            result = reference_cidrs(value, allow_all=key == INCLUDE_CIDRS)
        elif key == KUBEVIRT:
            result = reference_interfaces(value)
        else:
            result = reference_ports(value, allow_all=key == INCLUDE_PORTS)
        if result is None:
            return key
        parsed[key] = result
    return parsed if parsed[MODE] in ("REDIRECT", "TPROXY") else MODE


def dports(rules: list[str], target: str) -> list[int]:
    found = []
    for text in rules:
        words = text.split()
        if "--dport" in words and words[-1] == target:
            found.append(int(words[words.index("--dport") + 1]))
    return found


LOOPBACK = {4: "127.0.0.1/32", 6: "::1/128"}
EVERYWHERE = {4: "0.0.0.0/0", 6: "::/0"}  # iptables-save omits "-d" for these


def rule_values(chains: dict[tuple[int, str, str], list[str]], family: int) -> dict[str, object]:
    """The values a plan or a live netns carries, read back from its rules."""
    output = chains.get((family, "nat", "ISTIO_OUTPUT"), [])
    inbound_table = "mangle" if (family, "mangle", "ISTIO_INBOUND") in chains else "nat"
    inbound = chains.get((family, inbound_table, "ISTIO_INBOUND"), [])
    prerouting = chains.get((family, "nat", "PREROUTING"), [])
    # ISTIO_OUTPUT: ..., the loopback RETURN, exclusions, then "-j ISTIO_REDIRECT" (include all) or
    # the included ranges' jumps and a final "-j RETURN" (none at all when none is of this family).
    body = output[output.index(f"-d {LOOPBACK[family]} -j RETURN") + 1:]
    include_all = body[-1:] == ["-j ISTIO_REDIRECT"]
    if include_all or any(t.endswith("-j ISTIO_REDIRECT") for t in body):
        body = body[:-1]

    def destination(text: str) -> str:
        return text.split()[1] if text.startswith("-d ") else EVERYWHERE[family]

    returns = [destination(t) for t in body if t.endswith("-j RETURN")]
    redirects = [destination(t) for t in body if t.endswith("-j ISTIO_REDIRECT")]
    capture_all = "-p tcp -j ISTIO_IN_REDIRECT" in inbound or "-p tcp -j ISTIO_TPROXY" in inbound
    return {
        MODE: "TPROXY" if inbound_table == "mangle" else "REDIRECT",
        EXCLUDE_OUTBOUND: returns,
        INCLUDE_CIDRS: "*" if include_all else redirects,
        EXCLUDE_OUT_PORTS: dports(output, "RETURN"),
        INCLUDE_PORTS: "*" if capture_all else dports(inbound, "ISTIO_IN_REDIRECT") + dports(inbound, "ISTIO_TPROXY"),
        EXCLUDE_IN_PORTS: dports(inbound, "RETURN")[1:] if capture_all else None,  # after ssh's 22
        KUBEVIRT: sorted({t.split()[t.split().index("-i") + 1] for t in prerouting if "-i" in t.split()}),
    }


def expected_values(parsed: dict[str, object], family: int) -> dict[str, object]:
    def of_family(cidrs: object) -> object:
        return cidrs if cidrs == "*" else [text for fam, text in cidrs if fam == family]  # type: ignore[union-attr]

    include = parsed[INCLUDE_CIDRS]
    kubevirt_rules_in_family = include == "*" or family == 4 or of_family(include)
    capture_all = parsed[INCLUDE_PORTS] == "*"
    excluded_in = list(dict.fromkeys([*parsed[EXCLUDE_IN_PORTS], 15020, 15021, 15090]))  # type: ignore[misc]
    return {
        MODE: parsed[MODE] if family == 4 else "REDIRECT",
        EXCLUDE_OUTBOUND: of_family(parsed[EXCLUDE_OUTBOUND]),
        INCLUDE_CIDRS: of_family(include),
        EXCLUDE_OUT_PORTS: parsed[EXCLUDE_OUT_PORTS],
        INCLUDE_PORTS: "*" if capture_all else parsed[INCLUDE_PORTS],
        EXCLUDE_IN_PORTS: excluded_in if capture_all else None,
        KUBEVIRT: sorted(parsed[KUBEVIRT]) if kubevirt_rules_in_family else [],  # type: ignore[call-overload]
    }


def plan_chains(plan: RulePlan) -> dict[tuple[int, str, str], list[str]]:
    keys = dict.fromkeys((r.family, r.table, r.chain) for r in plan.rules)
    return {key: [r.text for r in plan.chain_rules(*key)] for key in keys}


def assert_values_match_reference(chains, parsed) -> None:
    for family in (4, 6):
        got, want = rule_values(chains, family), expected_values(parsed, family)
        if want[INCLUDE_PORTS] == []:  # nothing captured inbound: no inbound chain to read from
            got[EXCLUDE_IN_PORTS] = want[EXCLUDE_IN_PORTS] = None
            got[MODE] = want[MODE]
        assert got == want, f"IPv{family}"


# -- strategies: arbitrary Unicode, and near-misses of valid values -----------------------------------

NASTY = st.sampled_from([
    " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1c", "\x1f", "\x7f", "\x85", "\xa0", "\u2028", "\u2029",
    "\u200b", "\ufeff", "\u3000", "%", "%1", "%eth0", ",", "/", "+", "!", '"', "'", "\\", "\u0663", "\u00b2", "*",
    "-j ACCEPT", "\nCOMMIT\n*filter\n",
])
ANY_TEXT = st.text(max_size=40)  # every code point but surrogates: controls, separators, NUL


def spliced(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid text with something nasty inserted somewhere."""
    return st.builds(lambda v, n, at: v[: at % (len(v) + 1)] + n + v[at % (len(v) + 1):], valid, NASTY,
                     st.integers(0, 60))


def cidr_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int, exploded: bool) -> str:
    return f"{address.exploded if exploded else address}/{prefix}"


VALID_CIDR = st.one_of(
    st.builds(cidr_text, st.ip_addresses(v=4), st.integers(0, 32), st.just(False)),
    st.builds(cidr_text, st.ip_addresses(v=6), st.integers(0, 128), st.booleans()),
    st.sampled_from(["::ffff:192.0.2.1/120", "::192.0.2.1/128", "2001:DB8::/32", "10.0.0.0/08"]),
)
ZONED_CIDR = st.builds(lambda a, z, p: f"{a}%{z}/{p}", st.ip_addresses(v=6), ANY_TEXT, st.integers(0, 128))
VALID_PORT = st.integers(0, 65535).map(str)
VALID_NAME = st.from_regex(r"[A-Za-z0-9_.-]{1,15}", fullmatch=True)


def list_of(element: st.SearchStrategy[str], valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    items = st.one_of(valid, valid, element)
    joined = st.lists(items, min_size=1, max_size=5).map(",".join)
    all_valid = st.lists(valid, min_size=1, max_size=5).map(",".join)
    very_long = st.builds(lambda v, n: ",".join([v] * n), valid, st.integers(200, 3000))
    return st.one_of(joined, all_valid, very_long, st.sampled_from(["", "*"]), ANY_TEXT, spliced(joined))


VALUES = {
    MODE: st.one_of(st.sampled_from(["REDIRECT", "TPROXY", "NONE", "redirect", "REDIRECT\n"]), ANY_TEXT,
                    spliced(st.just("TPROXY"))),
    INCLUDE_CIDRS: list_of(st.one_of(ZONED_CIDR, ANY_TEXT, spliced(VALID_CIDR)), VALID_CIDR),
    EXCLUDE_OUTBOUND: list_of(st.one_of(ZONED_CIDR, ANY_TEXT, spliced(VALID_CIDR), st.just(SCOPE_ID_INJECTION)),
                              VALID_CIDR),
    INCLUDE_PORTS: list_of(st.one_of(ANY_TEXT, spliced(VALID_PORT)), VALID_PORT),
    EXCLUDE_IN_PORTS: list_of(st.one_of(ANY_TEXT, spliced(VALID_PORT)), VALID_PORT),
    EXCLUDE_OUT_PORTS: list_of(st.one_of(ANY_TEXT, spliced(VALID_PORT)), VALID_PORT),
    KUBEVIRT: list_of(st.one_of(ANY_TEXT, spliced(VALID_NAME), st.just("eth0\n")), VALID_NAME),
    INJECT: st.one_of(st.sampled_from(["true", "false", "yes"]), ANY_TEXT),
}


@st.composite
def annotation_sets(draw, max_keys: int = 4) -> dict[str, str]:
    keys = draw(st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=max_keys))
    return {STATUS: MESH_STATUS, **{key: draw(VALUES[key]) for key in keys}}


# -- the property at the parse/plan level (fast: thousands of values, no kernel) ----------------------

@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.from_netconf({"cniVersion": "1.0.0", "name": "net", "extensions": ["tproxy", "kubevirt"]}, {})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(annotations=annotation_sets())
def test_any_annotation_yields_its_reference_rules_or_one_error_naming_it(pipeline, annotations):
    pod = pod_from_annotations("default", "app-1", "uid-1", annotations)
    want = reference(annotations)
    try:
        decision = pipeline.decide(pod, DUAL_STACK)
    except AnnotationError as exc:
        event(f"refused: {exc.annotation}")
        assert repr(annotations[exc.annotation]) in exc.msg
        if exc.annotation == INJECT:  # an unreadable inject value on an injected pod: eligibility's
            assert annotations[INJECT].lower() not in ("true", "false", "yes", "no", "1", "0")
            return
        assert want == exc.annotation, f"refused {exc.annotation}, the reference says {want!r}"
        return
    if not decision.redirect:
        event("not redirected")
        assert decision.plan is None
        return
    event(f"accepted with {len([k for k in annotations if k in VALUE_KEYS])} value annotations")
    assert isinstance(want, dict), f"accepted, but the reference refuses {want}"
    assert decision.plan is not None and unsafe_arguments(decision.plan) == []
    assert_values_match_reference(plan_chains(decision.plan), want)


def test_the_reference_agrees_with_the_issue():
    assert reference({EXCLUDE_OUTBOUND: SCOPE_ID_INJECTION}) == EXCLUDE_OUTBOUND
    assert reference({KUBEVIRT: "eth0\n"}) == KUBEVIRT
    parsed = reference({EXCLUDE_OUTBOUND: "::ffff:192.0.2.1/120,10.1.2.3/8"})
    assert isinstance(parsed, dict) and parsed[EXCLUDE_OUTBOUND] == [(6, "::ffff:192.0.2.0/120"), (4, "10.0.0.0/8")]


# -- the same property through the real executable, in one reused dual-stack netns --------------------
#
# Each example here costs a real ADD (a Python start and one iptables-restore per family: 0.2 s on
# an idle machine, over 1 s on a loaded one) plus reading and resetting the netns, so only 30 run,
# all in one reused netns; the value space itself is covered by the plan-level test above, which
# shares the reference. These prove that what the kernel holds is exactly the plan, and that a
# refusal anywhere - annotation, netconf field, CNI_ARGS value - leaves both families untouched.

# Mostly valid, so that most examples reach the rules; NUL cannot be passed in an environment.
ODD_CNI_ARG = st.one_of(st.sampled_from(["istio-system", "", "Default", "a" * 64, "a.b-c"]), ANY_TEXT,
                        spliced(st.just("app-1"))).filter(lambda v: "\x00" not in v)
CNI_ARG_VALUE = st.integers(0, 5).flatmap(lambda n: ODD_CNI_ARG if n == 0 else st.just("app-1"))
NETCONF_FIELDS = {
    "exclude_namespaces": st.lists(st.one_of(st.just("default"), ANY_TEXT), max_size=3),
    "node_name": ANY_TEXT,
    "intercept_type": st.one_of(st.just("iptables"), ANY_TEXT),
    "iptables_flavour": st.one_of(st.sampled_from(["auto", "nft"]), ANY_TEXT),
    "log_level": st.one_of(st.just("error"), ANY_TEXT),
    "backend": st.one_of(st.just("iptables-restore"), ANY_TEXT),
    "extensions": st.one_of(st.just(["tproxy", "kubevirt"]), st.lists(ANY_TEXT, max_size=2)),
}
# Half the examples keep the netconf as it is, the others change one field.
NETCONF_CHANGES = st.booleans().flatmap(lambda keep: st.just({}) if keep else st.one_of(
    *[st.fixed_dictionaries({key: values}) for key, values in NETCONF_FIELDS.items()]))
KUBERNETES_KEYS = ("exclude_namespaces", "node_name", "intercept_type")
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def reference_cni_args_valid(namespace: str, name: str) -> bool:
    """What the API server allows: a namespace is an RFC 1123 label, a pod name a subdomain."""
    return (namespace == "" or re.fullmatch(DNS_LABEL, namespace) is not None) and (
        name == "" or (len(name) <= 253 and all(re.fullmatch(DNS_LABEL, p) for p in name.split(".")))
    )


@pytest.fixture(scope="module")
def reused_pod():
    lab = Lab()
    try:
        ns, peer = lab.netns("prop"), lab.netns("peer")
        lab.link(ns, [f"{POD4}/24", f"{POD6}/64"], peer, ["192.0.2.1/24", "2001:db8:1::1/64"])
        yield ns
    finally:
        lab.close()


def live_chains(ns: str) -> dict[tuple[int, str, str], list[str]]:
    chains: dict[tuple[int, str, str], list[str]] = {}
    with netns.entered(ns):
        for family, tool in ((4, "iptables-nft-save"), (6, "ip6tables-nft-save")):
            for table, state in parse_save(run(tool).stdout).items():
                chains.update({(family, table, c): rules for c, rules in state.chains.items() if rules})
    return chains


def live_routes(ns: str) -> str:
    with netns.entered(ns):
        return run("ip", "rule", "show").stdout + run("ip", "-6", "addr", "show", "dev", "lo").stdout


def reset(ns: str) -> None:
    """Back to a bare pod netns: restoring empty tables (no --noflush) flushes them and deletes
    every user chain; then our two kinds of route state."""
    with netns.entered(ns):
        for tool in ("iptables-nft-restore", "ip6tables-nft-restore"):
            subprocess.run([tool], input="*nat\nCOMMIT\n*mangle\nCOMMIT\n*filter\nCOMMIT\n", text=True, check=True)
        run("ip", "rule", "del", "fwmark", "1337", "lookup", "133", check=False)
        run("ip", "route", "flush", "table", "133", check=False)
        run("ip", "-6", "addr", "del", "::6/128", "dev", "lo", check=False)


def add_through_plugin(ns: str, netconf: dict, cni_args: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
                "CNI_PATH": "/opt/cni/bin",
                "CNI_ARGS": "IgnoreUnknown=1;" + ";".join(f"{k}={v}" for k, v in cni_args.items())})
    return subprocess.run([PLUGIN], input=json.dumps(netconf).encode(), env=env, capture_output=True, timeout=60)


PIPELINES: dict[str, Pipeline | MeshcniError] = {}


def in_process_decision(netconf: dict, cni_args: dict[str, str], annotations: dict[str, str], ns: str):
    """What the parsed values call for, or the MeshcniError that refuses them."""
    conf = {k: v for k, v in netconf.items() if k not in ("runtimeConfig", "prevResult")}
    key = json.dumps(conf, sort_keys=True)
    if key not in PIPELINES:
        try:
            PIPELINES[key] = Pipeline.from_netconf(conf, {})
        except MeshcniError as exc:
            PIPELINES[key] = exc
    pipeline = PIPELINES[key]
    if isinstance(pipeline, MeshcniError):
        return pipeline
    try:
        pod = pod_from_annotations(cni_args["K8S_POD_NAMESPACE"], cni_args["K8S_POD_NAME"], "uid-1", annotations)
        return pipeline.decide(pod, netns.read_facts(ns))
    except MeshcniError as exc:
        return exc


@pytest.mark.netns
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(annotations=annotation_sets(max_keys=3), changes=NETCONF_CHANGES,
       namespace=CNI_ARG_VALUE, name=CNI_ARG_VALUE)
def test_through_the_executable_exactly_the_parsed_rules_or_nothing(reused_pod, annotations, changes, namespace,
                                                                    name):
    assume(all(len(v) < 20000 for v in annotations.values()))  # keep each example's ADD short
    ns = reused_pod
    assert live_chains(ns) == {}, "the previous example's reset left rules"
    netconf = dual_stack_netconf(annotations)
    netconf["kubernetes"].update({k: v for k, v in changes.items() if k in KUBERNETES_KEYS})
    netconf.update({k: v for k, v in changes.items() if k not in KUBERNETES_KEYS})
    cni_args = {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name, "K8S_POD_UID": "uid-1"}
    try:
        proc = add_through_plugin(ns, netconf, cni_args)
        out = json.loads(proc.stdout)  # exactly one JSON document, whatever happened
        assert b"Traceback" not in proc.stdout + proc.stderr
        live = live_chains(ns)
        if not reference_cni_args_valid(namespace, name):
            assert proc.returncode != 0 and out["code"] == 4, f"CNI_ARGS {cni_args!r} accepted: {out}"
        event(f"exit {proc.returncode}, code {out.get('code', '-')}")
        if proc.returncode != 0:
            assert isinstance(out["code"], int) and out["code"] not in (0, 9, 10) and out["msg"]
            assert live == {}, "a refused ADD left rules behind"
            assert "fwmark" not in live_routes(ns) and "::6/128" not in live_routes(ns)
            if out["code"] == 103:  # an annotation: named, with its value in repr
                assert any(k in out["msg"] and repr(v) in out["msg"] for k, v in annotations.items()), out
            return
        if not (namespace and name):  # not a Kubernetes pod: passed through untouched
            assert live == {}
            return
        decision = in_process_decision(netconf, cni_args, annotations, ns)
        if isinstance(decision, MeshcniError):  # passed through from the request alone (an excluded
            assert live == {}, f"rules applied where the parse refuses: {decision}"  # namespace): untouched
            return
        if decision.plan is None:
            assert live == {}, "a pod that is not redirected got rules"
            return
        event("rules applied")
        assert live == plan_chains(decision.plan), "the netns holds other rules than the parsed values call for"
        routes = live_routes(ns)
        assert all(step.expect in routes for step in decision.plan.routes if step.expect and "rule" in step.show)
        want = reference(annotations)
        assert isinstance(want, dict), f"the plugin accepted what the reference refuses ({want})"
        assert_values_match_reference(live, want)
    finally:
        if live_chains(ns) or "fwmark" in live_routes(ns) or "::6/128" in live_routes(ns):
            reset(ns)
