"""Hook specifications, in pipeline order.

One CNI ADD runs: start-up registration -> config load -> pod eligibility -> rule build ->
apply (the selected backend) -> report. The core implements every stage as an ordinary plugin
registered before any extension, with its default implementations marked ``trylast``.

Conventions:

* Every hook is prefixed ``meshcni_``; an implementation may accept fewer arguments than the spec.
* Only frozen dataclasses from :mod:`meshcni_hooks.types` cross a hook boundary.
* Every hook is called through pluggy, so ``wrapper=True`` implementations, ``tryfirst`` and
  ``trylast`` apply to all of them.
* Raising a :class:`meshcni_hooks.errors.MeshcniError` from a hook fails the command with that
  error's CNI code; any other exception fails it with code 100 and names the extension and its
  distribution. A failed ADD means the runtime does not start the pod (it retries the sandbox).
  Exceptions from ``meshcni_report`` and ``meshcni_teardown`` are logged and swallowed.

Each hook's docstring is its reference, in four parts that ``docs/extensions.md`` reproduces
(a test keeps both complete and in step): **When** it runs, what its **Result** means, what an
exception means (**Errors**), and an **Example**.
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

    When: once per pipeline (per netconf in the agent, per request without it), before any pod.
    Result: every plugin's records count; the annotation ``sidecar.istio.io/interceptionMode`` picks
    one by name. A mode no enabled plugin registers fails the ADD (code 103), naming the installed
    extension that provides it when there is one.
    Errors: a name registered twice, or any exception, fails every command of the pipeline (code
    101 or 100, naming the extension); no pod starts until the configuration is fixed.
    Example::

        @hookimpl
        def meshcni_register_redirect_modes(self):
            return [RedirectMode(name="ACME", build_inbound=acme_inbound, provider="acme-mode")]
    """
    raise NotImplementedError


@hookspec
def meshcni_register_claims() -> Sequence[Claim]:
    """Return what this plugin owns: the pod annotations it reads and its settings block.

    When: once per pipeline, before any pod. Each claim's ``parse_settings`` validates the netconf's
    ``extension_settings.<extension>`` then (``{}`` when absent); its ``parse`` runs for every
    redirected pod, after the core's annotations, and its result reaches the rule hooks as
    ``spec.params(YourType)``.
    Result: every plugin's claims count. An Istio annotation (``*.istio.io/``) that neither the core
    nor a claim reads is a warning (``meshcni explain`` shows it); one that only an installed but
    disabled extension claims fails the ADD (code 103), naming the extension to enable.
    Errors: ``SettingError`` from ``parse_settings`` fails every command (code 7) naming the
    setting; ``AnnotationError`` from ``parse`` fails that pod's ADD (code 103), nothing applied,
    the pod does not start; a key claimed twice is an ``ExtensionError`` (code 101).
    Example::

        @hookimpl
        def meshcni_register_claims(self):
            return [Claim(extension="acme-vm", annotations=("acme.example/vm-interfaces",),
                          parse=parse_vm_interfaces)]
    """
    raise NotImplementedError


@hookspec
def meshcni_register_backends() -> Sequence[BackendInfo]:
    """Return the apply backends this plugin provides (core: ``iptables-restore``).

    When: once per pipeline, before any pod; the selected backend is created on first use.
    Result: every plugin's records count. The netconf key ``backend`` selects one by name (an
    unknown name fails every command, code 7); without it, a backend whose ``netconf_switch`` key
    is true in the netconf (Istio's ``native_nftables``), else ``iptables-restore``; ``backend:
    "auto"`` takes the first one (the core's first) whose ``host_problems()`` is empty. A true
    Istio switch no enabled backend claims, or a switch contradicting ``backend``, fails every
    command (code 7). Before each ADD, the selected backend's ``host_problems()`` must be empty, or
    the ADD fails listing them (code 105) with nothing applied, and install-cni stays not ready;
    ``meshcni explain`` prints its ``transaction(plan)``.
    Errors: a name registered twice, or any exception, fails every command (code 101 or 100).
    Example::

        @hookimpl
        def meshcni_register_backends(self):
            return [BackendInfo(name="acme-nft", factory=AcmeNftBackend, provider="acme-nft",
                                netconf_switch="acme_nftables")]
    """
    raise NotImplementedError


