"""Example extension: an opt-out annotation and an outcome counter."""

from __future__ import annotations

from collections import Counter

from meshcni_hooks import hookimpl
from meshcni_hooks.types import Outcome, PluginConfig, PodInfo, Verdict

OPT_OUT = "acme.example/mesh-opt-out"


class AcmeOptOut:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    @hookimpl
    def meshcni_pod_verdict(self, pod: PodInfo, config: PluginConfig) -> Verdict | None:
        if pod.annotations.get(OPT_OUT, "").lower() == "true":
            return Verdict.skip("acme-opt-out", f"annotation {OPT_OUT}=true", source="acme-opt-out")
        return None

    @hookimpl
    def meshcni_report(self, outcome: Outcome) -> None:
        self.outcomes["redirected" if outcome.redirected else "passed"] += 1
