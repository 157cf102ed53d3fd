"""Every RedirectSpec value is of its declared type and shape before a rule is built from it.

The annotation parser produces such specs; this check holds for any ``meshcni_redirect_spec``
implementation (and the ``istio-iptables`` drop-in), so a string where an int belongs, or a
network with an IPv6 zone, can never be pasted into a rule.
"""

from __future__ import annotations

import ipaddress

from meshcni_hooks.errors import RuleBuildError
from meshcni_hooks.ruleargs import is_interface_name, is_owner_id
from meshcni_hooks.types import CidrList, ExtensionParams, PortList, RedirectSpec

MAX_PORT = 65535


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _bad(name: str, value: object, expected: str) -> RuleBuildError:
    return RuleBuildError(f"redirect parameter {name}={value!r} is not {expected}")


def _check_ports(name: str, ports: object, low: int = 0) -> None:
    if not isinstance(ports, tuple) or not all(_is_int(p, low, MAX_PORT) for p in ports):
        raise _bad(name, ports, f"a tuple of ports {low}-{MAX_PORT}")


def _check_cidrs(name: str, cidrs: object) -> None:
    if not isinstance(cidrs, CidrList) or not isinstance(cidrs.all, bool) or not isinstance(cidrs.networks, tuple):
        raise _bad(name, cidrs, "a CidrList")
    for network in cidrs.networks:
        if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise _bad(name, network, "an IPv4 or IPv6 network")
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.scope_id is not None:
            raise _bad(name, network, "a network without an IPv6 zone")


def check_spec(spec: RedirectSpec) -> None:
    """Raise RuleBuildError naming the first field whose value a rule must not carry."""
    for name in ("proxy_port", "inbound_capture_port"):
        if not _is_int(getattr(spec, name), 1, MAX_PORT):
            raise _bad(name, getattr(spec, name), f"a port 1-{MAX_PORT}")
    for name in ("proxy_uids", "proxy_gids"):
        ids = getattr(spec, name)
        if not isinstance(ids, tuple) or not all(isinstance(i, str) and is_owner_id(i) for i in ids):
            raise _bad(name, ids, "a tuple of user/group ids or names (A-Z a-z 0-9 _ . -)")
    _check_cidrs("include_outbound", spec.include_outbound)
    _check_cidrs("exclude_outbound", spec.exclude_outbound)
    inbound = spec.include_inbound_ports
    if not isinstance(inbound, PortList) or not isinstance(inbound.all, bool):
        raise _bad("include_inbound_ports", inbound, "a PortList")
    _check_ports("include_inbound_ports", inbound.ports)
    _check_ports("exclude_inbound_ports", spec.exclude_inbound_ports)
    _check_ports("exclude_outbound_ports", spec.exclude_outbound_ports)
    _check_ports("include_outbound_ports", spec.include_outbound_ports)
    params = spec.extension_params
    if not isinstance(params, tuple) or not all(isinstance(p, ExtensionParams) for p in params):
        raise _bad("extension_params", params, "a tuple of ExtensionParams")
    excluded = spec.exclude_interfaces
    if not isinstance(excluded, tuple) or not all(isinstance(i, str) and is_interface_name(i) for i in excluded):
        raise _bad("exclude_interfaces", excluded, "a tuple of network interface names")
    _check_dns(spec)
    # An extension's own values are its to check; every backend's argument wall still applies.


def _check_dns(spec: RedirectSpec) -> None:
    if not isinstance(spec.dns_capture, bool):
        raise _bad("dns_capture", spec.dns_capture, "true or false")
    if not _is_int(spec.dns_port, 1, MAX_PORT):
        raise _bad("dns_port", spec.dns_port, f"a port 1-{MAX_PORT}")
    servers = spec.dns_servers
    _check_cidrs("dns_servers", CidrList(networks=servers) if isinstance(servers, tuple) else servers)
    for server in servers:
        if server.prefixlen != server.max_prefixlen:
            raise _bad("dns_servers", server, "a host address (/32 or /128)")
