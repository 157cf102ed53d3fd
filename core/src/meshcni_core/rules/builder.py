"""Build a pod's rule plan from a RedirectSpec: a pure function, no I/O.

It reproduces Istio 1.6's ``istio-iptables.sh`` (commit 14b34ea7) rule for rule; see
docs/rules.md for the mapping and the two deliberate deviations:

* a dual-stack pod gets IPv6 redirection (the script looked only at the first address of
  each interface, so dual-stack pods were IPv4-only and their IPv6 inbound was rejected);
* (in an extension) with ``includeOutboundIPRanges: "*"`` IPv6 VM-interface rules redirect as the
  IPv4 ones do (the script returned instead).

What today's Istio added is built by its own functions, with today's rules: DNS capture
(``dns_nat_rules``, ``dns_conntrack_zones`` and the DNS-aware parts of ``outbound``) and excluded
interfaces (``excluded_interface_rules``); pods without them get Istio 1.6's rules unchanged.

Every rule is written exactly as ``iptables-save`` prints it, so comparing a plan with a live
netns is string equality, for both the legacy and the nft flavour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshcni_core.rules.spec_check import check_spec
from meshcni_hooks.errors import RuleBuildError
from meshcni_hooks.ruleargs import destination_args, network_text
from meshcni_hooks.types import (
    ChainDecl,
    ChainFlush,
    NetnsFacts,
    RedirectMode,
    RedirectSpec,
    RouteStep,
    Rule,
    RulePlan,
)

NAT, MANGLE, FILTER, RAW = "nat", "mangle", "filter", "raw"
REDIRECT_CHAIN = "ISTIO_REDIRECT"
IN_REDIRECT_CHAIN = "ISTIO_IN_REDIRECT"
INBOUND_CHAIN = "ISTIO_INBOUND"
OUTPUT_CHAIN = "ISTIO_OUTPUT"
DNS_CHAIN = "ISTIO_OUTPUT_DNS"  # today's Istio, in nat and raw
DNS_PORT = 53

LOOPBACK = {4: "127.0.0.1/32", 6: "::1/128"}
INBOUND_PASSTHROUGH_SOURCE = {4: "127.0.0.6/32", 6: "::6/128"}
SSH_PORT = 22


def rule(family: int, table: str, chain: str, *args: str, head: bool = False, source: str = "builtin") -> Rule:
    return Rule(family=family, table=table, chain=chain, args=tuple(args), head=head, source=source)


def redirect_inbound(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule], list[RouteStep]]:
    """Inbound capture with nat REDIRECT to the inbound capture port (script §4.5 / §4.9)."""
    if spec.include_inbound_ports.empty:
        return [], [], []
    chains = [ChainDecl(family, NAT, INBOUND_CHAIN)]
    rules = [rule(family, NAT, "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN)]
    if spec.include_inbound_ports.all:
        rules.append(rule(family, NAT, INBOUND_CHAIN, *tcp_dport(SSH_PORT), "-j", "RETURN"))
        for port in spec.exclude_inbound_ports:
            rules.append(rule(family, NAT, INBOUND_CHAIN, *tcp_dport(port), "-j", "RETURN"))
        rules.append(rule(family, NAT, INBOUND_CHAIN, "-p", "tcp", "-j", IN_REDIRECT_CHAIN))
    else:
        for port in spec.include_inbound_ports.ports:
            rules.append(rule(family, NAT, INBOUND_CHAIN, *tcp_dport(port), "-j", IN_REDIRECT_CHAIN))
    return chains, rules, []


def tcp_dport(port: int) -> tuple[str, ...]:
    return ("-p", "tcp", "-m", "tcp", "--dport", str(port))


def redirect_chains(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule]]:
    """The two REDIRECT chains the script always creates first."""
    chains = [ChainDecl(family, NAT, REDIRECT_CHAIN), ChainDecl(family, NAT, IN_REDIRECT_CHAIN)]
    rules = [
        rule(family, NAT, REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(spec.proxy_port)),
        rule(
            family, NAT, IN_REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(spec.inbound_capture_port)
        ),
    ]
    return chains, rules


def outbound(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule]]:
    """nat ISTIO_OUTPUT (script §4.7 steps 1-7 and 9); interface rules come from extensions.
    With DNS capture, today's Istio's changes to it (see dns_output_match)."""
    lo, passthrough = LOOPBACK[family], INBOUND_PASSTHROUGH_SOURCE[family]
    out = [rule(family, NAT, "OUTPUT", *dns_output_match(spec), "-j", OUTPUT_CHAIN)]

    def add(*args: str) -> None:
        out.append(rule(family, NAT, OUTPUT_CHAIN, *args))

    for port in spec.exclude_outbound_ports:
        add(*tcp_dport(port), "-j", "RETURN")
        if spec.dns_capture:  # UDP now enters ISTIO_OUTPUT: today's Istio excludes the port for UDP too
            add(*udp_dport(port), "-j", "RETURN")
    add("-s", passthrough, "-o", "lo", "-j", "RETURN")
    for owner, ids in (("--uid-owner", spec.proxy_uids), ("--gid-owner", spec.proxy_gids)):
        keep_dns = dns_loopback_exception(spec)
        for ident in ids:
            to_inbound = keep_dns if owner == "--uid-owner" else ()  # today's Istio: the uid rule only
            add("!", "-d", lo, "-o", "lo", *to_inbound, "-m", "owner", owner, ident, "-j", IN_REDIRECT_CHAIN)
            add("-o", "lo", *keep_dns, "-m", "owner", "!", owner, ident, "-j", "RETURN")
            add("-m", "owner", owner, ident, "-j", "RETURN")
    if dns_jump_needed(spec, family):
        add("-j", DNS_CHAIN)
    add("-d", lo, "-j", "RETURN")
    for net in spec.exclude_outbound.of_family(family):
        add(*destination_args(net), "-j", "RETURN")
    for port in spec.include_outbound_ports:  # today's Istio: after the exclusions, before the ranges
        add(*tcp_dport(port), "-j", REDIRECT_CHAIN)
    if spec.include_outbound.all:
        add("-j", REDIRECT_CHAIN)
    else:
        included = spec.include_outbound.of_family(family)
        if included:
            for net in included:
                add(*destination_args(net), "-j", REDIRECT_CHAIN)
            add("-j", "RETURN")
    return [ChainDecl(family, NAT, OUTPUT_CHAIN)], out


def udp_dport(port: int) -> tuple[str, ...]:
    return ("-p", "udp", "-m", "udp", "--dport", str(port))


def dns_output_match(spec: RedirectSpec) -> tuple[str, ...]:
    """nat OUTPUT's jump to ISTIO_OUTPUT: TCP only (Istio 1.6), every protocol with DNS capture
    (today's Istio sends all of OUTPUT there, so that UDP DNS reaches ISTIO_OUTPUT_DNS)."""
    return () if spec.dns_capture else ("-p", "tcp")


def dns_loopback_exception(spec: RedirectSpec) -> tuple[str, ...]:
    """With DNS capture, today's Istio keeps TCP DNS over loopback out of the loopback shortcuts
    (a DNS server on localhost is still captured; the proxy's own DNS does not go to inbound)."""
    return ("-p", "tcp", "-m", "tcp", "!", "--dport", str(DNS_PORT)) if spec.dns_capture else ()


def dns_targets(spec: RedirectSpec, family: int, flag: str) -> list[tuple[str, ...]]:
    """``[()]`` when all port-53 traffic is captured (today's CNI plugin), else one ``flag ADDR``
    per DNS server of this family (istio-iptables without --capture-all-dns)."""
    if not spec.dns_servers:
        return [()]
    return [(flag, network_text(n)) for n in spec.dns_servers if n.version == family]


def dns_jump_needed(spec: RedirectSpec, family: int) -> bool:
    return spec.dns_capture and bool(dns_targets(spec, family, "-d"))


def dns_nat_rules(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule]]:
    """nat ISTIO_OUTPUT_DNS (today's Istio): TCP and UDP DNS to the proxy's DNS port; the proxy's
    own UDP queries return (its TCP ones already returned in ISTIO_OUTPUT)."""
    if not spec.dns_capture:
        return [], []
    to_dns = ("-j", "REDIRECT", "--to-ports", str(spec.dns_port))
    rules = [rule(family, NAT, DNS_CHAIN, *d, *tcp_dport(DNS_PORT), *to_dns) for d in dns_targets(spec, family, "-d")]
    for owner, ids in (("--uid-owner", spec.proxy_uids), ("--gid-owner", spec.proxy_gids)):
        rules += [rule(family, NAT, DNS_CHAIN, *udp_dport(DNS_PORT), "-m", "owner", owner, i, "-j", "RETURN")
                  for i in ids]
    rules += [rule(family, NAT, DNS_CHAIN, *d, *udp_dport(DNS_PORT), *to_dns) for d in dns_targets(spec, family, "-d")]
    return [ChainDecl(family, NAT, DNS_CHAIN)], rules


