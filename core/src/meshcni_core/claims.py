"""Which annotations and settings each enabled extension owns, and what it parsed from them.

Extensions declare :class:`~meshcni_hooks.types.Claim` records (hook ``meshcni_register_claims``).
The core validates every extension's settings block once, when a pipeline is built, and per pod
hands each claim the annotations and settings it owns; the frozen results travel in
``RedirectSpec.extension_params``. An annotation in Istio's namespaces that neither the core
nor an enabled extension knows is reported (a warning); one that an installed but disabled
extension claims fails the ADD, naming the extension to enable.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from meshcni_core.builtin.annotations import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_INTERFACES,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_OUTBOUND_PORTS,
    INTERCEPTION_MODE,
)
from meshcni_core.builtin.dns_capture import PROXY_CONFIG
from meshcni_core.builtin.eligibility import INJECT, STATUS
from meshcni_core.hookcalls import read_only
from meshcni_hooks.errors import ConfigError, ExtensionError, SettingError
from meshcni_hooks.types import Claim, ExtensionParams

# The annotations the core itself reads.
CORE_ANNOTATIONS = frozenset({
    INTERCEPTION_MODE, INCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_IP_RANGES, INCLUDE_INBOUND_PORTS,
    EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_PORTS, INCLUDE_OUTBOUND_PORTS, EXCLUDE_INTERFACES, PROXY_CONFIG,
    INJECT, STATUS,
})
# Namespaces of annotations for Istio's injector and proxy, not for the CNI plugin: never reported.
NOT_FOR_THE_PLUGIN = (
    "sidecar.istio.io/", "proxy.istio.io/", "prometheus.istio.io/", "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/", "inject.istio.io/", "ambient.istio.io/", "istio.io/rev",
    "istio.io/dataplane-mode", "istio.io/use-waypoint",
)


def in_istio_namespace(key: str) -> bool:
    """``istio.io/...`` or ``<anything>.istio.io/...``, Kubernetes' prefix/name form."""
    prefix, slash, _ = key.partition("/")
    return bool(slash) and (prefix == "istio.io" or prefix.endswith(".istio.io"))


def needs_an_owner(key: str) -> bool:
    """An Istio annotation that only a claiming extension could act on."""
    return in_istio_namespace(key) and key not in CORE_ANNOTATIONS and not key.startswith(NOT_FOR_THE_PLUGIN)


@dataclass(frozen=True)
class Claims:
    """The enabled extensions' claims, checked: no annotation key or settings block claimed twice."""

    claims: tuple[Claim, ...] = ()

    @classmethod
    def of(cls, records: Sequence[Claim]) -> Claims:
        owners: dict[str, str] = {}
        extensions: set[str] = set()
        for claim in records:
            if claim.extension in extensions:
                raise ExtensionError(f"extension settings {claim.extension!r} are claimed twice")
            extensions.add(claim.extension)
            for key in claim.annotations:
                if key in owners or key in CORE_ANNOTATIONS:
                    first = owners.get(key, "the core")
                    raise ExtensionError(f"annotation {key} is claimed twice: by {first} and by {claim.extension}")
                owners[key] = claim.extension
        return cls(tuple(records))

    def owner(self, key: str) -> str | None:
        return next((c.extension for c in self.claims if key in c.annotations), None)

    def validate_settings(self, raw: Mapping[str, object]) -> Mapping[str, object]:
        """Every extension's settings block parsed into its own frozen value, read-only; a block no
        enabled extension claims, or one its extension rejects, raises ConfigError."""
        by_name = {c.extension: c for c in self.claims}
        unclaimed = sorted(set(raw) - {name for name, c in by_name.items() if c.parse_settings})
        if unclaimed:
            readers = ", ".join(sorted(n for n, c in by_name.items() if c.parse_settings)) or "none"
            raise ConfigError(
                f"netconf key extension_settings.{unclaimed[0]}: no enabled extension reads settings of that name "
                f"(enabled extensions with settings: {readers})"
            )
        parsed: dict[str, object] = {}
        for name, claim in by_name.items():
            if claim.parse_settings is None:
                continue
            block = raw.get(name) or {}
            if not isinstance(block, Mapping):
                raise ConfigError(f"netconf key extension_settings.{name} must be an object, got {block!r}")
            try:
                parsed[name] = claim.parse_settings(read_only(block))
            except SettingError as exc:
                raise SettingError(f"extension_settings.{name}.{exc.setting}", exc.value, exc.reason) from None
        return types.MappingProxyType(parsed)

    def params(self, annotations: Mapping[str, str], settings: Mapping[str, object]) -> tuple[ExtensionParams, ...]:
        """What each claim parsed from this pod, in claim (registration) order."""
        found = []
        for claim in self.claims:
            if claim.parse is None:
                continue
            mine = types.MappingProxyType({k: v for k, v in annotations.items() if k in claim.annotations})
            result = claim.parse(mine, settings.get(claim.extension))
            if result is not None:
                found.append(result)
        return tuple(found)

    def unowned(self, annotations: Mapping[str, str]) -> list[str]:
        """Istio annotations of the pod that neither the core nor an enabled extension reads."""
        return sorted(k for k in annotations if needs_an_owner(k) and self.owner(k) is None)


def refuse_disabled_owner(annotations: Mapping[str, str], keys: Sequence[str],
                          installed_owner: Callable[[str], str | None]) -> None:
    """Fail closed when a non-empty annotation is claimed by an installed extension that is not
    enabled: its capture change would otherwise be silently dropped."""
    from meshcni_hooks.errors import AnnotationError

    for key in keys:
        if annotations[key] == "":
            continue
        extension = installed_owner(key)
        if extension is not None:
            raise AnnotationError(
                key, annotations[key],
                f"read by extension {extension!r}, which is installed but not enabled "
                f"(enable the '{extension}' extension)",
            )
