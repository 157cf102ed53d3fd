"""One CNI command through the hooks: config -> pod -> eligibility -> rule build -> apply -> report.

Failure policy (ARCHITECTURE.md §4): fail closed for pods the mesh manages; never block pods it
ignores; report and teardown failures are logged and swallowed; an apply failure leaves nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import pluggy

from meshcni_core import extensions, netns
from meshcni_core.builtin.annotations import INTERCEPTION_MODE, KUBEVIRT_INTERFACES
from meshcni_core.builtin.eligibility import STATUS, needs_container_list
from meshcni_core.netns_locks import serialised
from meshcni_core.pods.cache import PodCache
from meshcni_core.pods.lookup import ApiClients, fetch_pod, pod_from_annotations
from meshcni_core.rules.builder import build_plan
from meshcni_hooks.errors import AnnotationError, ConfigError, MeshcniError, PodLookupError
from meshcni_hooks.types import (
    Backend,
    NetnsFacts,
    Outcome,
    PluginConfig,
    PodInfo,
    RedirectSpec,
    RouteStep,
    Rule,
    RulePlan,
    Target,
    Verdict,
    VerdictKind,
)

log = logging.getLogger("meshcni")
T = TypeVar("T")


@dataclass
class Decision:
    """Everything decided for one pod: the votes, the redirect parameters and the rule plan."""

    pod: PodInfo
    verdicts: list[Verdict] = field(default_factory=list)
    spec: RedirectSpec | None = None
    plan: RulePlan | None = None

    @property
    def redirect(self) -> bool:
        return bool(self.verdicts) and all(v.kind is VerdictKind.REDIRECT for v in self.verdicts)


class Pipeline:
    def __init__(self, pm: pluggy.PluginManager, config: PluginConfig):
        self.pm = pm
        self.config = config
        self.modes = extensions.redirect_modes(pm)
        self._backends = extensions.backends(pm)
        self._backend: Backend | None = None
        self.api_clients: ApiClients | None = None  # shared, warm clients when run by the agent
        self.pod_cache: PodCache | None = None  # the agent's watched pods of this node

    @classmethod
    def from_netconf(cls, netconf: Mapping[str, object], env: Mapping[str, str]) -> Pipeline:
        enabled = netconf.get("extensions") or []
        if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
            raise ConfigError(f"netconf key extensions must be a list of extension names, got {enabled!r}")
        pm = extensions.new_manager(enabled)
        config = guarded(pm, "config", lambda: pm.hook.meshcni_load_config(netconf=netconf, env=env))
        return cls(pm, config)

    def backend(self) -> Backend:
        """The configured backend, created once per pipeline (it caches the host's tools)."""
        if self._backend is not None:
            return self._backend
        info = self._backends.get(self.config.backend)
        if info is None:
            known = ", ".join(sorted(self._backends))
            raise ConfigError(f"netconf key backend={self.config.backend!r} is not registered (registered: {known})")
        self._backend = info.factory()
        return self._backend

    # -- decision ---------------------------------------------------------------------------

    def resolve_pod(self, namespace: str, name: str, uid: str, annotations: Mapping[str, str] | None) -> PodInfo:
        if annotations is not None:
            pod = pod_from_annotations(namespace, name, uid, annotations)
            if not needs_container_list(pod, self.config):
                return self.with_cached_spec(pod)
        if self.pod_cache is not None:
            cached = self.pod_cache.get(namespace, name, uid)
            if cached is not None:
                return cached
        if annotations is not None and not self.config.kubeconfig:
            raise PodLookupError(
                f"pod {namespace}/{name}: annotation {STATUS} does not list the pod's containers as the injector "
                "writes them (JSON with containers/initContainers lists), and netconf has no "
                "kubernetes.kubeconfig to read the pod from the API server"
            )
        return fetch_pod(
            self.config.kubeconfig, namespace, name, self.config.pod_lookup_timeout, uid=uid, clients=self.api_clients
        )

    def with_cached_spec(self, pod: PodInfo) -> PodInfo:
        """The runtime's annotations, with the container spec (the proxy's UID/GID) from the
        agent's cache when it holds this very pod (same UID); else the annotations alone."""
        if self.pod_cache is None or not pod.uid or STATUS not in pod.annotations:
            return pod
        cached = self.pod_cache.get(pod.namespace, pod.name, pod.uid)
        if cached is None or cached.uid != pod.uid:
            return pod
        return dataclasses.replace(cached, annotations=pod.annotations, source="runtime-config+pod-cache")

    def decide(self, pod: PodInfo, facts: NetnsFacts | None = None) -> Decision:
        decision = Decision(pod=pod)
        votes = guarded(self.pm, "eligibility", lambda: self.pm.hook.meshcni_pod_verdict(pod=pod, config=self.config))
        decision.verdicts = [v for v in votes if v is not None]
        if not decision.redirect:
            return decision
        spec = guarded(
            self.pm, "redirect-spec", lambda: self.pm.hook.meshcni_redirect_spec(pod=pod, config=self.config)
        )
        if spec.mode not in self.modes:
            known = ", ".join(sorted(self.modes))
            hint = " (enable the 'tproxy' extension)" if spec.mode == "TPROXY" else ""
            raise AnnotationError(INTERCEPTION_MODE, spec.mode, f"mode not available{hint}; registered modes: {known}")
        decision.spec = spec
        if facts is not None:
            decision.plan = self.plan(pod, spec, facts)
        return decision

    def plan(self, pod: PodInfo, spec: RedirectSpec, facts: NetnsFacts) -> RulePlan:
        families = (4, 6) if facts.ipv6 else (4,)
        extra: list[Rule | RouteStep] = []
        # Registration order (built-ins, then extensions as enabled), not pluggy's LIFO call order.
        impls = self.pm.hook.meshcni_extra_rules.get_hookimpls()
        for family in families:
            for impl in impls:
                kwargs = {"pod": pod, "spec": spec, "config": self.config, "netns": facts, "family": family}
                wanted = {name: kwargs[name] for name in impl.argnames}
                contributed = guarded(self.pm, "rule-build", functools.partial(impl.function, **wanted))
                extra.extend(cast("Sequence[Rule | RouteStep]", contributed or []))
        if spec.kubevirt_interfaces and not any(isinstance(r, Rule) and "-i" in r.args for r in extra):
            raise AnnotationError(
                KUBEVIRT_INTERFACES, ",".join(spec.kubevirt_interfaces),
                "no enabled extension handles kubevirt interfaces (enable the 'kubevirt' extension)",
            )
        return guarded(self.pm, "rule-build", lambda: build_plan(spec, facts, self.modes, extra))

    # -- commands ---------------------------------------------------------------------------

    def add(self, target: Target, pod: PodInfo, facts: NetnsFacts | None = None) -> Decision:
        """Decide and apply. ``facts`` replaces reading the netns (in-process tests)."""
        started = time.perf_counter()
        decision = self.decide(pod)
        if decision.redirect:
            assert decision.spec is not None
            with serialised(target.netns):
                if facts is None:
                    netns.check_target(target.netns)
                    facts = netns.read_facts(target.netns)
                decision.plan = self.plan(pod, decision.spec, facts)
                plan = decision.plan
                guarded(self.pm, "apply", lambda: self.backend().apply(plan, target))
        self.report("ADD", decision, started)
        return decision

    def check(self, target: Target, pod: PodInfo) -> list[str]:
        decision = self.decide(pod)
        if not decision.redirect:
            return []
        assert decision.spec is not None
        with serialised(target.netns):
            netns.check_target(target.netns)
            facts = netns.read_facts(target.netns)
            plan = self.plan(pod, decision.spec, facts)
            return list(guarded(self.pm, "check", lambda: self.backend().missing(plan, target)))

    def delete(self, target: Target, pod: PodInfo | None) -> None:
        started = time.perf_counter()
        with serialised(target.netns):
            self._teardown(target, pod)
        if pod is not None:
            self.report("DEL", Decision(pod=pod), started)

    def _teardown(self, target: Target, pod: PodInfo | None) -> None:
        try:
            netns.check_target(target.netns)
            hints = self.teardown_hints(target, pod)
            guarded(self.pm, "teardown", lambda: self.backend().teardown(target, hints))
        except MeshcniError as exc:
            log.warning("DEL: leaving the pod's rules to the runtime's netns removal: %s %s", exc.msg, exc.details)
        for impl in self.pm.hook.meshcni_teardown.get_hookimpls():
            try:
                impl.function(target=target, config=self.config, pod=pod)
            except Exception as exc:  # noqa: BLE001 - teardown failures are logged, never fatal
                log.warning("DEL: teardown of extension %s failed: %s", impl.plugin_name, exc)

    def teardown_hints(self, target: Target, pod: PodInfo | None) -> RulePlan | None:
        """What ADD probably programmed, so backends can recognise rules that carry no ISTIO_
        marker (kubevirt RETURNs, the IPv6 lock-down): the pod's own plan when its annotations
        came with the request, otherwise the plan of Istio's defaults - in TPROXY mode when that
        mode is registered, which adds its policy routes to what is undone. DEL must never depend
        on the API server, so nothing is looked up."""
        try:
            facts = netns.read_facts(target.netns)
            if pod is not None and pod.annotations:
                decision = self.decide(pod, facts)
                if decision.plan is not None:
                    return decision.plan
            mode = "TPROXY" if "TPROXY" in self.modes else "REDIRECT"
            return build_plan(RedirectSpec(mode=mode), facts, self.modes)
        except MeshcniError as exc:
            log.debug("DEL: no teardown hints (%s); backends fall back to markers", exc.msg)
            return None

    def report(self, command: str, decision: Decision, started: float, error: str = "") -> None:
        outcome = Outcome(
            command=command, pod=decision.pod, redirected=decision.redirect and not error,
            verdicts=tuple(decision.verdicts), plan=decision.plan, error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        for impl in self.pm.hook.meshcni_report.get_hookimpls():
            try:
                impl.function(outcome=outcome)
            except Exception as exc:  # noqa: BLE001 - report failures are logged, never fatal
                log.warning("report hook of %s failed: %s", impl.plugin_name, exc)


def guarded(pm: pluggy.PluginManager, stage: str, call: Callable[[], T]) -> T:
    """Run a hook call; turn a foreign exception into a MeshcniError naming the stage and plugin."""
    try:
        return call()
    except MeshcniError as exc:
        if exc.stage in ("plugin", "") or type(exc) is MeshcniError:
            exc.stage = stage
        raise
    except Exception as exc:
        who = culprit(pm, exc)
        raise MeshcniError(
            f"{stage} failed in {who}: {type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(exc)[-3:]),
            stage=stage,
        ) from exc


def culprit(pm: pluggy.PluginManager, exc: BaseException) -> str:
    """The registered plugin (name, distribution, version) whose code raised ``exc``: the
    innermost traceback frame inside an extension's package, or inside a built-in's module."""
    places: list[tuple[str, str]] = []  # (file or package directory prefix, plugin name)
    for name, plugin in pm.list_name_plugin():
        module_name = getattr(plugin, "__name__", None) or type(plugin).__module__
        if name.startswith("builtin:"):
            module_file = getattr(sys.modules.get(module_name), "__file__", None)
            if module_file:
                places.append((module_file, name))
        else:
            root_file = getattr(sys.modules.get(module_name.split(".")[0]), "__file__", None)
            if root_file:
                places.append((root_file.rsplit("/", 1)[0] + "/", name))
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        for prefix, name in places:
            if frame.filename.startswith(prefix):
                return describe_plugin(name)
    return "meshcni core"


def describe_plugin(name: str) -> str:
    if name.startswith("builtin:"):
        return f"built-in plugin {name}"
    for ext in extensions.installed_extensions():
        if ext.name == name:
            return f"extension {name} ({ext.distribution} {ext.version})"
    return f"plugin {name}"


__all__ = ["Decision", "Pipeline", "guarded"]
