"""Lift this node's readiness taint once the plugin can serve its pods.

A node born with the taint (default ``cni.istio.io/not-ready:NoSchedule``) gets no ordinary pod
until install-cni removes it, and install-cni removes it only once the plugin is installed,
chained and the node agent answers STATUS as ready - so no pod starts before its redirection can
be programmed. Only this node's taint is touched: the manifest's ValidatingAdmissionPolicy
(``manifest/node_taint_policy.py``) refuses the identity anything else.

The removal is a merge patch carrying the node's resourceVersion, so a taint someone adds
meanwhile is never overwritten (the server answers 409); a conflict is retried from a fresh read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from meshcni_core.install import node_events

log = logging.getLogger("meshcni.install")
DEFAULT_TAINT_KEY = "cni.istio.io/not-ready"
REASON = "ReadinessTaintRemoved"
CONFLICT_RETRIES = 5


class TaintError(RuntimeError):
    pass


def remove_taint(api_client: Any, node_name: str, key: str) -> bool:
    """Remove every taint with ``key`` from ``node_name``; True when one was there."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    for _ in range(CONFLICT_RETRIES):
        node = api_client.sanitize_for_serialization(core.read_node(node_name))
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != key]
        if len(kept) == len(taints):
            return False
        patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": kept}}
        try:
            core.patch_node(node_name, patch, _content_type="application/merge-patch+json")
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
            log.info("node %s changed while lifting its taint %s; retrying", node_name, key)
    raise TaintError(f"node {node_name} kept changing; its taint {key} is still there")


def agent_answers_ready(socket_path: str, netconf: dict[str, Any]) -> bool:
    """The node agent, asked as the runtime asks (CNI STATUS), says it can serve ADDs: the plugin is
    installed and chained, the kubeconfig written, and the agent listening."""
    import json

    from meshcni_core.agent.client import call_agent

    try:
        reply = call_agent(socket_path, {"CNI_COMMAND": "STATUS"},
                           json.dumps({**netconf, "cniVersion": "1.1.0"}).encode(), timeout=10)
    except Exception:  # noqa: BLE001 - not answering is not ready
        return False
    return reply is not None and reply[0] == 0


def lift_when_ready(api_client: Callable[[], Any], node_name: str, key: str, ready: Callable[[], bool],
                    stop: threading.Event, interval: float = 1.0) -> bool:
    """Wait until ``ready()``, then remove the taint and record an Event on the node. Retries API
    failures (the kubeconfig may not be written yet, the server may be away) until ``stop``."""
    while not stop.is_set():
        if ready():
            try:
                removed = remove_taint(api_client(), node_name, key)
            except Exception as exc:  # noqa: BLE001 - any failure is retried; the taint keeps pods away meanwhile
                log.warning("cannot remove the readiness taint %s from node %s yet: %s", key, node_name, exc)
            else:
                if removed:
                    log.info("removed the readiness taint %s from node %s", key, node_name)
                    node_events.record(api_client(), node_name, REASON,
                                       f"istio-cni is ready on this node: removed the taint {key}")
                return removed
        stop.wait(interval)
    return False
