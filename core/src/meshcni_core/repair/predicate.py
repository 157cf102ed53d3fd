"""Is this pod broken - started without its redirect rules? (istio-cni-behavior.md §6.2)

Istio 1.6's rule, on the pod as the API returns it (plain JSON): the pod carries the sidecar
annotation (when a filter is set), and one of its matching init-container statuses is not a
successful termination *now* while its *last* termination has the configured exit code and
message. That only fires after the validation container has failed and been restarted once;
``early`` (opt-in) also accepts its *current* termination with the exit code, so a pod is caught
on the first failure. Native sidecars (init containers with ``restartPolicy: Always``, such as
today's istio-proxy) are never taken for the failing init container, whatever the name filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BrokenPodFilter:
    sidecar_annotation: str = "sidecar.istio.io/status"
    init_container_name: str = "istio-validation"
    termination_message: str = ""
    exit_code: int = 126
    early: bool = False


def _terminated_matches(terminated: Mapping[str, Any] | None, f: BrokenPodFilter) -> bool:
    if not terminated:
        return False
    if f.exit_code and terminated.get("exitCode") != f.exit_code:
        return False
    if f.termination_message and (terminated.get("message") or "").strip() != f.termination_message.strip():
        return False
    return True


def native_sidecars(pod: Mapping[str, Any]) -> set[str]:
    """Init containers with ``restartPolicy: Always`` (today's istio-proxy on Kubernetes 1.28+):
    they keep running beside the app, so a restart of theirs is no failed initialisation."""
    inits = (pod.get("spec") or {}).get("initContainers") or []
    return {str(c.get("name")) for c in inits if c.get("restartPolicy") == "Always"}


def is_broken(pod: Mapping[str, Any], f: BrokenPodFilter) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if f.sidecar_annotation and f.sidecar_annotation not in annotations:
        return False
    sidecars = native_sidecars(pod)
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if f.init_container_name and status.get("name") != f.init_container_name:
            continue
        if status.get("name") in sidecars:
            continue
        current = (status.get("state") or {}).get("terminated")
        if current and (current.get("reason") == "Completed" or current.get("exitCode") == 0):
            continue  # it succeeded in the end: never touch such a pod
        last = (status.get("lastState") or {}).get("terminated")
        if _terminated_matches(last, f):
            return True
        if f.early and _terminated_matches(current, f):
            return True
    return False
