"""The ``delete`` repair policy."""

from __future__ import annotations

from meshcni_hooks import hookimpl
from meshcni_hooks.types import BrokenPod, RepairActions, RepairPolicy, RepairSettings


def delete_broken_pod(pod: BrokenPod, actions: RepairActions, settings: RepairSettings) -> str:
    actions.delete(pod)  # preconditions: this UID and resourceVersion only
    # The Event says what was done: only after the server took the delete.
    actions.event(pod, "DeleteBrokenPod",
                  "istio-cni did not program this pod's traffic redirection; deleted it so it is recreated")
    return "deleted"


class DeletePolicy:
    @hookimpl
    def meshcni_register_repair_policies(self) -> list[RepairPolicy]:
        return [RepairPolicy("delete", delete_broken_pod, "delete broken pods (UID and resourceVersion preconditions)",
                             provider="meshcni-repair-delete")]
