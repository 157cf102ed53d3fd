"""Istio's redirect annotations -> RedirectSpec, with Istio 1.6's defaults and list quirks.

Unlike Istio 1.6, an invalid value is an error that names the annotation and the value (1.6
logged it and let the pod run without redirection).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace

from meshcni_core.builtin.dns_capture import dns_capture_of
from meshcni_core.builtin.sidecar import proxy_identity
from meshcni_hooks import hookimpl
from meshcni_hooks.errors import AnnotationError
from meshcni_hooks.ruleargs import parse_interfaces as parse_interfaces  # shared list parser, re-exported
from meshcni_hooks.types import CidrList, IPNetwork, PluginConfig, PodInfo, PortList, RedirectSpec

INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
INCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
INCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"  # today's Istio
EXCLUDE_INTERFACES = "traffic.sidecar.istio.io/excludeInterfaces"

DNS_PORT_ORIGIN = "fixed (today's Istio: the proxy agent's DNS listener)"
DNS_SERVERS_ORIGIN = "fixed: all port-53 traffic (today's plugin; it cannot read the pod's resolv.conf)"
# Ports Istio 1.6 always adds to the inbound exclusions (health, readiness, Prometheus).
ALWAYS_EXCLUDED_INBOUND = (15020, 15021, 15090)
DEFAULT_EXCLUDED_OUTBOUND = (15020,)
MODE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
PORT_DIGITS = re.compile(r"[0-9]{1,5}")
# What Go's net.ParseCIDR takes (Istio parses with it): an address without a zone, then a decimal
# prefix length. Python's ip_network would also take a zone ("fd00::%any text/64", kept verbatim
# by str()) and a netmask, so the shape is checked before it parses.
CIDR_SHAPE = re.compile(r"[0-9A-Fa-f.:]{2,45}/[0-9]{1,3}")
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def parse_port_list(key: str, value: str, *, allow_all: bool) -> PortList:
    """Istio's port list: ``*`` (if allowed), empty, or comma-separated decimal ports 0-65535.
    Elements may carry surrounding whitespace; an empty element (``"80,"``) is invalid."""
    if value == "*":
        if not allow_all:
            raise AnnotationError(key, value, "'*' is not allowed here; list the ports")
        return PortList(all=True)
    if value == "":
        return PortList()
    ports: dict[int, None] = {}  # ordered and de-duplicated in linear time (values may be long)
    for element in value.split(","):
        text = element.strip(ASCII_WHITESPACE)  # as Istio's TrimSpace (a YAML block adds a newline)
        if not PORT_DIGITS.fullmatch(text):
            raise AnnotationError(key, value, f"{element!r} is not a port number")
        port = int(text)
        if port > 65535:
            raise AnnotationError(key, value, f"port {port} is out of range 0-65535")
        ports[port] = None
    return PortList(ports=tuple(ports))


def parse_cidr_list(key: str, value: str, *, allow_all: bool) -> CidrList:
    """Istio's CIDR list: ``*`` (if allowed), empty, or comma-separated CIDRs, not trimmed
    (``"10.0.0.0/8, 10.1.0.0/16"`` is invalid, as in Istio)."""
    if value == "*":
        if not allow_all:
            raise AnnotationError(key, value, "'*' is not allowed here; list the ranges")
        return CidrList(all=True)
    if value == "":
        return CidrList()
    networks: dict[IPNetwork, None] = {}
    for element in value.split(","):
        network = parse_cidr(key, value, element)
        networks[network] = None
    return CidrList(networks=tuple(networks))


def parse_cidr(key: str, value: str, element: str) -> IPNetwork:
    """One CIDR as Go's ParseCIDR takes it, rebuilt from its integer and prefix length."""
    if "%" in element:
        raise AnnotationError(key, value, f"{element!r} has an IPv6 zone; a CIDR cannot carry one")
    if "/" not in element:
        raise AnnotationError(key, value, f"{element!r} is not a CIDR (address/prefix-length)")
    if not CIDR_SHAPE.fullmatch(element):
        raise AnnotationError(key, value, f"{element!r} is not a CIDR (address/decimal prefix length)")
    try:
        parsed = ipaddress.ip_network(element, strict=False)
    except ValueError as exc:
        raise AnnotationError(key, value, f"{element!r} is not a CIDR: {exc}") from None
    network_type = ipaddress.IPv4Network if parsed.version == 4 else ipaddress.IPv6Network
    return network_type((int(parsed.network_address), parsed.prefixlen))


