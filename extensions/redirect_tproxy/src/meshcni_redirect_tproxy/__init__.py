"""The TPROXY interception mode: Istio 1.6's istio-iptables.sh rules (§4.6), delivering inbound to
the inbound capture port (15006) as today's istio-iptables does, where the proxy listens for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshcni_hooks import hookimpl
from meshcni_hooks.errors import SettingError
from meshcni_hooks.types import (
    ChainDecl,
    Claim,
    DropInOption,
    ExtensionParams,
    RedirectMode,
    RedirectSpec,
    RouteStep,
    Rule,
)

MANGLE = "mangle"
DIVERT, TPROXY, INBOUND = "ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_INBOUND"
SOURCE = "tproxy"


def _rule(chain: str, *args: str) -> Rule:
    return Rule(family=4, table=MANGLE, chain=chain, args=args, source=SOURCE)


def _dport(port: int) -> tuple[str, ...]:
    return ("-p", "tcp", "-m", "tcp", "--dport", str(port))


ESTABLISHED = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
MAX_U32 = 0xFFFFFFFF
# Routing tables the policy route must never land in: unspec, default, main, local.
RESERVED_ROUTE_TABLES = (0, 253, 254, 255)


@dataclass(frozen=True)
class TproxySettings:
    """``extension_settings.tproxy``: the firewall mark of diverted packets and the routing table
    that delivers them locally (Istio's ISTIO_INBOUND_TPROXY_MARK / _ROUTE_TABLE)."""

    mark: int = 1337
    route_table: int = 133
    configured: tuple[str, ...] = ()  # the keys the settings block gave (the rest are defaults)


def _u32(key: str, value: object, what: str, reserved: tuple[int, ...]) -> int:
    """A firewall mark or table number: an int, or decimal digits only (no sign, no spaces)."""
    if isinstance(value, str) and 0 < len(value) <= 10 and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise SettingError(key, value, f"expected a decimal {what}")
    if not 0 < number <= MAX_U32 or number in reserved:
        raise SettingError(key, value, f"{what} {number} is outside 1-{MAX_U32} or reserved "
                                       f"({', '.join(map(str, reserved))})")
    return number


def parse_settings(raw: Mapping[str, object]) -> TproxySettings:
    unknown = sorted(set(raw) - {"mark", "route_table"})
    if unknown:
        raise SettingError(unknown[0], raw[unknown[0]], "unknown key (known: mark, route_table)")
    return TproxySettings(
        mark=_u32("mark", raw.get("mark", 1337), "firewall mark", (0,)),
        route_table=_u32("route_table", raw.get("route_table", 133), "routing table", RESERVED_ROUTE_TABLES),
        configured=tuple(sorted(raw)),
    )


def params(annotations: Mapping[str, str], settings: object) -> ExtensionParams:
    """Every pod gets the configured mark and table; only the TPROXY mode reads them."""
    value = settings if isinstance(settings, TproxySettings) else TproxySettings()
    origins = {k: f"setting extension_settings.{SOURCE}.{k}" if k in value.configured else "default"
               for k in ("mark", "route_table")}
    return ExtensionParams(SOURCE, value, origins)


def tproxy_inbound(spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule], list[RouteStep]]:
    if family != 4 or spec.include_inbound_ports.empty:
        return [], [], []
    settings = spec.params(TproxySettings) or TproxySettings()
    mark = f"0x{settings.mark:x}/0xffffffff"
    chains = [ChainDecl(4, MANGLE, DIVERT), ChainDecl(4, MANGLE, TPROXY), ChainDecl(4, MANGLE, INBOUND)]
    rules = [
        _rule(DIVERT, "-j", "MARK", "--set-xmark", mark),
        _rule(DIVERT, "-j", "ACCEPT"),
        # Istio 1.6's CNI script sent this to the outbound port (15001); today's Istio, and the
        # proxies of both, listen for inbound on the inbound capture port.
        _rule(TPROXY, "!", "-d", "127.0.0.1/32", "-p", "tcp", "-j", "TPROXY",
              "--on-port", str(spec.inbound_capture_port), "--on-ip", "0.0.0.0", "--tproxy-mark", mark),
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
    mark_s, table = str(settings.mark), str(settings.route_table)
    routes = [
        RouteStep(
            family=4,
            pre=("-f", "inet", "rule", "del", "fwmark", mark_s, "lookup", table),
            args=("-f", "inet", "rule", "add", "fwmark", mark_s, "lookup", table),
            undo=("-f", "inet", "rule", "del", "fwmark", mark_s, "lookup", table),
            show=("-f", "inet", "rule", "show"),
            expect=f"fwmark 0x{settings.mark:x} lookup {table}",
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
    def meshcni_register_claims(self) -> list[Claim]:
        return [
            Claim(
                extension=SOURCE,
                parse=params,
                parse_settings=parse_settings,
                drop_in=(
                    DropInOption(env="ISTIO_INBOUND_TPROXY_MARK", setting="mark"),
                    DropInOption(env="ISTIO_INBOUND_TPROXY_ROUTE_TABLE", setting="route_table"),
                ),
                description="the TPROXY mode's firewall mark and routing table",
            )
        ]

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
