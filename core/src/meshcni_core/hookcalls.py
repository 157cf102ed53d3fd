"""The one caller of ``pm.hook.*``: every hook call goes through pluggy here, typed.

Going through pluggy (never calling an implementation's function by hand) is what makes
``wrapper=True`` implementations, ``tryfirst``/``trylast`` and pluggy's tracing work for every
hook. pluggy calls implementations in reverse registration order; where the order of
contributions matters (rules), results are put back in registration order (built-ins, then
extensions in the order they are enabled).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from typing import Any

import pluggy

from meshcni_hooks.errors import ExtensionError
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

log = logging.getLogger("meshcni")


def read_only(value: Any) -> Any:
    """``value`` as a hook may see it: every mapping in it a read-only view and every list a tuple,
    however deep (a netconf's ``kubernetes`` block, an extension's settings, install values)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({key: read_only(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(read_only(item) for item in value)
    return value


class HookCalls:
    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm

    # -- start-up registration ------------------------------------------------------------------

    def _records(self, hook_name: str, kind: str) -> dict[str, Any]:
        """Named records of a registration hook, in registration order; a name provided twice is
        an ExtensionError naming both providers."""
        results = getattr(self.pm.hook, hook_name)()
        records: dict[str, Any] = {}
        for batch in reversed(results):
            for record in batch or ():
                if record.name in records:
                    first, second = self._providers(hook_name, record.name)
                    raise ExtensionError(f"{kind} {record.name!r} is provided twice: by {first} and by {second}")
                records[record.name] = record
        return records

    def _providers(self, hook_name: str, name: str) -> tuple[str, str]:
        """Diagnostics only, on the error path: which two plugins return a record called ``name``."""
        found = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if not impl.hookwrapper and not impl.wrapper:
                if any(r.name == name for r in impl.function() or ()):
                    found.append(impl.plugin_name)
        found += ["?", "?"]
        return found[0], found[1]

    def redirect_modes(self) -> dict[str, RedirectMode]:
        return self._records("meshcni_register_redirect_modes", "redirect mode")

    def backends(self) -> dict[str, BackendInfo]:
        return self._records("meshcni_register_backends", "backend")

    def repair_policies(self) -> dict[str, RepairPolicy]:
        return self._records("meshcni_register_repair_policies", "repair policy")

    def platforms(self) -> dict[str, Platform]:
        return self._records("meshcni_register_platforms", "platform")

    def claims(self) -> list[Claim]:
        return [claim for batch in reversed(self.pm.hook.meshcni_register_claims()) for claim in batch or ()]

    def manifest_objects(self, values: ManifestValues) -> list[Mapping[str, Any]]:
        """Every plugin's objects, in registration order; each must be a Kubernetes object."""
        values = ManifestValues(namespace=values.namespace, cni=read_only(values.cni), platform=values.platform)
        objects = [obj for batch in reversed(self.pm.hook.meshcni_manifest_objects(values=values)) for obj in batch]
        for obj in objects:
            if not (isinstance(obj, Mapping) and obj.get("apiVersion") and obj.get("kind")
                    and isinstance(obj.get("metadata"), Mapping) and obj["metadata"].get("name")):
                raise ExtensionError(f"meshcni_manifest_objects returned {obj!r}, not a Kubernetes object "
                                     "(apiVersion, kind and metadata.name)")
        return objects

    def install_check(self, node: NodeFacts) -> list[str]:
        return [p for batch in reversed(self.pm.hook.meshcni_install_check(node=node)) for p in batch or ()]

    # -- one command ----------------------------------------------------------------------------

    def load_config(self, netconf: Mapping[str, object], env: Mapping[str, str]) -> PluginConfig:
        config = self.pm.hook.meshcni_load_config(netconf=read_only(netconf), env=read_only(env))
        if not isinstance(config, PluginConfig):
            raise ExtensionError(f"meshcni_load_config returned {type(config).__name__}, not a PluginConfig")
        return config

    def pod_verdicts(self, pod: PodInfo, config: PluginConfig) -> list[Verdict]:
        """Votes in pluggy's call order: the last enabled extension's first, the core's last."""
        return [v for v in self.pm.hook.meshcni_pod_verdict(pod=pod, config=config) if v is not None]

    def redirect_spec(self, pod: PodInfo, config: PluginConfig) -> RedirectSpec:
        spec = self.pm.hook.meshcni_redirect_spec(pod=pod, config=config)
        if not isinstance(spec, RedirectSpec):
            raise ExtensionError(f"meshcni_redirect_spec returned {type(spec).__name__}, not a RedirectSpec")
        return spec

    def extra_rules(
        self, pod: PodInfo, spec: RedirectSpec, config: PluginConfig, netns: NetnsFacts, family: int
    ) -> list[Rule | RouteStep]:
        batches = self.pm.hook.meshcni_extra_rules(pod=pod, spec=spec, config=config, netns=netns, family=family)
        return [item for batch in reversed(batches) for item in batch or ()]

    def report(self, outcome: Outcome) -> None:
        try:
            self.pm.hook.meshcni_report(outcome=outcome)
        except Exception as exc:  # noqa: BLE001 - report failures are logged, never fatal
            log.warning("report hook failed: %s: %s", type(exc).__name__, exc)

    def teardown(self, target: Target, config: PluginConfig, pod: PodInfo | None) -> None:
        try:
            self.pm.hook.meshcni_teardown(target=target, config=config, pod=pod)
        except Exception as exc:  # noqa: BLE001 - teardown failures are logged, never fatal
            log.warning("DEL: an extension's teardown failed: %s: %s", type(exc).__name__, exc)

