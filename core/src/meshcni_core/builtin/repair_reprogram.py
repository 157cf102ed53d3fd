"""Built-in plugin: the ``reprogram`` repair policy (Istio's later repairPods), non-destructive.

The pod's rules are applied again in its network namespace by the node agent; its failing
``istio-validation`` init container then passes on kubelet's next restart. Nothing of the pod is
written through the API, so the agent's read-only identity suffices; an Event would need write
access, so the outcome is logged and counted instead.
"""

from __future__ import annotations

from meshcni_hooks import hookimpl
from meshcni_hooks.types import BrokenPod, RepairActions, RepairPolicy, RepairSettings


def reprogram_broken_pod(pod: BrokenPod, actions: RepairActions, settings: RepairSettings) -> str:
    return actions.reprogram(pod)


class ReprogramPolicy:
    @hookimpl(trylast=True)
    def meshcni_register_repair_policies(self) -> list[RepairPolicy]:
        return [RepairPolicy("reprogram", reprogram_broken_pod,
                             "apply the pod's rules again in its network namespace (node agent only)")]
