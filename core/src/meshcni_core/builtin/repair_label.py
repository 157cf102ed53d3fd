"""Built-in plugin: the ``label`` repair policy (Istio's --label-pods), done safely.

Only the label is merge-patched (Istio 1.6 updated the whole object and hit conflicts); a pod that
already carries the label key is left alone; an Event says what happened, once it has.
"""

from __future__ import annotations

import logging

from meshcni_hooks import hookimpl
from meshcni_hooks.types import BrokenPod, RepairActions, RepairPolicy, RepairSettings

log = logging.getLogger("meshcni.repair")


def label_broken_pod(pod: BrokenPod, actions: RepairActions, settings: RepairSettings) -> str:
    key, value = settings.broken_pod_label_key, settings.broken_pod_label_value
    if key in pod.labels:
        return "already labelled"
    actions.label(pod, {key: value})
    # The Event says what was done: only after the server took the patch, which stands whether or
    # not the Event can be recorded (a failure is logged, and the pod is not labelled twice).
    try:
        actions.event(pod, "LabelBrokenPod",
                      f"istio-cni did not program this pod's traffic redirection; labelled {key}={value}")
    except Exception as exc:  # noqa: BLE001 - throttling, network: the label is there all the same
        log.warning("%s/%s labelled, but its Event could not be recorded: %s", pod.namespace, pod.name, exc)
    return "labelled"


class LabelPolicy:
    @hookimpl(trylast=True)
    def meshcni_register_repair_policies(self) -> list[RepairPolicy]:
        return [RepairPolicy("label", label_broken_pod, "label broken pods (merge-patch of the label only)")]
