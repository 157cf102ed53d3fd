"""The TPROXY interception mode, as Istio 1.6's istio-iptables.sh programs it (§4.6)."""

from __future__ import annotations

from meshcni_hooks import hookimpl
from meshcni_hooks.types import ChainDecl, RedirectMode, RedirectSpec, RouteStep, Rule

MANGLE = "mangle"
DIVERT, TPROXY, INBOUND = "ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_INBOUND"
SOURCE = "tproxy"


def _rule(chain: str, *args: str) -> Rule:
    return Rule(family=4, table=MANGLE, chain=chain, args=args, source=SOURCE)


def _dport(port: int) -> tuple[str, ...]:
    return ("-p", "tcp", "-m", "tcp", "--dport", str(port))


ESTABLISHED = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")


def tproxy_inbound(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule], list[RouteStep]]:
    if family != 4 or spec.include_inbound_ports.empty:
        return [], [], []
    mark = f"0x{spec.tproxy_mark:x}/0xffffffff"
    chains = [ChainDecl(4, MANGLE, DIVERT), ChainDecl(4, MANGLE, TPROXY), ChainDecl(4, MANGLE, INBOUND)]
    rules = [
        _rule(DIVERT, "-j", "MARK", "--set-xmark", mark),
        _rule(DIVERT, "-j", "ACCEPT"),
        _rule(TPROXY, "!", "-d", "127.0.0.1/32", "-p", "tcp", "-j", "TPROXY",
              "--on-port", str(spec.proxy_port), "--on-ip", "0.0.0.0", "--tproxy-mark", mark),
        _rule("PREROUTING", "-p", "tcp", "-j", INBOUND),
    ]
    if spec.include_inbound_ports.all:
        rules.append(_rule(INBOUND, *_dport(22), "-j", "RETURN"))
        rules += [_rule(INBOUND, *_dport(p), "-j", "RETURN") for p in spec.exclude_inbound_ports]
        rules.append(_rule(INBOUND, "-p", "tcp", *ESTABLISHED, "-j", DIVERT))
        rules.append(_rule(INBOUND, "-p", "tcp", "-j", TPROXY))
    else:
        for port in spec.include_inbound_ports.ports:
            rules.append(_rule(INBOUND, *_dport(port), *ESTABLISHED, "-j", DIVERT))
            rules.append(_rule(INBOUND, *_dport(port), "-j", TPROXY))
    mark_s, table = str(spec.tproxy_mark), str(spec.tproxy_route_table)
    routes = [
        RouteStep(
            family=4,
            pre=("-f", "inet", "rule", "del", "fwmark", mark_s, "lookup", table),
            args=("-f", "inet", "rule", "add", "fwmark", mark_s, "lookup", table),
            undo=("-f", "inet", "rule", "del", "fwmark", mark_s, "lookup", table),
            show=("-f", "inet", "rule", "show"),
            expect=f"fwmark 0x{spec.tproxy_mark:x} lookup {table}",
            source=SOURCE,
        ),
        RouteStep(
            family=4,
            args=("-f", "inet", "route", "replace", "local", "default", "dev", "lo", "table", table),
            undo=("-f", "inet", "route", "flush", "table", table),
            show=("-f", "inet", "route", "show", "table", table),
            expect="local default dev lo",
            source=SOURCE,
        ),
    ]
    return chains, rules, routes


class TproxyMode:
    @hookimpl
    def meshcni_register_redirect_modes(self) -> list[RedirectMode]:
        return [
            RedirectMode(
                name="TPROXY",
                build_inbound=tproxy_inbound,
                description="mangle TPROXY of inbound TCP, original destination preserved",
                provider="meshcni-redirect-tproxy",
            )
        ]
