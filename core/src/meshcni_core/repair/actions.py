"""RepairActions against the API server, through the kubernetes client.

The label is a merge patch of ``metadata.labels`` alone; the delete carries UID and
resourceVersion preconditions, so the API server refuses it (409) for a replacement pod created
under the same name; Events are ``Warning`` events from ``meshcni-repair`` on the pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from meshcni_hooks.types import BrokenPod

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "meshcni-repair"


class ApiRepairActions:
    def __init__(self, api_client: Any):
        from kubernetes import client

        self._client = client
        self._api = client.CoreV1Api(api_client)

    def label(self, pod: BrokenPod, labels: Mapping[str, str]) -> None:
        self._api.patch_namespaced_pod(pod.name, pod.namespace, {"metadata": {"labels": dict(labels)}},
                                       _content_type=MERGE_PATCH)

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
