"""The repair controller: find pods that started without redirection and hand them to a policy.

Fixes Istio 1.6's defects (istio-cni-behavior.md §6, §8 D13): the work queue is keyed by
namespace/name, so repeated updates of a pod coalesce and the policy always sees its latest
state (re-checked before acting); failures back off per key (exponentially) under a global rate
limit; a pod is given up after ``max_attempts``. A write refused with 409 (its UID and
resourceVersion preconditions) is followed by a fresh read: the same UID means the pod only
changed (kubelet updates a crash-looping pod constantly), so it is judged again on its new state;
another UID (a replacement under the same name) or a 404 drops it, never acting on its successor.
The watch is node-scoped, resumed from the last resourceVersion, and relisted on 410 Gone.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshcni_core.repair.predicate import BrokenPodFilter, is_broken, native_sidecars
from meshcni_hooks.types import BrokenPod, RepairPolicy, RepairSettings

log = logging.getLogger("meshcni.repair")
WATCH_TIMEOUT_SECONDS = 300
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class RepairOptions:
    node_name: str = ""
    label_selectors: str = ""
    field_selectors: str = ""
    filter: BrokenPodFilter = field(default_factory=BrokenPodFilter)
    settings: RepairSettings = field(default_factory=RepairSettings)
    dry_run: bool = False
    max_attempts: int = 5
    rate_per_second: float = 10.0
    burst: int = 100

    def field_selector(self) -> str:
        terms = [f"spec.nodeName={self.node_name}"] if self.node_name else []
        terms += [t for t in self.field_selectors.split(",") if t]
        return ",".join(terms)


@dataclass
class RepairStats:
    broken_seen: int = 0
    repaired: dict[str, int] = field(default_factory=dict)  # "<policy>:<result>" -> count
    failures: int = 0
    given_up: int = 0


def broken_pod(pod: Mapping[str, Any]) -> BrokenPod:
    meta = pod.get("metadata") or {}
    return BrokenPod(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")), labels=dict(meta.get("labels") or {}),
    )


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.capacity = rate, float(burst)
        self.tokens, self.updated = float(burst), time.monotonic()

    def wait_time(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RepairController:
    def __init__(self, client_factory: Callable[[], Any], options: RepairOptions, policy: RepairPolicy,
                 actions_factory: Callable[[Any], Any]):
        self.client_factory = client_factory
        self.options = options
        self.policy = policy
        self.actions_factory = actions_factory
        self.stats = RepairStats()
        self._latest: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._handled: dict[tuple[str, str], str] = {}  # key -> UID repaired (its own update re-queues nothing)
        self._due: list[tuple[float, tuple[str, str]]] = []
        self._queued: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._bucket = TokenBucket(options.rate_per_second, options.burst)

    # -- one pod ----------------------------------------------------------------------------------

    def repair(self, pod: Mapping[str, Any], api_client: Any) -> str:
        """Re-check ``pod`` and apply the policy; returns what happened."""
        if not is_broken(pod, self.options.filter):
            return "not broken"
        target = broken_pod(pod)
        if self.options.dry_run:
            log.info("dry run: would %s %s/%s", self.policy.name, target.namespace, target.name)
            return "dry run"
        result = self.policy.act(target, self.actions_factory(api_client), self.options.settings)
        key = f"{self.policy.name}:{result}"
        self.stats.repaired[key] = self.stats.repaired.get(key, 0) + 1
        log.info("%s %s/%s: %s", self.policy.name, target.namespace, target.name, result)
        return result

    # -- one-shot mode ------------------------------------------------------------------------------

    def run_once(self) -> dict[str, str]:
        """List, repair every broken pod, and report: {namespace/name: outcome}. Errors are
        reported per pod; the caller decides the exit status."""
        import json

        from kubernetes import client

        api_client = self.client_factory()
        api: Any = client.CoreV1Api(api_client)
        listed = json.loads(api.list_pod_for_all_namespaces(
            field_selector=self.options.field_selector(), label_selector=self.options.label_selectors,
            _preload_content=False,
        ).data)
        outcomes: dict[str, str] = {}
        for item in listed.get("items") or []:
            pod = self.slim(item)
            if not is_broken(pod, self.options.filter):
                continue
            self.stats.broken_seen += 1
            target = broken_pod(pod)
            name = f"{target.namespace}/{target.name}"
            try:
                outcomes[name] = self.repair(pod, api_client)
            except Exception as exc:  # noqa: BLE001 - reported per pod
                self.stats.failures += 1
                outcomes[name] = f"failed: {_describe(exc)}"
        return outcomes

    # -- daemon mode --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: the watch blocks in long HTTP reads, so it runs on a daemon thread that
        is simply abandoned on stop; the worker finishes the pod in hand."""
        worker = threading.Thread(target=self._work, args=(stop,), daemon=True, name="meshcni-repair-worker")
        watcher = threading.Thread(target=self._watch, args=(stop,), daemon=True, name="meshcni-repair-watch")
        worker.start()
        watcher.start()
        stop.wait()
        with self._cond:
            self._cond.notify_all()
        worker.join(timeout=5)

    def observe(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        """Feed a pod's latest state (from a list or a watch event) to the queue."""
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        with self._cond:
            if deleted:
                self._latest.pop(key, None)
                self._attempts.pop(key, None)
                self._handled.pop(key, None)
                return
            self._latest[key] = pod
            if self._handled.get(key) == meta.get("uid"):
                return  # repaired already (e.g. our own label patch coming back as an update)
            if is_broken(pod, self.options.filter) and key not in self._queued:
                self.stats.broken_seen += 1
                self._enqueue(key, 0.0)

    def tracks(self, namespace: str, name: str) -> bool:
        """True while the controller holds a state for this pod (it forgets deleted pods)."""
        with self._cond:
            return (namespace, name) in self._latest

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queued)

    def _enqueue(self, key: tuple[str, str], delay: float) -> None:
        self._queued.add(key)
        heapq.heappush(self._due, (time.monotonic() + delay, key))
        self._cond.notify_all()

    def _work(self, stop: threading.Event) -> None:
        from kubernetes.client.exceptions import ApiException

        while not stop.is_set():
            with self._cond:
                while not stop.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = (self._due[0][0] - time.monotonic()) if self._due else 0.5
                    self._cond.wait(timeout=max(0.01, min(timeout, 0.5)))
                if stop.is_set():
                    return
                _, key = heapq.heappop(self._due)
                self._queued.discard(key)
                pod = self._latest.get(key)
                if pod is not None:  # in flight: its own update must not queue it again
                    self._handled[key] = str((pod.get("metadata") or {}).get("uid", ""))
            if pod is None:
                continue  # deleted meanwhile
            wait = self._bucket.wait_time()
            if wait and stop.wait(wait):
                return
            try:
                result = self.repair(pod, self.client_factory())
                with self._cond:
                    self._attempts.pop(key, None)
                    if result in ("not broken", "dry run"):
                        self._handled.pop(key, None)
            except ApiException as exc:
                if exc.status == 409:
                    self._after_conflict(key, pod)
                    continue
                if exc.status == 404:
                    log.info("%s/%s vanished before %s: dropped", *key, self.policy.name)
                    continue
                self._retry(key, _describe(exc))
            except Exception as exc:  # noqa: BLE001 - network and other failures: retry with back-off
                self._retry(key, _describe(exc))

    def _after_conflict(self, key: tuple[str, str], judged: Mapping[str, Any]) -> None:
        """The pod changed between our read and our write: judge it again on its current state if
        it is still the same pod (UID), drop it if it was replaced or is gone."""
        from kubernetes.client.exceptions import ApiException

        uid = str((judged.get("metadata") or {}).get("uid", ""))
        try:
            current = self.read_pod(*key)
        except ApiException as exc:
            if exc.status == 404:
                log.info("%s/%s vanished before %s: dropped", *key, self.policy.name)
                return
            self._retry(key, _describe(exc))
            return
        except Exception as exc:  # noqa: BLE001 - network failures: retry with back-off
            self._retry(key, _describe(exc))
            return
        if str((current.get("metadata") or {}).get("uid", "")) != uid:
            log.info("%s/%s was replaced under the same name before %s: dropped", *key, self.policy.name)
            return
        log.info("%s/%s changed before %s (HTTP 409): judging its current state", *key, self.policy.name)
        with self._cond:
            self._handled.pop(key, None)
            if key in self._latest:
                self._latest[key] = self.slim(current)
            if key not in self._queued:
                self._enqueue(key, FIRST_BACKOFF_SECONDS)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        import json

        from kubernetes import client

        response: Any = client.CoreV1Api(self.client_factory()).read_namespaced_pod(name, namespace,
                                                                                     _preload_content=False)
        pod: dict[str, Any] = json.loads(response.data)
        return pod

    def _retry(self, key: tuple[str, str], reason: str) -> None:
        self.stats.failures += 1
        with self._cond:
            self._handled.pop(key, None)
            attempts = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempts
            if attempts >= self.options.max_attempts:
                self.stats.given_up += 1
                log.warning("giving up on %s/%s after %d attempts: %s", *key, attempts, reason)
                self._attempts.pop(key, None)
                return
            delay = min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
            log.info("%s/%s: %s; retrying in %.1fs", *key, reason, delay)
            self._enqueue(key, delay)

    def slim(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """What the predicate and the policies read, and nothing else: a few hundred bytes per pod
        instead of the whole object (5,000 full pods held the controller at 200 MiB)."""
        meta = pod.get("metadata") or {}
        annotation = self.options.filter.sidecar_annotation
        annotations = meta.get("annotations") or {}
        name = self.options.filter.init_container_name
        statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
        sidecars = native_sidecars(pod)
        return {
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "uid", "resourceVersion", "labels")}
            | {"annotations": {annotation: ""} if annotation in annotations else {}},
            "status": {"initContainerStatuses": [s for s in statuses if (not name or s.get("name") == name)
                                                 and s.get("name") not in sidecars]},
        }

    def _watch(self, stop: threading.Event) -> None:
        """List, then watch from the list's resourceVersion, reading raw JSON: the client's models
        for thousands of pods cost more memory than the controller keeps."""
        import json

        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        resource_version = ""
        failures = 0
        while not stop.is_set():
            try:
                api: Any = client.CoreV1Api(self.client_factory())
                selectors = {"field_selector": self.options.field_selector(),
                             "label_selector": self.options.label_selectors}
                if not resource_version:
                    listed = json.loads(api.list_pod_for_all_namespaces(_preload_content=False, **selectors).data)
                    for item in listed.get("items") or []:
                        self.observe(self.slim(item))
                    resource_version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                response = api.list_pod_for_all_namespaces(
                    watch=True, resource_version=resource_version, timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    _preload_content=False, **selectors,
                )
                try:
                    for line in _lines(response):
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            raise ApiException(status=status.get("code", 500), reason=status.get("message", ""))
                        pod = event["object"]
                        self.observe(self.slim(pod), deleted=event["type"] == "DELETED")
                        resource_version = str(pod["metadata"].get("resourceVersion") or resource_version)
                        failures = 0
                        if stop.is_set():
                            return
                finally:
                    response.release_conn()
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = ""
                    continue
                failures += 1
                log.warning("repair watch failed (HTTP %s); retrying", exc.status)
            except Exception as exc:  # noqa: BLE001 - connection errors: retry
                failures += 1
                log.warning("repair watch failed (%s); retrying", exc)
            if failures:
                stop.wait(min(FIRST_BACKOFF_SECONDS * 2 ** failures, 5.0))


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-separated events of a watch response, as they arrive."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else f"{type(exc).__name__}: {exc}"
