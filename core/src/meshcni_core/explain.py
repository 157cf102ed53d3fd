"""``meshcni explain``: what istio-cni would do for a pod, and why.

The eligibility verdict rule by rule (the seed page's rules, then every enabled extension's
vote), each redirect parameter with where it came from (an annotation or Istio's default), and
the exact rules - the selected backend's own transaction (``Backend.transaction``: for
iptables-restore its input per family), plus the ip commands. It runs the plugin's own
pipeline, so its verdict and its backend are the plugin's. It also
warns about what breaks although the ADD succeeds: application init containers that start
before the proxy, a proxy running as a UID that does not bypass capture.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from meshcni_core.builtin import sidecar
from meshcni_core.builtin.annotations import EXCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_PORTS
from meshcni_core.builtin.eligibility import decide as seed_votes
from meshcni_core.pipeline import Pipeline
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import NetnsFacts, PodInfo, RedirectSpec, VerdictKind

IPV4_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.10",))
DUAL_STACK_POD = NetnsFacts(interfaces=("lo", "eth0"), ipv4_addresses=("192.0.2.10",),
                            ipv6_addresses=("2001:db8::10",))


def explain(pod: PodInfo, pipeline: Pipeline, facts: NetnsFacts = IPV4_POD) -> dict[str, Any]:
    """Everything explain prints, as data. ``outcome`` is "redirect", "skip" or "error"."""
    report: dict[str, Any] = {"pod": f"{pod.namespace}/{pod.name}", "rules": [], "warnings": [], "parameters": {},
                              "plan": {}}
    try:
        seed = seed_votes(pod, pipeline.config)
        report["rules"] = [{"rule": v.rule, "vote": v.kind.value, "reason": v.reason, "by": v.source} for v in seed]
        for verdict in reversed(pipeline.hooks.pod_verdicts(pod, pipeline.config)):  # in enabling order
            if verdict.source != "builtin":  # the built-in's rules are listed one by one above
                report["rules"].append({"rule": verdict.rule, "vote": verdict.kind.value,
                                        "reason": verdict.reason, "by": verdict.source})
        decision = pipeline.decide(pod, facts)
        if not decision.redirect:
            report["outcome"] = "skip"
            return report
        assert decision.spec is not None and decision.plan is not None
        report["warnings"] = [*decision.warnings, *warnings(pod, decision.spec)]
        report["parameters"] = parameters(decision.spec)
        backend = pipeline.backend()
        report["plan"] = {
            "backend": backend.name, "chosen_by": pipeline.backend_choice.reason,
            "transaction": backend.transaction(decision.plan),
            "ip": [" ".join(("ip", *step.args)) for step in decision.plan.routes],
        }
        report["outcome"] = "redirect"
    except MeshcniError as exc:
        report["outcome"] = "error"
        report["error"] = {"stage": exc.stage, "code": exc.code, "message": exc.msg}
    return report


def warnings(pod: PodInfo, spec: RedirectSpec) -> list[str]:
    """What will go wrong in this redirected pod although the ADD succeeds."""
    found: list[str] = []
    proxy = sidecar.proxy_container(pod)
    early = sidecar.init_containers_before_proxy(pod)
    if proxy is not None and early:
        names = f"init container{'s' if len(early) > 1 else ''} " + ", ".join(c.name for c in early)
        when = ("they are listed before the native sidecar istio-proxy, so they run before it starts"
                if proxy.native_sidecar else
                "they run before the istio-proxy container starts (with a native sidecar, annotation "
                "sidecar.istio.io/nativeSidecar: \"true\" on Kubernetes 1.28+, the proxy starts first)")
        dns = (f", and with DNS capture their DNS queries go to port {spec.dns_port}, where nothing answers yet"
               if spec.dns_capture else "")
        found.append(
            f"{names}: the redirect rules exist before any init container runs, and {when}; "
            f"their outbound TCP is sent to port {spec.proxy_port}, where nothing listens yet, and fails{dns}. "
            f"Either run them as the proxy's UID (securityContext.runAsUser: {spec.proxy_uids[0]}), or exclude "
            f"what they reach with the annotations {EXCLUDE_OUTBOUND_IP_RANGES} or {EXCLUDE_OUTBOUND_PORTS}"
        )
    pod_uid = pod.pod_run_as_user
    if proxy is not None and proxy.run_as_user is None and pod_uid not in (None, 0, int(spec.proxy_uids[0])):
        found.append(
            f"istio-proxy sets no runAsUser, so it runs as the pod's runAsUser {pod_uid}, but only UID "
            f"{spec.proxy_uids[0]} bypasses capture (today's Istio reads the container's securityContext only): "
            "the proxy's own traffic would be captured again; set runAsUser on the istio-proxy container"
        )
    return found


def parameters(spec: RedirectSpec) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(spec):
        if f.name in ("origins", "extension_params"):
            continue
        value = getattr(spec, f.name)
        out[f.name] = {"value": _plain(value), "from": spec.origins.get(f.name, "fixed (Istio 1.6's plugin)")}
    for params in spec.extension_params:  # each extension's own values, named <extension>.<field>
        for f in dataclasses.fields(params.value):
            if f.name in params.origins:
                origin = f"{params.origins[f.name]} (extension {params.extension})"
                out[f"{params.extension}.{f.name}"] = {"value": _plain(getattr(params.value, f.name)), "from": origin}
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shown = {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
        if shown.get("all"):
            return "*"
        return shown.get("ports") or [str(n) for n in shown.get("networks", [])] or []
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, int | str) else str(value)


def render_text(report: Mapping[str, Any]) -> str:
    lines = [f"pod {report['pod']}: {report['outcome'].upper()}", "", "eligibility:"]
    for rule in report["rules"]:
        mark = "ok  " if rule["vote"] == VerdictKind.REDIRECT.value else "SKIP"
        by = "" if rule["by"] == "builtin" else f" [{rule['by']}]"
        lines.append(f"  {mark} {rule['rule']:<20} {rule['reason']}{by}")
    for warning in report.get("warnings", []):
        lines += ["", f"WARNING: {warning}"]
    if report["outcome"] == "error":
        error = report["error"]
        lines += ["", f"error ({error['stage']}, CNI code {error['code']}): {error['message']}"]
    if report["parameters"]:
        lines += ["", "redirect parameters:"]
        for name, item in report["parameters"].items():
            lines.append(f"  {name:<24} {json.dumps(item['value']):<30} from {item['from']}")
    if report["plan"]:
        plan = report["plan"]
        lines += ["", f"rules: what backend {plan['backend']} ({plan['chosen_by']}) hands the kernel:"]
        lines += [f"  {line}" for line in plan["transaction"].splitlines()]
        lines += [f"  {command}" for command in plan["ip"]]
    return "\n".join(lines)
