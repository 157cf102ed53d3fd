"""Extension loading: stevedore selects, pluggy dispatches.

* One discovery channel, the entry-point group ``meshcni.extensions``.
* Installed is not enabled: only the names listed in configuration are imported, in order.
* A missing, broken or incompatible extension, a misspelt hook, and two providers of the same
  mode/backend name are errors that name the culprit.
* A new PluginManager per process (and per test); there is no module-global manager.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

import meshcni_hooks
from meshcni_core.builtin import builtin_plugins
from meshcni_core.hookcalls import HookCalls
from meshcni_hooks import PROJECT_NAME, spec
from meshcni_hooks.errors import ExtensionError
from meshcni_hooks.types import BackendInfo, Platform, RedirectMode, RepairPolicy

ENTRY_POINT_GROUP = "meshcni.extensions"
HOOKS_DISTRIBUTION = "meshcni-hooks"
log = logging.getLogger("meshcni")


@dataclass(frozen=True)
class InstalledExtension:
    name: str
    target: str
    distribution: str
    version: str


def installed_extensions() -> list[InstalledExtension]:
    """Entry points of the ``meshcni.extensions`` group, read without importing anything."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found.append(
            InstalledExtension(
                name=ep.name,
                target=ep.value,
                distribution=dist.metadata["Name"] if dist else "?",
                version=dist.version if dist else "?",
            )
        )
    return sorted(found, key=lambda e: e.name)


def new_manager(enabled: Sequence[str] = ()) -> pluggy.PluginManager:
    """A plugin manager with the core's built-in plugins and the enabled extensions, checked."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(spec)
    for name, plugin in builtin_plugins():
        pm.register(plugin, name=name)
    if enabled:
        _load_enabled(pm, enabled)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or type(exc.plugin).__name__
        problem = str(exc).split(" in plugin ")[0]  # pluggy appends the object's repr
        raise ExtensionError(f"{describe(name)} implements an {problem}") from None
    return pm


def describe(name: str) -> str:
    """``extension 'x' (meshcni-x 1.0)``: an extension named with its distribution and version."""
    for ext in installed_extensions():
        if ext.name == name:
            return f"extension {name!r} ({ext.distribution} {ext.version})"
    return f"plugin {name!r}"


def _load_enabled(pm: pluggy.PluginManager, enabled: Sequence[str]) -> None:
    duplicates = sorted({n for n in enabled if list(enabled).count(n) > 1})
    if duplicates:
        raise ExtensionError(f"extensions listed more than once: {', '.join(duplicates)}")
    from stevedore import NamedExtensionManager  # imported only when extensions are enabled

    def on_missing(names: Iterable[str]) -> None:
        installed = ", ".join(e.name for e in installed_extensions()) or "none"
        raise ExtensionError(
            f"enabled extension(s) not installed: {', '.join(sorted(names))} (installed: {installed})"
        )

    def on_failure(manager: Any, entrypoint: Any, exc: BaseException) -> None:
        raise ExtensionError(
            f"extension {entrypoint.name!r} ({entrypoint.value}) failed to load: {type(exc).__name__}: {exc}"
        )

    manager = NamedExtensionManager(
        namespace=ENTRY_POINT_GROUP,
        names=list(enabled),
        invoke_on_load=False,
        name_order=True,
        on_missing_entrypoints_callback=on_missing,
        on_load_failure_callback=on_failure,
    )
    distributions = _distributions_by_entry_point()
    for ext in manager.extensions:
        dist = distributions.get(ext.name)
        if dist is not None:
            _check_hooks_requirement(ext.name, dist)
        plugin = ext.plugin() if isinstance(ext.plugin, type) else ext.plugin
        try:
            pm.register(plugin, name=ext.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            problem = str(exc).split(" in plugin ")[0]
            raise ExtensionError(f"{describe(ext.name)} could not be registered: {problem}") from None
        log.debug(
            "enabled extension %s from %s %s", ext.name,
            dist.metadata["Name"] if dist else "?", dist.version if dist else "?",
        )


def _distributions_by_entry_point() -> dict[str, importlib.metadata.Distribution]:
    """Entry-point name -> its distribution (stevedore's cached entry points carry no ``dist``)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            found.setdefault(ep.name, ep.dist)
    return found


def _check_hooks_requirement(name: str, dist: importlib.metadata.Distribution) -> None:
    """Refuse an extension built against a meshcni-hooks version range that excludes ours."""
    from packaging.requirements import Requirement

    for text in dist.requires or []:
        req = Requirement(text)
        if req.name == HOOKS_DISTRIBUTION and req.marker is None:
            ours = meshcni_hooks.__version__
            if not req.specifier.contains(ours, prereleases=True):
                raise ExtensionError(
                    f"extension {name!r} ({dist.metadata['Name']} {dist.version}) requires "
                    f"{HOOKS_DISTRIBUTION}{req.specifier}, but {ours} is installed"
                )


def provider_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or type(plugin).__name__


def redirect_modes(pm: pluggy.PluginManager) -> dict[str, RedirectMode]:
    return HookCalls(pm).redirect_modes()


def backends(pm: pluggy.PluginManager) -> dict[str, BackendInfo]:
    return HookCalls(pm).backends()


def repair_policies(pm: pluggy.PluginManager) -> dict[str, RepairPolicy]:
    return HookCalls(pm).repair_policies()


def platforms(pm: pluggy.PluginManager) -> dict[str, Platform]:
    return HookCalls(pm).platforms()


def probe_installed(enabled: Sequence[str], wanted: Callable[[HookCalls], bool]) -> str | None:
    """The first installed extension, not among ``enabled``, for which ``wanted`` holds when it is
    loaded alone beside the built-ins: how the core finds which extension to name in an error
    without knowing any extension by name. Only error paths call it (it imports extensions)."""
    found = installed_where(wanted, exclude=enabled, first_only=True)
    return found[0] if found else None


def installed_redirect_extensions() -> list[str]:
    """Installed extensions that change what is captured: they register an interception mode or
    claim annotations, settings or drop-in options. What the ``istio-iptables`` drop-in, the
    default ``meshcni explain`` netconf and the dev tools enable, without naming any."""

    def redirects(hooks: HookCalls) -> bool:
        return set(hooks.redirect_modes()) != {"REDIRECT"} or bool(hooks.claims())

    return installed_where(redirects)


def installed_where(wanted: Callable[[HookCalls], bool], exclude: Sequence[str] = (),
                    first_only: bool = False) -> list[str]:
    """Installed extensions (not in ``exclude``) for which ``wanted`` holds, each loaded alone."""
    found = []
    for ext in installed_extensions():
        if ext.name in exclude:
            continue
        try:
            if wanted(HookCalls(new_manager([ext.name]))):
                found.append(ext.name)
                if first_only:
                    break
        except Exception as exc:  # noqa: BLE001 - a broken bystander must not hide the real error
            log.debug("probing installed extension %s failed: %s", ext.name, exc)
    return found
