"""This node's readiness taint: lifted once the plugin can serve its pods, put back when it cannot.

A node born with the taint (default ``cni.istio.io/not-ready:NoSchedule``) gets no ordinary pod
until install-cni removes it, and install-cni removes it only once the plugin is installed,
chained and the node agent answers STATUS as ready - so no pod starts before its redirection can
be programmed. Later, when the node stops being able to serve pods (our conf entry lost and not
restorable, an edit war, the agent not ready) for longer than a grace period, install-cni adds
the taint back so no new pod is scheduled to start bare, and lifts it again once ready; each
change is an Event on the node. Only this node's taint is touched: the manifest's
ValidatingAdmissionPolicy (``manifest/node_taint_policy.py``) refuses the identity anything else.

Each change is a merge patch carrying the node's resourceVersion, so a taint someone changes
meanwhile is never overwritten (the server answers 409); a conflict is retried from a fresh read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from meshcni_core.install import node_events

log = logging.getLogger("meshcni.install")
DEFAULT_TAINT_KEY = "cni.istio.io/not-ready"
REASON = "ReadinessTaintRemoved"
REASON_ADDED = "ReadinessTaintAdded"
CONFLICT_RETRIES = 5
Taints = list[dict[str, Any]]


class TaintError(RuntimeError):
    pass


def remove_taint(api_client: Any, node_name: str, key: str) -> bool:
    """Remove every taint with ``key`` from ``node_name``; True when one was there."""
    return _change_taints(api_client, node_name, key, lambda taints: [t for t in taints if t.get("key") != key])


def add_taint(api_client: Any, node_name: str, key: str) -> bool:
    """Add ``key:NoSchedule`` to ``node_name``; True when it was not there yet."""
    return _change_taints(api_client, node_name, key, lambda taints: (
        None if any(t.get("key") == key for t in taints) else [*taints, {"key": key, "effect": "NoSchedule"}]))


def _change_taints(api_client: Any, node_name: str, key: str, change: Callable[[Taints], Taints | None]) -> bool:
    """Apply ``change`` to the node's taints (None or the same count: nothing to do); True when patched."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    for _ in range(CONFLICT_RETRIES):
        node = api_client.sanitize_for_serialization(core.read_node(node_name))
        taints = node.get("spec", {}).get("taints") or []
        changed = change(taints)
        if changed is None or len(changed) == len(taints):
            return False
        patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": changed}}
        try:
            core.patch_node(node_name, patch, _content_type="application/merge-patch+json")
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
            log.info("node %s changed while changing its taint %s; retrying", node_name, key)
    raise TaintError(f"node {node_name} kept changing; its taint {key} was not changed")


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


def guard(api_client: Callable[[], Any], node_name: str, key: str, ready: Callable[[], bool],
          problems: Callable[[], list[str]], stop: threading.Event, grace: float, interval: float = 1.0) -> None:
    """Lift the taint once ``ready()``; from then on, put it back when the node has
    not been ready for ``grace`` seconds, and lift it again once ready, until ``stop``. The API is
    called only on a change (and retried while it fails)."""
    tainted = True  # born with it, or not known: lifted (or found absent) at the first ready
    not_ready_since: float | None = None
    while not stop.is_set():
        if ready():
            not_ready_since = None
            if tainted:
                tainted = _lift(api_client, node_name, key) is None
        else:
            now = time.monotonic()
            not_ready_since = now if not_ready_since is None else not_ready_since
            if not tainted and now - not_ready_since >= grace:
                tainted = _restore(api_client, node_name, key, grace, problems())
        stop.wait(interval)


def _lift(api_client: Callable[[], Any], node_name: str, key: str) -> bool | None:
    """Remove the taint (an Event when it was there); None when the API call failed."""
    try:
        removed = remove_taint(api_client(), node_name, key)
    except Exception as exc:  # noqa: BLE001 - any failure is retried; the taint keeps pods away meanwhile
        log.warning("cannot remove the readiness taint %s from node %s yet: %s", key, node_name, exc)
        return None
    if removed:
        log.info("removed the readiness taint %s from node %s", key, node_name)
        _event(api_client, node_name, REASON, f"istio-cni is ready on this node: removed the taint {key}")
    return removed


def _restore(api_client: Callable[[], Any], node_name: str, key: str, grace: float, problems: list[str]) -> bool:
    """Add the taint back (an Event when it was not there); False when the API call failed."""
    why = "; ".join(problems) or "the node agent does not answer STATUS as ready"
    try:
        added = add_taint(api_client(), node_name, key)
    except Exception as exc:  # noqa: BLE001 - retried at the next interval
        log.warning("cannot put the readiness taint %s back on node %s (not ready: %s): %s", key, node_name, why, exc)
        return False
    if added:
        log.warning("added the readiness taint %s to node %s: not ready for %.0fs: %s", key, node_name, grace, why)
        message = f"istio-cni cannot serve new pods on this node (not ready for {grace:.0f}s: {why})"
        _event(api_client, node_name, REASON_ADDED, f"{message}: added the taint {key}", kind="Warning")
    return True


def _event(api_client: Callable[[], Any], node_name: str, reason: str, message: str, kind: str = "Normal") -> None:
    try:
        node_events.record(api_client(), node_name, reason, message, kind=kind)
    except Exception as exc:  # noqa: BLE001 - the taint changed; only its Event is missing, logged here
        log.warning("cannot record the Event %s on node %s: %s", reason, node_name, exc)