@hookspec
def meshcni_register_repair_policies() -> Sequence[RepairPolicy]:
    """Return the repair policies this plugin provides (used by ``meshcni repair``).

    When: when ``meshcni repair`` starts, with the extensions it was told to enable.
    Result: every plugin's records count; the repair configuration picks one by name.
    Errors: a name registered twice, or any exception, stops ``meshcni repair`` at start-up with a
    message naming the extension (no CNI command involved; pods are not affected).
    Example::

        @hookimpl
        def meshcni_register_repair_policies(self):
            return [RepairPolicy(name="acme-page", act=page_the_owner, provider="acme-repair")]
    """
    raise NotImplementedError


@hookspec
def meshcni_register_platforms() -> Sequence[Platform]:
    """Return the hosted platforms this plugin provides defaults for (``meshcni manifest``).

    When: when ``meshcni manifest`` resolves ``values.cni.platform`` and when install-cni starts
    with ``MESHCNI_PLATFORM``.
    Result: every plugin's records count; the named platform's ``defaults`` apply below the
    operator's own values.
    Errors: a name registered twice, or any exception, stops the command naming the extension.
    Example::

        @hookimpl
        def meshcni_register_platforms(self):
            return [Platform(name="acme-cloud", defaults={"values": {"cni": {"cniBinDir": "/opt/acme/bin"}}})]
    """
    raise NotImplementedError


@hookspec
def meshcni_manifest_objects(values: ManifestValues) -> Sequence[Mapping[str, Any]]:
    """Return extra Kubernetes objects for ``meshcni manifest generate`` (e.g. a platform's own kinds).

    When: once per ``meshcni manifest generate``/``apply``, with the resolved install values
    (``values.cni`` read-only however deep: mappings as read-only views, lists as tuples).
    Result: every plugin's objects are appended to the generated ones, in registration order.
    Errors: any exception stops ``meshcni manifest`` naming the extension; nothing is applied.
    Example::

        @hookimpl
        def meshcni_manifest_objects(self, values):
            return [{"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "acme", "namespace": values.namespace}}]
    """
    raise NotImplementedError