def dns_conntrack_zones(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule]]:
    """raw table (today's Istio): UDP DNS between the proxy and the servers in conntrack zone 1,
    between the app and the proxy in zone 2, so the two legs of a redirected query never share a
    conntrack entry (the UDP conntrack races Istio works around)."""
    if not spec.dns_capture:
        return [], []
    chains = [ChainDecl(family, RAW, DNS_CHAIN)]
    rules = [rule(family, RAW, "OUTPUT", "-j", DNS_CHAIN)]
    for owner, ids in (("--uid-owner", spec.proxy_uids), ("--gid-owner", spec.proxy_gids)):
        for ident in ids:
            proxy = ("-m", "owner", owner, ident)
            rules.append(rule(family, RAW, DNS_CHAIN, *udp_dport(DNS_PORT), *proxy, "-j", "CT", "--zone", "1"))
            rules.append(rule(family, RAW, DNS_CHAIN, "-p", "udp", "-m", "udp", "--sport", str(spec.dns_port),
                              *proxy, "-j", "CT", "--zone", "2"))
    if dns_jump_needed(spec, family):
        chains.append(ChainDecl(family, RAW, INBOUND_CHAIN))
        rules.append(rule(family, RAW, "PREROUTING", "-j", INBOUND_CHAIN))
        rules += [rule(family, RAW, DNS_CHAIN, *d, *udp_dport(DNS_PORT), "-j", "CT", "--zone", "2")
                  for d in dns_targets(spec, family, "-d")]
        rules += [rule(family, RAW, INBOUND_CHAIN, *s, "-p", "udp", "-m", "udp", "--sport", str(DNS_PORT),
                       "-j", "CT", "--zone", "1") for s in dns_targets(spec, family, "-s")]
    return chains, rules


