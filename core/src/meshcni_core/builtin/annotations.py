"""Istio's redirect annotations -> RedirectSpec, with Istio 1.6's defaults and list quirks.

Unlike Istio 1.6, an invalid value is an error that names the annotation and the value (1.6
logged it and let the pod run without redirection).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace

from meshcni_core.builtin.sidecar import proxy_identity
from meshcni_hooks import hookimpl
from meshcni_hooks.errors import AnnotationError
from meshcni_hooks.types import CidrList, IPNetwork, PluginConfig, PodInfo, PortList, RedirectSpec

INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
INCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
KUBEVIRT_INTERFACES = "traffic.sidecar.istio.io/kubevirtInterfaces"

# Ports Istio 1.6 always adds to the inbound exclusions (health, readiness, Prometheus).
ALWAYS_EXCLUDED_INBOUND = (15020, 15021, 15090)
DEFAULT_EXCLUDED_OUTBOUND = (15020,)
MODE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
DIGITS = re.compile(r"^[0-9]+$")
INTERFACE_NAME = re.compile(r"^[^/:\s,]{1,15}$")


def parse_port_list(key: str, value: str, *, allow_all: bool) -> PortList:
    """Istio's port list: ``*`` (if allowed), empty, or comma-separated decimal ports 0-65535.
    Elements may carry surrounding whitespace; an empty element (``"80,"``) is invalid."""
    if value == "*":
        if not allow_all:
            raise AnnotationError(key, value, "'*' is not allowed here; list the ports")
        return PortList(all=True)
    if value == "":
        return PortList()
    ports: list[int] = []
    for element in value.split(","):
        text = element.strip()
        if not DIGITS.match(text):
            raise AnnotationError(key, value, f"{element!r} is not a port number")
        port = int(text)
        if port > 65535:
            raise AnnotationError(key, value, f"port {port} is out of range 0-65535")
        if port not in ports:
            ports.append(port)
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
    networks: list[IPNetwork] = []
    for element in value.split(","):
        if "/" not in element:
            raise AnnotationError(key, value, f"{element!r} is not a CIDR (address/prefix-length)")
        try:
            network = ipaddress.ip_network(element, strict=False)
        except ValueError as exc:
            raise AnnotationError(key, value, f"{element!r} is not a CIDR: {exc}") from None
        if network not in networks:
            networks.append(network)
    return CidrList(networks=tuple(networks))


def augment_excluded_inbound(ports: PortList) -> tuple[int, ...]:
    """Istio 1.6: the given ports (default 15020), then 15020, 15021, 15090, de-duplicated."""
    return tuple(dict.fromkeys([*ports.ports, *ALWAYS_EXCLUDED_INBOUND]))


def parse_interfaces(key: str, value: str) -> tuple[str, ...]:
    if value == "":
        return ()
    names: list[str] = []
    for element in value.split(","):
        if not INTERFACE_NAME.match(element) or element in (".", ".."):
            raise AnnotationError(key, value, f"{element!r} is not a network interface name")
        if element not in names:
            names.append(element)
    return tuple(names)


def redirect_spec_from_annotations(annotations: Mapping[str, str]) -> RedirectSpec:
    """Validate in Istio's order: mode, include CIDRs, include ports, exclude CIDRs, exclude
    inbound ports, exclude outbound ports, kubevirt interfaces. The first bad value raises."""
    origins: dict[str, str] = {}

    def get(field_name: str, key: str, default: str) -> str:
        if key in annotations:
            origins[field_name] = f"annotation {key}"
            return annotations[key]
        origins[field_name] = "default"
        return default

    mode = get("mode", INTERCEPTION_MODE, "REDIRECT")
    if not MODE_NAME.match(mode):
        raise AnnotationError(INTERCEPTION_MODE, mode, "expected an interception mode such as REDIRECT or TPROXY")
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
    interfaces = parse_interfaces(KUBEVIRT_INTERFACES, get("kubevirt_interfaces", KUBEVIRT_INTERFACES, ""))
    return RedirectSpec(
        mode=mode,
        include_outbound=include_cidrs,
        exclude_outbound=exclude_cidrs,
        include_inbound_ports=include_ports,
        exclude_inbound_ports=augment_excluded_inbound(exclude_in),
        exclude_outbound_ports=exclude_out.ports,
        kubevirt_interfaces=interfaces,
        origins=origins,
    )


class AnnotationRedirectSpec:
    """Built-in plugin: the redirect parameters come from the pod's Istio annotations."""

    @hookimpl(trylast=True)
    def meshcni_redirect_spec(self, pod: PodInfo, config: PluginConfig) -> RedirectSpec:
        spec = redirect_spec_from_annotations(pod.annotations)
        proxy = proxy_identity(pod)  # today's Istio: the istio-proxy container's securityContext
        origins = {**spec.origins, "proxy_uids": proxy.uid_origin, "proxy_gids": proxy.gid_origin}
        return replace(spec, proxy_uids=(str(proxy.uid),), proxy_gids=(str(proxy.gid),), origins=origins)
