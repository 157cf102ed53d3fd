"""One CNI command through the hooks: config -> pod -> eligibility -> rule build -> apply -> report.

Failure policy (docs/architecture.md): fail closed for pods the mesh manages; never block pods it
ignores; report and teardown failures are logged and swallowed; an apply failure leaves nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import pluggy

from meshcni_core import backend_selection, extensions, netns
from meshcni_core.builtin.annotations import INTERCEPTION_MODE
from meshcni_core.builtin.eligibility import STATUS, needs_container_list
from meshcni_core.claims import Claims, refuse_disabled_owner
from meshcni_core.hookcalls import HookCalls
from meshcni_core.netns_locks import serialised
from meshcni_core.pods.cache import PodCache
from meshcni_core.pods.lookup import ApiClients, fetch_pod, pod_from_annotations
from meshcni_core.rules.builder import build_plan
from meshcni_hooks.errors import AnnotationError, ApplyError, ConfigError, MeshcniError, PodLookupError
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
    warnings: list[str] = field(default_factory=list)  # e.g. Istio annotations nothing enabled reads

    @property
    def redirect(self) -> bool:
        return bool(self.verdicts) and all(v.kind is VerdictKind.REDIRECT for v in self.verdicts)


class Pipeline:
    def __init__(self, pm: pluggy.PluginManager, config: PluginConfig):
        self.pm = pm
        self.hooks = HookCalls(pm)
        self.modes = guarded(pm, "extensions", self.hooks.redirect_modes)
        self._backends = guarded(pm, "extensions", self.hooks.backends)
        self.claims = guarded(pm, "config", lambda: Claims.of(self.hooks.claims()))
        settings = guarded(pm, "config", lambda: self.claims.validate_settings(config.extension_settings))
        self.config = dataclasses.replace(config, extension_settings=settings)
        self._installed_owners: dict[str, str | None] = {}  # annotation -> disabled extension claiming it
        self.backend_choice = guarded(pm, "config", lambda: backend_selection.choose(self.config, self._backends))
        self._backend: Backend | None = None
        self.api_clients: ApiClients | None = None  # shared, warm clients when run by the agent
        self.pod_cache: PodCache | None = None  # the agent's watched pods of this node

    @classmethod
    def from_netconf(cls, netconf: Mapping[str, object], env: Mapping[str, str]) -> Pipeline:
        enabled = netconf.get("extensions") or []
        if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
            raise ConfigError(f"netconf key extensions must be a list of extension names, got {enabled!r}")
        pm = extensions.new_manager(enabled)
        config = guarded(pm, "config", lambda: HookCalls(pm).load_config(netconf, env))
        return cls(pm, config)

    def backend(self) -> Backend:
        """The selected backend (backend_selection.py), created once per pipeline (it caches the
        host's tools)."""
        if self._backend is None:
            name = self.backend_choice.name
            if name:
                self._backend = guarded(self.pm, "extensions", self._backends[name].factory)
            else:
                self._backend = backend_selection.first_usable(
                    self._backends, lambda info: guarded(self.pm, "extensions", info.factory))
        return self._backend

    def backend_host_problems(self) -> list[str]:
        """What this node lacks for the selected backend (``[]``: it can program pods)."""
        try:
            backend = self.backend()
        except ApplyError as exc:  # auto found none: every backend's problems
            return [exc.msg, *exc.details.splitlines()]
        return list(guarded(self.pm, "backend-check", backend.host_problems))

    def require_usable_backend(self) -> None:
        """Fail before anything is applied when this node cannot run the selected backend."""
        problems = self.backend_host_problems()
        if problems:
            raise ApplyError(f"backend {self.backend().name!r} cannot run on this node ({self.backend_choice.reason}): "
                             + "; ".join(problems), stage="backend-check")

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
        if not isinstance(pod.annotations, types.MappingProxyType):  # read-only for every hook
            pod = dataclasses.replace(pod, annotations=types.MappingProxyType(dict(pod.annotations)))
        decision = Decision(pod=pod)
        decision.verdicts = guarded(self.pm, "eligibility", lambda: self.hooks.pod_verdicts(pod, self.config))
        if not decision.redirect:
            return decision
        spec = guarded(self.pm, "redirect-spec", lambda: self.hooks.redirect_spec(pod, self.config))
        decision.spec = spec = self.with_extension_params(pod, spec, decision.warnings)
        if spec.mode not in self.modes:
            known = ", ".join(sorted(self.modes))
            provider = extensions.probe_installed(self.config.extensions, lambda h: spec.mode in h.redirect_modes())
            hint = f" (enable the '{provider}' extension)" if provider else ""
            raise AnnotationError(INTERCEPTION_MODE, spec.mode, f"mode not available{hint}; registered modes: {known}")
        if facts is not None:
            decision.plan = self.plan(pod, spec, facts)
        return decision

    def with_extension_params(self, pod: PodInfo, spec: RedirectSpec, warnings: list[str]) -> RedirectSpec:
        """``spec`` plus what each enabled extension parsed from the annotations and settings it
        claims. An Istio annotation nothing enabled reads is a warning, unless an installed but
        disabled extension claims it: then the ADD fails, naming the extension to enable."""
        unowned = self.claims.unowned(pod.annotations)
        if unowned:
            def installed_owner(key: str) -> str | None:
                if key not in self._installed_owners:  # probing imports extensions: once per key
                    self._installed_owners[key] = extensions.probe_installed(
                        self.config.extensions, lambda h: any(key in c.annotations for c in h.claims())
                    )
                return self._installed_owners[key]

            refuse_disabled_owner(pod.annotations, unowned, installed_owner)
            warnings += [f"annotation {key} is not read by the plugin or any enabled extension; it has no effect"
                         for key in unowned]
        params = guarded(
            self.pm, "redirect-spec", lambda: self.claims.params(pod.annotations, self.config.extension_settings)
        )
        if not params:
            return spec
        return dataclasses.replace(spec, extension_params=(*spec.extension_params, *params))

    def plan(self, pod: PodInfo, spec: RedirectSpec, facts: NetnsFacts) -> RulePlan:
        families = (4, 6) if facts.ipv6 else (4,)
        extra: list[Rule | RouteStep] = []
        for family in families:
            extra += guarded(
                self.pm, "rule-build", functools.partial(self.hooks.extra_rules, pod, spec, self.config, facts, family)
            )
        return guarded(self.pm, "rule-build", lambda: build_plan(spec, facts, self.modes, extra))

    # -- commands ---------------------------------------------------------------------------

    def add(self, target: Target, pod: PodInfo, facts: NetnsFacts | None = None) -> Decision:
        """Decide and apply. ``facts`` replaces reading the netns (in-process tests)."""
        started = time.perf_counter()
        decision = self.decide(pod)
        if decision.redirect:
            assert decision.spec is not None
            self.require_usable_backend()
            with serialised(target.netns):
                if facts is None:
                    netns.check_target(target.netns)
                    facts = netns.read_facts(target.netns)
                decision.plan = self.plan(pod, decision.spec, facts)
                plan = decision.plan
                guarded(self.pm, "apply", lambda: self.backend().apply(plan, target))
        for warning in decision.warnings:
            log.warning("ADD %s/%s: %s", pod.namespace, pod.name, warning)
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
        self.hooks.teardown(target, self.config, pod)

    def teardown_hints(self, target: Target, pod: PodInfo | None) -> RulePlan | None:
        """What ADD probably programmed, so backends can recognise rules that carry no ISTIO_
        marker (an extension's interface RETURNs, the IPv6 lock-down) and undo its routes: the
        pod's own plan when its annotations came with the request, otherwise the plans of Istio's
        defaults under every registered mode together, so that routes a mode's extension
        contributed (with the settings it was configured with) are undone too. DEL must never
        depend on the API server, so nothing is looked up."""
        try:
            facts = netns.read_facts(target.netns)
            if pod is not None and pod.annotations:
                decision = self.decide(pod, facts)
                if decision.plan is not None:
                    return decision.plan
            params = self.claims.params({}, self.config.extension_settings)
            plans = [build_plan(RedirectSpec(mode=m, extension_params=params), facts, self.modes) for m in self.modes]
            return merge_plans(plans)
        except MeshcniError as exc:
            log.debug("DEL: no teardown hints (%s); backends fall back to markers", exc.msg)
            return None

    def report(self, command: str, decision: Decision, started: float, error: str = "") -> None:
        outcome = Outcome(
            command=command, pod=decision.pod, redirected=decision.redirect and not error,
            verdicts=tuple(decision.verdicts), plan=decision.plan, error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        self.hooks.report(outcome)


def merge_plans(plans: list[RulePlan]) -> RulePlan:
    """Every item of ``plans`` once, in first-seen order (teardown hints only: never applied)."""
    def union(items: list[T]) -> tuple[T, ...]:
        return tuple(dict.fromkeys(items))

    return RulePlan(
        chains=union([c for p in plans for c in p.chains]), flushes=union([f for p in plans for f in p.flushes]),
        rules=union([r for p in plans for r in p.rules]), routes=union([s for p in plans for s in p.routes]),
    )


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
