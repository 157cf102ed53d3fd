"""Re-apply a running pod's redirect rules: the ``reprogram`` repair policy, run by the node agent.

A pod that started without its rules (the plugin was missing from the chain, or failed) has its
``istio-validation`` init container failing and restarted by kubelet. Programming the pod's
network namespace now lets the next restart pass, and the pod starts without being deleted.

The namespace is found by the pod's IP among the runtime's pinned network namespaces
(``/var/run/netns`` for containerd and CRI-O, which the DaemonSet mounts); the rules are the
ones an ADD under this node's installed netconf would apply.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshcni_core import netns
from meshcni_core.pipeline import Pipeline
from meshcni_core.pods.lookup import pod_from_manifest
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import Target

log = logging.getLogger("meshcni.repair")
NETNS_DIR = "/var/run/netns"


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(entry.get("ip")) for entry in status.get("podIPs") or [] if entry.get("ip")]
    return ips or ([str(status["podIP"])] if status.get("podIP") else [])


def find_netns(ips: Iterable[str], directory: str = NETNS_DIR) -> str | None:
    """The network namespace in ``directory`` holding one of ``ips``, or None."""
    wanted = {ipaddress.ip_address(ip) for ip in ips}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return None
    for name in names:
        path = os.path.join(directory, name)
        try:
            facts = netns.read_facts(path)
        except (OSError, MeshcniError) as exc:  # not a namespace, or gone meanwhile
            log.debug("skipping %s: %s", path, exc)
            continue
        if wanted & {ipaddress.ip_address(a) for a in (*facts.ipv4_addresses, *facts.ipv6_addresses)}:
            return path
    return None


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
        path = find_netns(ips, self.netns_dir)
        if path is None:
            raise MeshcniError(f"no network namespace in {self.netns_dir} holds {', '.join(ips)} "
                               f"({info.namespace}/{info.name})")
        decision = self.pipeline().add(Target(netns=path, container_id=info.uid, ifname="eth0"), info)
        if not decision.redirect:
            return "not redirected under this node's netconf"
        log.info("reprogrammed %s/%s in %s", info.namespace, info.name, path)
        return "reprogrammed"
