"""RepairActions against the API server, through the kubernetes client.

The label is a merge patch of ``metadata.labels`` that also carries the judged pod's
``metadata.uid`` and ``metadata.resourceVersion``: the API server takes a resourceVersion in a
patch as an optimistic lock (409 Conflict when the pod changed since, which a replacement created
under the same name always has) and refuses a different (immutable) uid with 422. The delete
carries the same two as preconditions (409 for a replacement or a changed pod). Events are
``Warning`` events from ``meshcni-repair`` on the pod. Reprogramming needs the pod's node:
``NodeRepairActions`` is what the node agent hands policies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import BrokenPod

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "meshcni-repair"


class ApiRepairActions:
    def __init__(self, api_client: Any):
        from kubernetes import client

        self._client = client
        self._api = client.CoreV1Api(api_client)

    def label(self, pod: BrokenPod, labels: Mapping[str, str]) -> None:
        patch = {"metadata": {"uid": pod.uid, "resourceVersion": pod.resource_version, "labels": dict(labels)}}
        self._api.patch_namespaced_pod(pod.name, pod.namespace, patch, _content_type=MERGE_PATCH)

    def delete(self, pod: BrokenPod) -> None:
        c = self._client
        options = c.V1DeleteOptions(preconditions=c.V1Preconditions(uid=pod.uid, resource_version=pod.resource_version))
        self._api.delete_namespaced_pod(pod.name, pod.namespace, body=options)

    def event(self, pod: BrokenPod, reason: str, message: str) -> None:
        c = self._client
        now = datetime.now(UTC)
        body = c.CoreV1Event(
            metadata=c.V1ObjectMeta(generate_name=f"{pod.name}.", namespace=pod.namespace),
            involved_object=c.V1ObjectReference(kind="Pod", api_version="v1", name=pod.name,
                                                namespace=pod.namespace, uid=pod.uid,
                                                resource_version=pod.resource_version),
            reason=reason, message=message, type="Warning", source=c.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, first_timestamp=now, last_timestamp=now, count=1,
        )
        self._api.create_namespaced_event(pod.namespace, body)

    def reprogram(self, pod: BrokenPod) -> str:
        raise MeshcniError("reprogramming a pod needs its node: only the node agent (install-cni with "
                           "REPAIR_ENABLED=true) can enter its network namespace")


class NodeRepairActions(ApiRepairActions):
    """The node agent's actions: ``reprogrammer`` (``repair.reprogram.Reprogrammer``) programs a pod
    of this node from its JSON, which is read afresh so that its IPs and annotations are current."""

    def __init__(self, api_client: Any, reprogrammer: Callable[[Mapping[str, Any]], str]):
        super().__init__(api_client)
        self._reprogrammer = reprogrammer

    def reprogram(self, pod: BrokenPod) -> str:
        response: Any = self._api.read_namespaced_pod(pod.name, pod.namespace, _preload_content=False)
        current = json.loads(response.data)
        if (current.get("metadata") or {}).get("uid") != pod.uid:  # replaced under the same name: drop it
            raise self._client.exceptions.ApiException(status=409, reason=f"{pod.namespace}/{pod.name} was replaced")
        return self._reprogrammer(current)