@hookspec
def meshcni_install_check(node: NodeFacts) -> Sequence[str] | None:
    """Return what keeps this node from working on the platform, each with its fix.

    When: by ``meshcni install-cni`` for the extension of ``MESHCNI_PLATFORM`` on every reconcile,
    before our conf entry is written.
    Result: any returned problem keeps the entry unwritten (a node whose runtime cannot find the
    plugin must not be told to run it) and the agent not ready; ``/readyz`` lists the problems.
    ``None`` or ``[]``: nothing wrong.
    Errors: an exception is reported as a problem naming the extension (the node stays not ready;
    pods already running are not touched, new pods wait for the node).
    Example::

        @hookimpl
        def meshcni_install_check(self, node):
            if "acme-cni" not in node.bin_files:
                return [f"acme-cni is missing from {node.bin_dir}: install the Acme CNI first"]
            return None
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Config load
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def meshcni_load_config(netconf: Mapping[str, object], env: Mapping[str, str]) -> PluginConfig | None:
    """Turn the request's netconf (stdin JSON) into a :class:`PluginConfig`.

    When: once per pipeline, before the registration hooks' records are used. ``env`` is the
    plugin process's environment when ``istio-cni`` serves a request itself; the node agent builds
    one pipeline per configuration and passes an empty mapping, so a configuration must not
    depend on per-request variables (``CNI_*``). Both are read-only however deep (mappings as
    read-only views, lists as tuples): build the configuration, never edit the netconf.
    Result: firstresult; the first non-``None`` ``PluginConfig`` is the configuration. The core's
    implementation is ``trylast``; to adjust its result, write a ``wrapper=True`` implementation
    that takes the result of ``yield`` and returns a ``dataclasses.replace`` of it.
    Errors: ``ConfigError`` rejects the configuration: every command fails with code 7 and no pod
    on the network starts until it is fixed; any other exception fails with code 100.
    Example::

        @hookimpl(wrapper=True)
        def meshcni_load_config(self, netconf, env):
            config = yield
            return dataclasses.replace(config, cni_bin_dir="/opt/acme/bin")
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Eligibility
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_pod_verdict(pod: PodInfo, config: PluginConfig) -> Verdict | None:
    """Vote on whether ``pod`` is redirected.

    When: on every ADD, CHECK and ``meshcni explain``, and on DEL when the pod's annotations came
    with the request, after the pod's metadata is known.
    Result: every implementation runs; ``None`` abstains, any ``SKIP`` wins (the pod starts without
    redirection, as Istio leaves pods it does not manage). The core votes with the seed page's
    rules (excluded namespace, ``istio-proxy`` container, more than one container,
    ``sidecar.istio.io/inject``, ``sidecar.istio.io/status``, no ``istio-init``).
    Errors: a ``MeshcniError`` fails the ADD with its code, any other exception with 100; the
    pod does not start.
    Example::

        @hookimpl
        def meshcni_pod_verdict(self, pod, config):
            if pod.namespace.startswith("sandbox-"):
                return Verdict.skip("acme-sandbox", "sandbox namespaces are not meshed", source="acme")
            return None
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Rule build
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def meshcni_redirect_spec(pod: PodInfo, config: PluginConfig) -> RedirectSpec | None:
    """Derive the core's redirect parameters of an eligible pod.

    When: on ADD, CHECK and ``meshcni explain`` for a pod every vote redirects; the claims'
    ``parse`` add extensions' parameters to its result afterwards.
    Result: firstresult; the core's ``trylast`` implementation reads Istio's annotations with Istio
    1.6's defaults. Every field is checked before a rule is built from it.
    Errors: ``AnnotationError`` for an invalid value fails the ADD with code 103 naming the
    annotation; nothing is applied and the pod does not start.
    Example::

        @hookimpl(wrapper=True)
        def meshcni_redirect_spec(self, pod, config):
            spec = yield
            return dataclasses.replace(spec, exclude_outbound_ports=(*spec.exclude_outbound_ports, 5432))
    """
    raise NotImplementedError


@hookspec
def meshcni_extra_rules(
    pod: PodInfo, spec: RedirectSpec, config: PluginConfig, netns: NetnsFacts, family: int
) -> Sequence[Rule | RouteStep] | None:
    """Contribute rules and route steps for one address family beyond the mode's.

    When: on ADD, CHECK and ``meshcni explain``, once per address family of the pod (4, and 6 when
    it has a global IPv6 address), after the redirect parameters are known.
    Result: every implementation runs; the items join the plan in registration order (built-ins,
    then extensions as enabled). ``RouteStep``s are applied by whichever backend is selected,
    rolled back with the plan on failure and undone on DEL through their ``undo``.
    Errors: ``RuleBuildError`` (code 104) or any other exception (100) fails the ADD before
    anything is applied; the pod does not start.
    Example::

        @hookimpl
        def meshcni_extra_rules(self, pod, spec, config, netns, family):
            vms = spec.params(VmInterfaces)
            return [Rule(family, "nat", "PREROUTING", ("-i", name, "-j", "RETURN"), head=True, source="acme")
                    for name in (vms.names if vms else ())]
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_report(outcome: Outcome) -> None:
    """Observe the outcome of one command (logs, metrics, events).

    When: after every ADD (applied or passed through) and every DEL that knew its pod.
    Result: ignored.
    Errors: logged and swallowed; the command's result is unchanged (the pod starts if the ADD
    succeeded). Implementations pluggy had not yet called for that outcome are skipped.
    Example::

        @hookimpl
        def meshcni_report(self, outcome):
            self.counts["redirected" if outcome.redirected else "passed"] += 1
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# DEL
# --------------------------------------------------------------------------------------------


@hookspec
def meshcni_teardown(target: Target, config: PluginConfig, pod: PodInfo | None) -> None:
    """Undo anything an extension did outside the rule plan on DEL.

    When: on every DEL, after the backend removed the plan's rules and route steps; ``pod`` is
    ``None`` when DEL came without pod metadata (DEL never asks the API server).
    Result: ignored.
    Errors: logged and swallowed; DEL still succeeds, since a runtime retries a failed DEL forever.
    Example::

        @hookimpl
        def meshcni_teardown(self, target, config, pod):
            release_lease(target.container_id)
    """
    raise NotImplementedError
