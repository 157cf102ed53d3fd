"""The CNI commands (ADD, DEL, CHECK, STATUS, GC) on top of the pipeline.

``CniCommands`` takes a pipeline factory: the executable builds a fresh pipeline per process;
the node agent keeps them warm, keyed by the plugin's configuration. Pods that can be passed
through from the request alone (no Kubernetes args, excluded namespace, no sidecar status in the
runtime's annotations: ``cni/passthrough.py``) never build one, and never have their netns
entered: the agent opens a pod's netns through ``enter_netns`` only once a command needs it.
"""

from __future__ import annotations

import os
import sys

from meshcni_core.cni import outcome, passthrough
from meshcni_core.cni.protocol import CniError, CniRequest, convert_result, empty_result

TYPE_CHECKING = False  # typing and collections cost 2-12 ms of start-up on the plugin's fast path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager
    from typing import Any

    from meshcni_core.pipeline import Pipeline

    PipelineFactory = Callable[[Mapping[str, Any], Mapping[str, str]], Pipeline]
    NetnsGuard = Callable[[CniRequest], AbstractContextManager[object]]

# Keys that vary per request and do not change how the plugin is configured.
PER_REQUEST_KEYS = ("prevResult", "runtimeConfig", "args", "cni.dev/valid-attachments", "cni.dev/attachments")


def fresh_pipeline(netconf: Mapping[str, Any], env: Mapping[str, str]) -> Pipeline:
    from meshcni_core.logs import configure_logging
    from meshcni_core.pipeline import Pipeline

    configure_logging(netconf.get("log_level"))
    return Pipeline.from_netconf(netconf, env)


def config_key(netconf: Mapping[str, Any]) -> str:
    """What identifies a plugin configuration, for caching pipelines (used by the agent)."""
    import json

    return json.dumps({k: v for k, v in netconf.items() if k not in PER_REQUEST_KEYS}, sort_keys=True)


def excluded_namespaces(netconf: Mapping[str, Any]) -> list[str]:
    k8s = netconf.get("kubernetes")
    excluded = k8s.get("exclude_namespaces") if isinstance(k8s, dict) else None
    return excluded if isinstance(excluded, list) else []


def pass_through_reason(request: CniRequest) -> str:
    """Why this request needs no work, decided from the request alone ('' = it may need work)."""
    return passthrough.pass_through_reason(request.pod_namespace, request.pod_name, request.runtime_annotations,
                                           excluded_namespaces(request.netconf))


class _NoNetnsGuard:
    """In-process: the pipeline opens the netns itself, by path."""

    def __call__(self, request: CniRequest) -> _NoNetnsGuard:
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def result_for(request: CniRequest) -> Mapping[str, Any]:
    """The ADD result: prevResult in the request's version, or an empty result for a secondary
    attachment (Multus), which gets no prevResult."""
    prev = request.netconf.get("prevResult")
    if prev is not None:
        return convert_result(prev, request.cni_version)
    if request.netconf.get("attachment") == "secondary":
        return empty_result(request.cni_version)
    raise CniError(
        "no prevResult: istio-cni must be chained after the primary CNI plugin",
        'set "attachment": "secondary" in this plugin\'s netconf when it runs as its own network '
        "(e.g. under Multus)",
        code=7,
    )


