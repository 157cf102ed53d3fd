"""``istio-cni``: the chained CNI plugin executable.

stdout carries exactly one JSON document (result, version or error) or nothing; logs go to
stderr. Pods the plugin can tell apart cheaply (no Kubernetes args, excluded namespace, no
sidecar status annotation in the runtime's annotations) are passed through before pluggy, the
extensions or the kubernetes client are imported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from meshcni_core.cni.protocol import (
    CniError,
    CniRequest,
    convert_result,
    empty_result,
    error_object,
    parse_request,
    read_stdin,
    version_object,
)

STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
FALSE_VALUES = {"0", "f", "false", "n", "no", "off"}


def main() -> int:
    env = dict(os.environ)
    version = ""
    try:
        stdin = read_stdin(env.get("CNI_COMMAND", ""))
        if env.get("CNI_COMMAND") == "VERSION":
            return emit(version_object(_requested_version(stdin)))
        request = parse_request(env, stdin)
        version = request.cni_version
        output = dispatch(request, env)
        if output is not None:
            emit(output)
        return 0
    except KeyboardInterrupt:
        return emit_error(CniError("interrupted", code=100), version)
    except BaseException as exc:  # noqa: BLE001 - one error object, never a traceback on stdout
        return emit_error(as_cni_error(exc), version)


def as_cni_error(exc: BaseException) -> Any:
    if hasattr(exc, "code") and hasattr(exc, "msg") and isinstance(exc.code, int):
        return exc
    import traceback

    sys.stderr.write("".join(traceback.format_exception(exc)))
    return CniError(f"internal error: {type(exc).__name__}: {exc}", code=100)


def emit(obj: Mapping[str, Any]) -> int:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    return 0


def emit_error(exc: Any, version: str) -> int:
    sys.stderr.write(f"istio-cni: {getattr(exc, 'stage', 'cni')}: {exc.msg}\n")
    if exc.details:
        sys.stderr.write(f"  {exc.details}\n")
    sys.stdout.write(json.dumps(error_object(exc, version)) + "\n")
    sys.stdout.flush()
    return 1


def _requested_version(stdin: bytes) -> str:
    try:
        value = json.loads(stdin or b"{}").get("cniVersion", "")
        return value if isinstance(value, str) else ""
    except (ValueError, AttributeError):
        return ""


def dispatch(request: CniRequest, env: Mapping[str, str]) -> Mapping[str, Any] | None:
    if request.command == "ADD":
        return cmd_add(request, env)
    if request.command == "DEL":
        cmd_del(request, env)
        return None
    if request.command == "CHECK":
        cmd_check(request, env)
        return None
    if request.command == "STATUS":
        cmd_status(request, env)
        return None
    if request.command == "GC":
        cmd_gc(request)
        return None
    raise CniError(f"unknown CNI_COMMAND: {request.command}", code=4)


def _excluded_namespaces(netconf: Mapping[str, Any]) -> list[str]:
    k8s = netconf.get("kubernetes")
    excluded = k8s.get("exclude_namespaces") if isinstance(k8s, dict) else None
    return excluded if isinstance(excluded, list) else []


def pass_through_reason(request: CniRequest) -> str:
    """Why this ADD needs no work, decided from the request alone ('' = it may need work)."""
    if not request.pod_namespace or not request.pod_name:
        return "no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS: not a Kubernetes pod"
    if request.pod_namespace in _excluded_namespaces(request.netconf):
        return f"namespace {request.pod_namespace} is excluded"
    annotations = request.runtime_annotations
    if annotations is not None:
        if STATUS_ANNOTATION not in annotations:
            return f"annotation {STATUS_ANNOTATION} is absent"
        if annotations.get(INJECT_ANNOTATION, "").strip().lower() in FALSE_VALUES:
            return f"annotation {INJECT_ANNOTATION} is false"
    return ""


def _result(request: CniRequest) -> Mapping[str, Any]:
    prev = request.netconf.get("prevResult")
    if prev is not None:
        return convert_result(prev, request.cni_version)
    if request.netconf.get("attachment") == "secondary":
        return empty_result(request.cni_version)
    raise CniError(
        "no prevResult: istio-cni must be chained after the primary CNI plugin",
        "set \"attachment\": \"secondary\" in this plugin's netconf when it runs as its own network "
        "(e.g. under Multus)",
        code=7,
    )


def cmd_add(request: CniRequest, env: Mapping[str, str]) -> Mapping[str, Any]:
    result = _result(request)  # validates prevResult before anything is programmed
    reason = pass_through_reason(request)
    if reason:
        _log_pass_through(request, reason)
        return result
    pipeline = _pipeline(request, env)
    from meshcni_hooks.types import Target

    pod = pipeline.resolve_pod(
        request.pod_namespace, request.pod_name, request.args.get("K8S_POD_UID", ""), request.runtime_annotations
    )
    target = Target(request.netns, request.container_id, request.ifname, pipeline.config.iptables_flavour)
    pipeline.add(target, pod)
    return result


def _pipeline(request: CniRequest, env: Mapping[str, str]) -> Any:
    from meshcni_core.logs import configure_logging
    from meshcni_core.pipeline import Pipeline

    configure_logging(request.netconf.get("log_level"))
    return Pipeline.from_netconf(request.netconf, env)


def _log_pass_through(request: CniRequest, reason: str) -> None:
    level = request.netconf.get("log_level")
    if isinstance(level, str) and level.lower() == "debug":
        sys.stderr.write(f"istio-cni: {request.command} {request.pod_namespace}/{request.pod_name}: {reason}\n")


def cmd_del(request: CniRequest, env: Mapping[str, str]) -> None:
    prev = request.netconf.get("prevResult")
    if prev is not None:
        convert_result(prev, request.cni_version)  # a malformed prevResult is still an error
    if not request.netns or not os.path.exists(request.netns):
        return  # the netns and every rule in it are gone already
    if request.pod_namespace in _excluded_namespaces(request.netconf):
        return
    pipeline = _pipeline(request, env)
    from meshcni_hooks.types import Target

    pod = None
    if request.pod_namespace and request.pod_name:
        from meshcni_core.pods.lookup import pod_from_annotations

        pod = pod_from_annotations(
            request.pod_namespace, request.pod_name, request.args.get("K8S_POD_UID", ""),
            request.runtime_annotations or {},
        )
    target = Target(request.netns, request.container_id, request.ifname, pipeline.config.iptables_flavour)
    pipeline.delete(target, pod)


def cmd_check(request: CniRequest, env: Mapping[str, str]) -> None:
    prev = request.netconf.get("prevResult")
    if prev is None:
        raise CniError("CHECK needs prevResult (the result of the ADD)", code=7)
    convert_result(prev, request.cni_version)
    if pass_through_reason(request):
        return
    pipeline = _pipeline(request, env)
    from meshcni_hooks.errors import VerifyError
    from meshcni_hooks.types import Target

    pod = pipeline.resolve_pod(
        request.pod_namespace, request.pod_name, request.args.get("K8S_POD_UID", ""), request.runtime_annotations
    )
    target = Target(request.netns, request.container_id, request.ifname, pipeline.config.iptables_flavour)
    problems = pipeline.check(target, pod)
    if problems:
        raise VerifyError(
            f"redirect rules of pod {pod.namespace}/{pod.name} are missing or changed ({len(problems)} problems)",
            "\n".join(problems),
        )


def cmd_status(request: CniRequest, env: Mapping[str, str]) -> None:
    """Ready when the configuration, the extensions and the backend's tools are all usable."""
    try:
        pipeline = _pipeline(request, env)
        backend = pipeline.backend()
        if hasattr(backend, "ready"):
            backend.ready(pipeline.config.iptables_flavour)
    except Exception as exc:  # noqa: BLE001 - any reason we could not serve ADD is "not available"
        msg = getattr(exc, "msg", str(exc))
        raise CniError(f"istio-cni cannot serve ADD: {msg}", getattr(exc, "details", ""), code=50) from None


def cmd_gc(request: CniRequest) -> None:
    """Validate the attachment list. meshcni keeps no per-attachment state outside the pod's own
    netns (which the runtime deletes), so there is nothing else to collect."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        value = request.netconf.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(a, dict) and "containerID" in a for a in value):
            raise CniError(f"{key} must be a list of {{containerID, ifname}} objects", code=7)


def run() -> None:
    sys.exit(main())