def augment_excluded_inbound(ports: PortList) -> tuple[int, ...]:
    """Istio 1.6: the given ports (default 15020), then 15020, 15021, 15090, de-duplicated."""
    return tuple(dict.fromkeys([*ports.ports, *ALWAYS_EXCLUDED_INBOUND]))


def redirect_spec_from_annotations(annotations: Mapping[str, str]) -> RedirectSpec:
    """Validate in Istio's order: mode, include CIDRs, include ports, exclude CIDRs, exclude
    inbound ports, exclude outbound ports, excluded interfaces (today's Istio); annotations
    extensions claim are parsed after these, by their extensions. The first bad value raises."""
    origins: dict[str, str] = {}

    def get(field_name: str, key: str, default: str) -> str:
        if key in annotations:
            origins[field_name] = f"annotation {key}"
            return annotations[key]
        origins[field_name] = "default"
        return default

    mode = get("mode", INTERCEPTION_MODE, "REDIRECT")
    if not MODE_NAME.fullmatch(mode):
        raise AnnotationError(INTERCEPTION_MODE, mode, "expected an interception mode name such as REDIRECT")
    include_cidrs = parse_cidr_list(
        INCLUDE_OUTBOUND_IP_RANGES, get("include_outbound", INCLUDE_OUTBOUND_IP_RANGES, "*"), allow_all=True
    )
    include_ports = parse_port_list(
        INCLUDE_INBOUND_PORTS, get("include_inbound_ports", INCLUDE_INBOUND_PORTS, "*"), allow_all=True
    )
    exclude_cidrs = parse_cidr_list(
        EXCLUDE_OUTBOUND_IP_RANGES, get("exclude_outbound", EXCLUDE_OUTBOUND_IP_RANGES, ""), allow_all=False
    )
    exclude_in = parse_port_list(
        EXCLUDE_INBOUND_PORTS, get("exclude_inbound_ports", EXCLUDE_INBOUND_PORTS, "15020"), allow_all=False
    )
    exclude_out = parse_port_list(
        EXCLUDE_OUTBOUND_PORTS, get("exclude_outbound_ports", EXCLUDE_OUTBOUND_PORTS, "15020"), allow_all=False
    )
    include_out = parse_port_list(
        INCLUDE_OUTBOUND_PORTS, get("include_outbound_ports", INCLUDE_OUTBOUND_PORTS, ""), allow_all=False
    )
    excluded_interfaces = parse_interfaces(EXCLUDE_INTERFACES, get("exclude_interfaces", EXCLUDE_INTERFACES, ""))
    return RedirectSpec(
        mode=mode,
        include_outbound=include_cidrs,
        exclude_outbound=exclude_cidrs,
        include_inbound_ports=include_ports,
        exclude_inbound_ports=augment_excluded_inbound(exclude_in),
        exclude_outbound_ports=exclude_out.ports,
        include_outbound_ports=include_out.ports,
        exclude_interfaces=excluded_interfaces,
        origins=origins,
    )


class AnnotationRedirectSpec:
    """Built-in plugin: the redirect parameters come from the pod's Istio annotations."""

    @hookimpl(trylast=True)
    def meshcni_redirect_spec(self, pod: PodInfo, config: PluginConfig) -> RedirectSpec:
        spec = redirect_spec_from_annotations(pod.annotations)
        proxy = proxy_identity(pod)  # today's Istio: the istio-proxy container's securityContext
        dns_capture, dns_origin = dns_capture_of(pod, config)  # today's Istio: ISTIO_META_DNS_CAPTURE
        origins = {**spec.origins, "proxy_uids": proxy.uid_origin, "proxy_gids": proxy.gid_origin,
                   "dns_capture": dns_origin, "dns_port": DNS_PORT_ORIGIN, "dns_servers": DNS_SERVERS_ORIGIN}
        return replace(spec, proxy_uids=(str(proxy.uid),), proxy_gids=(str(proxy.gid),), dns_capture=dns_capture,
                       origins=origins)
