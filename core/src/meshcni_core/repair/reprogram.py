"""Re-apply a running pod's redirect rules: the ``reprogram`` repair policy, run by the node agent.

A pod that started without its rules (the plugin was missing from the chain, or failed) has its
``istio-validation`` init container failing and restarted by kubelet. Programming the pod's
network namespace now lets the next restart pass, and the pod starts without being deleted.

The namespace is found by the pod's IPs among the runtime's pinned network namespaces
(``/var/run/netns`` for containerd and CRI-O, which the DaemonSet mounts): exactly one of them
must hold every pod IP on its primary interface (``eth0``, the interface kubelet names in
CNI_IFNAME for the pod's network, whose addresses the API's podIPs report). A namespace holding
an IP on another interface (a secondary network, or a neighbour with NET_ADMIN adding it) does
not count, and two namespaces claiming the IPs are refused as ambiguous: nothing is programmed
rather than the wrong pod. The rules are the ones an ADD under this node's installed netconf
would apply.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshcni_core.pipeline import Pipeline
from meshcni_core.pods.lookup import pod_from_manifest
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.netns import entered
from meshcni_hooks.types import Target

log = logging.getLogger("meshcni.repair")
NETNS_DIR = "/var/run/netns"
PRIMARY_INTERFACE = "eth0"


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(entry.get("ip")) for entry in status.get("podIPs") or [] if entry.get("ip")]
    return ips or ([str(status["podIP"])] if status.get("podIP") else [])


def addresses_by_interface(path: str) -> dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Every address of the namespace ``path``, by interface name."""
    from pyroute2 import IPRoute

    found: dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    with entered(path), IPRoute() as ipr:  # the netlink socket belongs to the namespace it is opened in
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for entry in ipr.get_addr():
            address = entry.get_attr("IFA_LOCAL") or entry.get_attr("IFA_ADDRESS")
            found.setdefault(str(names.get(entry["index"], "")), set()).add(ipaddress.ip_address(address))
    return found


def find_netns(ips: Iterable[str], directory: str = NETNS_DIR, interface: str = PRIMARY_INTERFACE) -> str:
    """The one network namespace in ``directory`` whose ``interface`` holds every one of ``ips``;
    ``MeshcniError`` when none does, or more than one (ambiguous)."""
    wanted = {ipaddress.ip_address(ip) for ip in ips}
    listed = ", ".join(sorted(str(ip) for ip in wanted))
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    matches = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            addresses = addresses_by_interface(path)
        except (OSError, MeshcniError) as exc:  # not a namespace, or gone meanwhile
            log.debug("skipping %s: %s", path, exc)
            continue
        if wanted <= addresses.get(interface, set()):
            matches.append(path)
    if not matches:
        raise MeshcniError(f"no network namespace in {directory} holds {listed} on {interface}")
    if len(matches) > 1:
        raise MeshcniError(f"{len(matches)} network namespaces hold {listed} on {interface} "
                           f"({', '.join(matches)}): ambiguous, none is programmed")
    return matches[0]


class Reprogrammer:
    """``pipeline`` gives the node's pipeline (the agent's, for the installed netconf)."""

    def __init__(self, pipeline: Callable[[], Pipeline], netns_dir: str = NETNS_DIR):
        self.pipeline = pipeline
        self.netns_dir = netns_dir

    def __call__(self, pod: Mapping[str, Any]) -> str:
        """Program the pod (JSON as the API returns it); returns what was done."""
        ips = pod_ips(pod)
        info = pod_from_manifest(pod, source="api")
        if not ips:
            raise MeshcniError(f"{info.namespace}/{info.name} has no IP yet: its network namespace cannot be found")
        try:
            path = find_netns(ips, self.netns_dir)
        except MeshcniError as exc:
            log.warning("not reprogramming %s/%s: %s", info.namespace, info.name, exc.msg)
            raise MeshcniError(f"{exc.msg} ({info.namespace}/{info.name})") from None
        target = Target(netns=path, container_id=info.uid, ifname=PRIMARY_INTERFACE)
        decision = self.pipeline().add(target, info)
        if not decision.redirect:
            return "not redirected under this node's netconf"
        log.info("reprogrammed %s/%s in %s", info.namespace, info.name, path)
        return "reprogrammed"