class CniCommands:
    def __init__(self, pipeline_factory: PipelineFactory | None = None,
                 readiness: Callable[[], list[str]] | None = None, enter_netns: NetnsGuard | None = None):
        self.pipeline_factory = pipeline_factory or fresh_pipeline
        self.readiness = readiness  # the node agent's: problems that make STATUS "not available"
        # The node agent's: opens and checks the request's netns, held while the pipeline works in it.
        self.enter_netns = enter_netns or _NoNetnsGuard()

    def dispatch(self, request: CniRequest, env: Mapping[str, str]) -> Mapping[str, Any] | None:
        handlers: dict[str, Callable[[CniRequest, Mapping[str, str]], Mapping[str, Any] | None]] = {
            "ADD": self.add, "DEL": self.delete, "CHECK": self.check, "STATUS": self.status, "GC": self.gc,
        }
        handler = handlers.get(request.command)
        if handler is None:
            raise CniError(f"unknown CNI_COMMAND: {request.command}", code=4)
        return handler(request, env)

    def _target(self, request: CniRequest, pipeline: Pipeline) -> Any:
        from meshcni_hooks.types import Target

        return Target(request.netns, request.container_id, request.ifname, pipeline.config.iptables_flavour)

    def _pod(self, request: CniRequest, pipeline: Pipeline) -> Any:
        return pipeline.resolve_pod(
            request.pod_namespace, request.pod_name, request.args.get("K8S_POD_UID", ""),
            request.runtime_annotations,
        )

    def add(self, request: CniRequest, env: Mapping[str, str]) -> Mapping[str, Any]:
        result = result_for(request)  # validates prevResult before anything is programmed
        reason = pass_through_reason(request)
        if reason:
            _debug(request, reason)
            return result
        with self.enter_netns(request):
            pipeline = self.pipeline_factory(request.netconf, env)
            pipeline.add(self._target(request, pipeline), self._pod(request, pipeline))
        return result

    def delete(self, request: CniRequest, env: Mapping[str, str]) -> None:
        prev = request.netconf.get("prevResult")
        if prev is not None:
            convert_result(prev, request.cni_version)  # a malformed prevResult is still an error
        if not request.netns or not os.path.exists(request.netns):
            _debug(request, "no network namespace (any more): nothing to remove")
            return
        if request.pod_namespace in excluded_namespaces(request.netconf):
            return
        pod = None
        if request.pod_namespace and request.pod_name:
            from meshcni_core.pods.lookup import pod_from_annotations

            pod = pod_from_annotations(
                request.pod_namespace, request.pod_name, request.args.get("K8S_POD_UID", ""),
                request.runtime_annotations or {},
            )
        with self.enter_netns(request):
            pipeline = self.pipeline_factory(request.netconf, env)
            pipeline.delete(self._target(request, pipeline), pod)

    def check(self, request: CniRequest, env: Mapping[str, str]) -> None:
        prev = request.netconf.get("prevResult")
        if prev is None:
            raise CniError("CHECK needs prevResult (the result of the ADD)", code=7)
        convert_result(prev, request.cni_version)
        if pass_through_reason(request):
            return
        from meshcni_hooks.errors import VerifyError

        with self.enter_netns(request):
            pipeline = self.pipeline_factory(request.netconf, env)
            pod = self._pod(request, pipeline)
            problems = pipeline.check(self._target(request, pipeline), pod)
        if problems:
            raise VerifyError(
                f"redirect rules of pod {pod.namespace}/{pod.name} are missing or changed ({len(problems)} problems)",
                "\n".join(problems),
            )

    def status(self, request: CniRequest, env: Mapping[str, str]) -> None:
        """Ready when the configuration, the extensions and the backend's tools are all usable
        and - when served by the node agent - the agent's installation is complete."""
        from meshcni_hooks.errors import ApplyError

        problems = self.readiness() if self.readiness is not None else []
        if problems:
            raise CniError("istio-cni is not ready on this node", "; ".join(problems), code=50)
        try:
            pipeline = self.pipeline_factory(request.netconf, env)
            lacking = pipeline.backend_host_problems()
            if lacking:
                raise ApplyError(f"backend {pipeline.backend().name!r} cannot run on this node", "; ".join(lacking))
            ready = getattr(pipeline.backend(), "ready", None)
            if ready is not None:
                ready(pipeline.config.iptables_flavour)
        except Exception as exc:  # noqa: BLE001 - any reason we could not serve ADD is "not available"
            msg = getattr(exc, "msg", str(exc))
            raise CniError(f"istio-cni cannot serve ADD: {msg}", getattr(exc, "details", ""), code=50) from None

    def gc(self, request: CniRequest, env: Mapping[str, str]) -> None:
        """Validate the attachment list. meshcni keeps no per-attachment state outside the pod's
        own netns (which the runtime deletes), so there is nothing else to collect."""
        for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
            value = request.netconf.get(key)
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(a, dict) and "containerID" in a for a in value):
                raise CniError(f"{key} must be a list of {{containerID, ifname}} objects", code=7)


def _debug(request: CniRequest, reason: str) -> None:
    outcome.note(f"passed through: {reason}" if request.command == "ADD" else reason)
    level = request.netconf.get("log_level")
    if isinstance(level, str) and level.lower() == "debug":
        sys.stderr.write(f"istio-cni: {request.command} {request.pod_namespace}/{request.pod_name}: {reason}\n")
