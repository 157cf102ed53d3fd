"""The node agent's warm pod cache: the pods of this node, listed once and then watched.

A pod's ADD then needs no API call when the runtime did not pass its annotations. The watch is
field-selected to the node (``spec.nodeName``); a dropped watch is resumed from the last
resourceVersion seen; 410 Gone (history compacted) means list again. A pod missing from the cache
(not seen yet), whose UID differs (replaced under the same name) or asked for without a UID is read
with a GET as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from meshcni_core.pods.lookup import pod_from_api_object
from meshcni_hooks.types import PodInfo

log = logging.getLogger("meshcni.pods")
WATCH_TIMEOUT_SECONDS = 300
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class PodCache:
    """``client_factory`` is asked for an API client at every (re)connect, so a kubeconfig
    rewritten with a rotated token is picked up."""

    def __init__(self, client_factory: Callable[[], Any], node_name: str):
        self.client_factory = client_factory
        self.node_name = node_name
        self.synced = threading.Event()
        self.lists = 0  # how many full lists were needed (1 unless the history was compacted)
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, namespace: str, name: str, uid: str) -> PodInfo | None:
        """The cached pod of that name when it is the pod with that UID. Without a UID (a runtime
        that did not pass K8S_POD_UID) it is a miss, never a match on the name alone: the pod
        under that name may be a replacement the watch has not caught up with."""
        if not uid or not self.synced.is_set():
            return None
        with self._lock:
            pod = self._pods.get((namespace, name))
        if pod is None or pod.uid != uid:
            return None
        return pod

    def start(self) -> PodCache:
        self._thread = threading.Thread(target=self._run, daemon=True, name="meshcni-pod-cache")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def _list(self, api: Any) -> str:
        listed = api.list_pod_for_all_namespaces(field_selector=self._selector())
        pods = {(p.metadata.namespace, p.metadata.name): pod_from_api_object(p) for p in listed.items}
        with self._lock:
            self._pods = pods
        self.lists += 1
        self.synced.set()
        log.info("pod cache: %d pods on node %s", len(pods), self.node_name)
        return str(listed.metadata.resource_version)

    def _run(self) -> None:
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        resource_version = ""
        failures = 0
        while not self._stop.is_set():
            try:
                api = client.CoreV1Api(self.client_factory())
                if not resource_version:
                    resource_version = self._list(api)
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    api.list_pod_for_all_namespaces, field_selector=self._selector(),
                    resource_version=resource_version, timeout_seconds=WATCH_TIMEOUT_SECONDS,
                ):
                    resource_version = self._apply(event) or resource_version
                    failures = 0
                # the stream ended (timeout or dropped): resume from where we were
            except ApiException as exc:
                if exc.status == 410:
                    log.info("pod cache: history compacted (410 Gone); listing again")
                    resource_version = ""
                    continue
                failures += 1
                log.warning("pod cache: watch failed (HTTP %s); retrying", exc.status)
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind: retry
                failures += 1
                log.warning("pod cache: watch failed (%s); retrying", exc)
            if failures:
                self._stop.wait(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])

    def _apply(self, event: dict[str, Any]) -> str:
        obj = event["object"]
        key = (obj.metadata.namespace, obj.metadata.name)
        with self._lock:
            if event["type"] == "DELETED":
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod_from_api_object(obj)
        return str(obj.metadata.resource_version or "")


def wait_synced(cache: PodCache, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache.synced.wait(timeout=0.05):
            return True
    return False