def excluded_interface_rules(spec: RedirectSpec, family: int, inbound: Sequence[Rule]) -> list[Rule]:
    """``traffic.sidecar.istio.io/excludeInterfaces`` (today's Istio): traffic in or out through
    these interfaces returns before any capture, in nat and, when the inbound mode hooks mangle
    PREROUTING (as a transparent-proxy mode does), in mangle too."""
    tables = [NAT]
    if any(r.table == MANGLE and r.chain == "PREROUTING" for r in inbound):
        tables.append(MANGLE)
    rules: list[Rule] = []
    for table in tables:
        for name in spec.exclude_interfaces:
            rules.append(rule(family, table, "PREROUTING", "-i", name, "-j", "RETURN"))
            rules.append(rule(family, table, "OUTPUT", "-o", name, "-j", "RETURN"))
    return rules


def ipv6_lockdown() -> tuple[list[ChainFlush], list[Rule]]:
    """The script's IPv6-disabled branch (§4.10): only established and loopback inbound IPv6."""
    flush = [ChainFlush(6, FILTER, "INPUT")]
    rules = [
        rule(6, FILTER, "INPUT", "-m", "state", "--state", "ESTABLISHED", "-j", "ACCEPT"),
        rule(6, FILTER, "INPUT", "-d", "::1/128", "-i", "lo", "-j", "ACCEPT"),
        rule(6, FILTER, "INPUT", "-j", "REJECT", "--reject-with", "icmp6-port-unreachable"),
    ]
    return flush, rules


def ipv6_self_address() -> RouteStep:
    """``::6/128`` on lo, the IPv6 inbound passthrough source (the script adds it when IPv6 is on)."""
    return RouteStep(
        family=6,
        args=("-6", "addr", "replace", "::6/128", "dev", "lo"),
        undo=("-6", "addr", "del", "::6/128", "dev", "lo"),
        show=("-6", "addr", "show", "dev", "lo"),
        expect="inet6 ::6/128",
        ignore_errors=True,
    )


def build_plan(
    spec: RedirectSpec,
    facts: NetnsFacts,
    modes: Mapping[str, RedirectMode],
    extra: Sequence[Rule | RouteStep] = (),
) -> RulePlan:
    """The whole plan: IPv4 always; IPv6 redirection when the pod has a global IPv6 address,
    otherwise Istio's IPv6 lock-down (unless the kernel has no IPv6 at all). ``extra`` (from
    ``meshcni_extra_rules``) is appended. A spec value no rule may carry raises RuleBuildError."""
    check_spec(spec)
    mode = modes.get(spec.mode)
    if mode is None:
        known = ", ".join(sorted(modes)) or "none"
        raise RuleBuildError(f"interception mode {spec.mode!r} is not registered (registered: {known})")
    chains: list[ChainDecl] = []
    flushes: list[ChainFlush] = []
    rules: list[Rule] = []
    routes: list[RouteStep] = []
    families = (4, 6) if facts.ipv6 else (4,)
    for family in families:
        base_chains, base_rules = redirect_chains(spec, family)
        # The script uses its inbound mode for IPv4 only: IPv6 inbound is always nat REDIRECT.
        inbound_mode = mode if family == 4 else modes["REDIRECT"]
        in_chains, in_rules, in_routes = inbound_mode.build_inbound(spec, family)
        out_chains, out_rules = outbound(spec, family)
        dns_chains, dns_rules = dns_nat_rules(spec, family)
        zone_chains, zone_rules = dns_conntrack_zones(spec, family)
        # The exclusions come first in PREROUTING/OUTPUT, before the jumps into our chains.
        excluded = excluded_interface_rules(spec, family, in_rules)
        chains += base_chains + in_chains + out_chains + dns_chains + zone_chains
        rules += excluded + base_rules + in_rules + out_rules + dns_rules + zone_rules
        routes += in_routes
    if facts.ipv6:
        routes.insert(0, ipv6_self_address())
    elif facts.ipv6_stack:  # a kernel without IPv6 has nothing to lock down (and no ip6tables)
        lock_flush, lock_rules = ipv6_lockdown()
        flushes += lock_flush
        rules += lock_rules
    for item in extra:
        if isinstance(item, Rule):
            rules.append(item)
        else:
            routes.append(item)
    return RulePlan(chains=tuple(chains), flushes=tuple(flushes), rules=tuple(rules), routes=tuple(routes))
