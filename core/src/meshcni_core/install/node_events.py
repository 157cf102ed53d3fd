"""Events about this node, as ``kubectl describe node`` lists them.

The API server keeps events about a cluster-scoped object in the ``default`` namespace, where
the kubelet writes its own node events; install-cni's role may create events there and nowhere
else. They are keyed as the kubelet keys its node events (the node's name as its uid), which is
what ``kubectl describe node`` looks for.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

log = logging.getLogger("meshcni.install")
COMPONENT = "istio-cni-node"
NAMESPACE = "default"  # the only namespace a core/v1 event about a node may be in


def record(api_client: Any, node_name: str, reason: str, message: str, kind: str = "Normal") -> bool:
    """Create the Event; a failure is logged, never raised (an Event only reports)."""
    from kubernetes import client

    now = datetime.datetime.now(datetime.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{node_name}.", namespace=NAMESPACE),
        involved_object=client.V1ObjectReference(kind="Node", name=node_name, uid=node_name, api_version="v1"),
        reason=reason, message=message, type=kind, count=1, first_timestamp=now, last_timestamp=now,
        source=client.V1EventSource(component=COMPONENT, host=node_name),
        reporting_component=COMPONENT, reporting_instance=node_name,
    )
    try:
        client.CoreV1Api(api_client).create_namespaced_event(NAMESPACE, event)
    except Exception as exc:  # noqa: BLE001 - the log line carries the same news
        log.warning("cannot record the %s event on node %s: %s", reason, node_name, exc)
        return False
    return True
