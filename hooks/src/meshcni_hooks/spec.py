"""Hook specifications, in pipeline order.

One CNI ADD runs: start-up registration -> config load -> pod eligibility -> rule build ->
apply (the selected backend) -> report. The core implements every stage as an ordinary plugin
registered before any extension, with its default implementations marked ``trylast``.

Conventions:

* Every hook is prefixed ``meshcni_``; an implementation may accept fewer arguments than the spec.
* Only frozen dataclasses from :mod:`meshcni_hooks.types` cross a hook boundary.
* Raising a :class:`meshcni_hooks.errors.MeshcniError` from a hook fails the command with that
  error's CNI code; any other exception fails it with code 100 and names the extension.
  Exceptions from ``meshcni_report`` and ``meshcni_teardown`` are logged and swallowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshcni_hooks import hookspec
from meshcni_hooks.types import (
    BackendInfo,
    Claim,
    ManifestValues,
    NetnsFacts,
    NodeFacts,
    Outcome,
    Platform,
    PluginConfig,
    PodInfo,
    RedirectMode,
    RedirectSpec,
    RepairPolicy,
    RouteStep,
    Rule,
    Target,
    Verdict,
)

# --------------------------------------------------------------------------------------------
# Start-up: registration. Every plugin contributes records; a duplicate name is an error that
# names both providers.
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_register_redirect_modes() -> Sequence[RedirectMode]:
    """Return the interception modes this plugin provides (core: ``REDIRECT``).

    Called once per process. The mode named by ``sidecar.istio.io/interceptionMode`` must be
    registered, otherwise the ADD fails naming the annotation and the known modes.
    """
    raise NotImplementedError


@hookspec
def meshcni_register_claims() -> Sequence[Claim]:
    """Return what this plugin owns: the pod annotations it reads and its settings block.

    Called once per pipeline. Each claim's ``parse_settings`` validates its settings then, and its
    ``parse`` runs for every redirected pod, after the core's annotations.
    """
    raise NotImplementedError


@hookspec
def meshcni_register_backends() -> Sequence[BackendInfo]:
    """Return the apply backends this plugin provides (core: ``iptables-restore``).

    The netconf key ``backend`` selects one by name.
    """
    raise NotImplementedError


@hookspec
def meshcni_register_repair_policies() -> Sequence[RepairPolicy]:
    """Return the repair policies this plugin provides (used by ``meshcni repair``)."""
    raise NotImplementedError


@hookspec
def meshcni_register_platforms() -> Sequence[Platform]:
    """Return the hosted platforms this plugin provides defaults for (``meshcni manifest``)."""
    raise NotImplementedError


@hookspec
def meshcni_manifest_objects(values: ManifestValues) -> Sequence[Mapping[str, Any]]:
    """Return extra Kubernetes objects for ``meshcni manifest generate`` (e.g. a platform's own kinds)."""
    raise NotImplementedError


@hookspec
def meshcni_install_check(node: NodeFacts) -> Sequence[str] | None:
    """Return what keeps this node from working on the platform, each with its fix.

    Called by ``meshcni install-cni`` for the extension of ``MESHCNI_PLATFORM`` on every reconcile,
    before our conf entry is written. Any returned problem keeps the entry unwritten (a node whose
    runtime cannot find the plugin must not be told to run it) and the agent not ready; ``/readyz``
    lists the problems. An exception is reported the same way, naming the extension.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Config load
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def meshcni_load_config(netconf: Mapping[str, object], env: Mapping[str, str]) -> PluginConfig | None:
    """Turn the request's netconf (stdin JSON) into a :class:`PluginConfig`.

    ``env`` is the plugin process's environment when ``istio-cni`` serves a request itself; the
    node agent builds one pipeline per configuration and passes an empty mapping, so a
    configuration must not depend on per-request variables (``CNI_*``).

    firstresult. The core's implementation is ``trylast``. To adjust the core's result, write a
    ``wrapper=True`` implementation that takes the result of ``yield`` and returns a
    ``dataclasses.replace`` of it. Raise ``ConfigError`` to reject the configuration.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Eligibility
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_pod_verdict(pod: PodInfo, config: PluginConfig) -> Verdict | None:
    """Vote on whether ``pod`` is redirected. Return ``None`` to abstain.

    Every implementation runs; any ``SKIP`` wins. The core votes with the seed page's rules
    (excluded namespace, ``istio-proxy`` container, more than one container,
    ``sidecar.istio.io/inject``, ``sidecar.istio.io/status``, no ``istio-init``).
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Rule build
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def meshcni_redirect_spec(pod: PodInfo, config: PluginConfig) -> RedirectSpec | None:
    """Derive the redirect parameters of an eligible pod.

    firstresult; the core reads Istio's annotations with Istio 1.6's defaults. Raise
    ``AnnotationError`` for an invalid value: the ADD then fails and nothing is applied.
    """
    raise NotImplementedError


@hookspec
def meshcni_extra_rules(
    pod: PodInfo, spec: RedirectSpec, config: PluginConfig, netns: NetnsFacts, family: int
) -> Sequence[Rule | RouteStep] | None:
    """Contribute rules for one address family beyond the mode's (e.g. PREROUTING rules for a VM's interfaces).

    Every implementation runs, in registration order; the rules join the plan in that order.
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_report(outcome: Outcome) -> None:
    """Observe the outcome of one command (logs, metrics, events). Errors are logged and swallowed."""
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# DEL
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_teardown(target: Target, config: PluginConfig, pod: PodInfo | None) -> None:
    """Undo anything an extension did outside the rule plan on DEL. Errors are logged and swallowed."""
    raise NotImplementedError
