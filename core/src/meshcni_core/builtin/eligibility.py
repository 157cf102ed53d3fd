"""The seed page's eligibility rules, as a built-in voter.

A pod is redirected when it is not in an excluded namespace, has a container named
``istio-proxy``, has more than one container, has ``sidecar.istio.io/inject`` absent or true,
and has ``sidecar.istio.io/status``. Pods with an ``istio-init`` init container already program
their own rules and are skipped, as are pods that ask for ``interceptionMode: NONE``.

``istio-proxy`` may be a native sidecar, as today's Istio injects it on Kubernetes 1.28+: an init
container with ``restartPolicy: Always``. It then counts as the proxy and as a container (today's
Istio looks for istio-proxy among init containers and containers alike). A plain init container
named ``istio-proxy`` runs to completion before the app and is no proxy.

When the runtime passed only annotations (containerd's ``io.kubernetes.cri.pod-annotations``),
the container facts come from the injector's ``sidecar.istio.io/status`` annotation, which
lists the containers and init containers it injected (``containers`` is ``null`` with native
sidecars); the injector only injects into pods that already have an application container, so a
listed ``istio-proxy`` means more than one container.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from meshcni_core.builtin.annotations import INTERCEPTION_MODE
from meshcni_core.builtin.sidecar import PROXY_CONTAINER, proxy_identity
from meshcni_core.cni.passthrough import FALSE_VALUES, INJECT_ANNOTATION, STATUS_ANNOTATION, TRUE_VALUES
from meshcni_hooks import hookimpl
from meshcni_hooks.errors import AnnotationError
from meshcni_hooks.types import PluginConfig, PodInfo, Verdict

INJECT = INJECT_ANNOTATION
STATUS = STATUS_ANNOTATION
INIT_CONTAINER = "istio-init"


@dataclass(frozen=True)
class ContainerFacts:
    containers: tuple[str, ...]  # what runs beside the app: regular containers and native sidecars
    init_containers: tuple[str, ...]  # every init container, native sidecars included
    native_sidecars: tuple[str, ...]
    inferred: bool  # from the status annotation rather than the pod spec


def container_facts(pod: PodInfo) -> ContainerFacts | None:
    """The pod's containers, from its spec or inferred from the injector's status annotation."""
    if pod.containers is not None:
        native = tuple(c.name for c in pod.container_specs if c.native_sidecar)
        return ContainerFacts((*pod.containers, *native), pod.init_containers or (), native, inferred=False)
    return facts_from_status(pod.annotations)


def facts_from_status(annotations: Mapping[str, str]) -> ContainerFacts | None:
    """What the injector says it added. ``None`` (ask the API server, as today's Istio always
    does) when the annotation is not JSON or its lists are missing or not lists."""
    raw = annotations.get(STATUS)
    if raw is None:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(status, dict) or ("containers" not in status and "initContainers" not in status):
        return None
    lists = [status.get("containers"), status.get("initContainers")]
    if not all(value is None or isinstance(value, list) for value in lists):
        return None
    injected, inits = (tuple(str(c) for c in value or ()) for value in lists)
    # The injector lists istio-proxy under initContainers only when it injected a native sidecar.
    native = (PROXY_CONTAINER,) if PROXY_CONTAINER in inits else ()
    containers = (*injected, *native)
    # The injector adds to an existing application container; stand it in as "(application)".
    if PROXY_CONTAINER in containers:
        containers = ("(application)", *containers)
    return ContainerFacts(containers, inits, native, inferred=True)


def needs_container_list(pod: PodInfo, config: PluginConfig) -> bool:
    """True when the annotations alone cannot decide and the API must be asked."""
    if pod.namespace in config.exclude_namespaces:
        return False
    if STATUS not in pod.annotations or _inject_value(pod.annotations) is False:
        return False
    return container_facts(pod) is None


def _inject_value(annotations: Mapping[str, str]) -> bool | None:
    raw = annotations.get(INJECT)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise AnnotationError(INJECT, raw, "expected true or false")


def decide(pod: PodInfo, config: PluginConfig) -> list[Verdict]:
    """Every built-in rule's vote, in the seed page's order."""
    votes: list[Verdict] = []
    if pod.namespace in config.exclude_namespaces:
        return [Verdict.skip("excluded-namespace", f"namespace {pod.namespace} is in exclude_namespaces")]
    votes.append(Verdict.redirect("excluded-namespace", f"namespace {pod.namespace} is not excluded"))
    facts = container_facts(pod)
    if facts is None:
        if STATUS not in pod.annotations:
            return [*votes, Verdict.skip("sidecar-status", f"annotation {STATUS} is absent")]
        return [*votes, Verdict.skip("containers-unknown", "the pod's containers are unknown")]
    how = f" (from {STATUS})" if facts.inferred else ""
    if INIT_CONTAINER in facts.init_containers:
        votes.append(Verdict.skip("istio-init", f"init container {INIT_CONTAINER} programs the rules itself{how}"))
    votes.append(_proxy_vote(facts, how))
    if len(facts.containers) > 1:
        native = f", counting the native sidecar {PROXY_CONTAINER}" if PROXY_CONTAINER in facts.native_sidecars else ""
        votes.append(Verdict.redirect("containers", f"{len(facts.containers)} containers{native}{how}"))
    else:
        votes.append(Verdict.skip("containers", f"only {len(facts.containers)} container{how}"))
    # An unreadable inject value is an error only for a pod the injector did inject: a pod without
    # the status annotation is not the mesh's, and pods the mesh ignores are never blocked.
    inject = _inject_value(pod.annotations) if STATUS in pod.annotations else None
    if inject is False:
        votes.append(Verdict.skip("inject", f"annotation {INJECT}={pod.annotations[INJECT]!r}"))
    else:
        shown = "absent" if inject is None else repr(pod.annotations[INJECT])
        votes.append(Verdict.redirect("inject", f"annotation {INJECT} {shown}"))
    if STATUS in pod.annotations:
        votes.append(Verdict.redirect("sidecar-status", f"annotation {STATUS} present"))
    else:
        votes.append(Verdict.skip("sidecar-status", f"annotation {STATUS} is absent"))
    if pod.annotations.get(INTERCEPTION_MODE) == "NONE":
        votes.append(Verdict.skip("interception-none", f"annotation {INTERCEPTION_MODE}=NONE asks for no capture"))
    if PROXY_CONTAINER in facts.containers:
        votes.append(Verdict.redirect("proxy-identity", proxy_identity(pod).summary()))
    return votes


def _proxy_vote(facts: ContainerFacts, how: str) -> Verdict:
    if PROXY_CONTAINER in facts.native_sidecars:
        return Verdict.redirect(
            "istio-proxy", f"init container {PROXY_CONTAINER} with restartPolicy: Always (a native sidecar){how}"
        )
    if PROXY_CONTAINER in facts.containers:
        return Verdict.redirect("istio-proxy", f"container {PROXY_CONTAINER} present{how}")
    if PROXY_CONTAINER in facts.init_containers:
        return Verdict.skip(
            "istio-proxy", f"init container {PROXY_CONTAINER} has no restartPolicy: Always, so it is not a sidecar{how}"
        )
    return Verdict.skip("istio-proxy", f"no container named {PROXY_CONTAINER}{how}")


class SeedEligibility:
    """Built-in plugin: votes with the seed page's rules."""

    @hookimpl(trylast=True)
    def meshcni_pod_verdict(self, pod: PodInfo, config: PluginConfig) -> Verdict:
        votes = decide(pod, config)
        skips = [v for v in votes if v.kind.value == "skip"]
        return skips[0] if skips else Verdict.redirect("seed", "; ".join(v.reason for v in votes))
