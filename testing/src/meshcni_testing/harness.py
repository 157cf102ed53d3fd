"""What the meshcni pytest plugin's fixtures return (``pytest_plugin``), importable without pytest:
``build_harness`` (a pipeline with the core's built-ins, named extensions, your plugins and a
recording backend) and ``make_pod`` (a pod the seed rules redirect, unless you override).

Nothing touches the kernel: the recording backend keeps the plans it was asked to apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshcni_hooks import hookimpl
from meshcni_hooks.types import BackendInfo, NetnsFacts, PodInfo, RulePlan, Target

RECORDING = "recording"


@dataclass
class RecordingBackend:
    """Keeps every plan instead of applying it; ``missing`` compares against the last one."""

    name: str = RECORDING
    applied: list[RulePlan] = field(default_factory=list)
    torn_down: list[Target] = field(default_factory=list)

    def apply(self, plan: RulePlan, target: Target) -> None:
        self.applied.append(plan)

    def teardown(self, target: Target, hints: RulePlan | None) -> None:
        self.torn_down.append(target)

    def missing(self, plan: RulePlan, target: Target) -> list[str]:
        return [] if self.applied and self.applied[-1] == plan else ["plan differs from the last applied"]

    def host_problems(self) -> list[str]:
        return []

    def transaction(self, plan: RulePlan) -> str:
        return repr(plan)


class _RecordingPlugin:
    def __init__(self, backend: RecordingBackend):
        self.backend = backend

    @hookimpl
    def meshcni_register_backends(self) -> list[BackendInfo]:
        return [BackendInfo(name=RECORDING, factory=lambda: self.backend, provider="meshcni_testing.harness")]


@dataclass
class Harness:
    pipeline: Any
    backend: RecordingBackend

    def add(self, pod: PodInfo, facts: NetnsFacts | None = None) -> Any:
        """Run ADD in-process for ``pod``; returns the Decision (verdicts, spec, plan)."""
        return self.pipeline.add(Target(netns="/nonexistent"), pod, facts or NetnsFacts(interfaces=("lo", "eth0")))


# One value for every redirect annotation the core reads (dual-stack ranges); tests that exercise
# extensions add those extensions' own annotations to it.
EVERY_CORE_REDIRECT_ANNOTATION = {
    "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
    "traffic.sidecar.istio.io/excludeInboundPorts": "3306",
    "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8,fd00::/8",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
    "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
}


def make_pod(**overrides: Any) -> PodInfo:
    base = PodInfo(
        namespace="default",
        name="app-1",
        uid="0000-1111",
        annotations={"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]})},
        containers=("app", "istio-proxy"),
        init_containers=("istio-validation",),
        source="test",
    )
    annotations = overrides.pop("annotations", None)
    pod = replace(base, **overrides)
    if annotations is not None:
        pod = replace(pod, annotations={**base.annotations, **annotations})
    return pod


def build_harness(*plugins: object, extensions: tuple[str, ...] = (), **netconf: Any) -> Harness:
    from meshcni_core import extensions as loader
    from meshcni_core.hookcalls import HookCalls
    from meshcni_core.pipeline import Pipeline

    backend = RecordingBackend()
    pm = loader.new_manager(extensions)
    pm.register(_RecordingPlugin(backend), name="testing:recording")
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test:{index}:{type(plugin).__name__}")
    pm.check_pending()
    conf: Mapping[str, Any] = {"cniVersion": "1.0.0", "name": "test", "type": "istio-cni",
                               "backend": RECORDING, **netconf}
    config = HookCalls(pm).load_config(conf, {})
    return Harness(Pipeline(pm, config), backend)
