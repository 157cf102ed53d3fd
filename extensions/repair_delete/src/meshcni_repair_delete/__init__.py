"""The ``delete`` repair policy."""

from __future__ import annotations

import logging

from meshcni_hooks import hookimpl
from meshcni_hooks.types import BrokenPod, RepairActions, RepairPolicy, RepairSettings

log = logging.getLogger("meshcni.repair")


def delete_broken_pod(pod: BrokenPod, actions: RepairActions, settings: RepairSettings) -> str:
    actions.delete(pod)  # preconditions: this UID and resourceVersion only
    # The Event says what was done: only after the server took the delete, which stands whether or
    # not the Event can be recorded (a failure is logged).
    try:
        actions.event(pod, "DeleteBrokenPod",
                      "istio-cni did not program this pod's traffic redirection; deleted it so it is recreated")
    except Exception as exc:  # noqa: BLE001 - throttling, network: the pod is deleted all the same
        log.warning("%s/%s deleted, but its Event could not be recorded: %s", pod.namespace, pod.name, exc)
    return "deleted"


class DeletePolicy:
    @hookimpl
    def meshcni_register_repair_policies(self) -> list[RepairPolicy]:
        return [RepairPolicy("delete", delete_broken_pod, "delete broken pods (UID and resourceVersion preconditions)",
                             provider="meshcni-repair-delete")]
