"""Hosted platforms, each from its own extension (platform ``gke`` is the extension ``platform-gke``).

``meshcni manifest`` takes a platform's defaults (``values.cni.platform``); ``meshcni install-cni``
runs its node checks (``MESHCNI_PLATFORM``, which the manifest sets from the same value).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshcni_core.hookcalls import HookCalls
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import NodeFacts, Platform

ENTRY_POINT_PREFIX = "platform-"


def load_platform(name: str, setting: str = "values.cni.platform") -> tuple[Any, Platform]:
    """The plugin manager holding the platform's extension, and the platform it registers.

    ``setting`` names where the platform was asked for, for the error message.
    """
    from meshcni_core import extensions

    extension = ENTRY_POINT_PREFIX + name
    installed = sorted(e.name for e in extensions.installed_extensions())
    if extension not in installed:
        known = [n[len(ENTRY_POINT_PREFIX):] for n in installed if n.startswith(ENTRY_POINT_PREFIX)]
        raise MeshcniError(f"{setting}: {name!r} needs the extension {extension!r}, which is not installed "
                           f"(installed platforms: {', '.join(known) or 'none'})")
    pm = extensions.new_manager([extension])
    registered = extensions.platforms(pm)
    if name not in registered:
        raise MeshcniError(f"extension {extension!r} does not register the platform {name!r}")
    return pm, registered[name]


def node_checker(name: str) -> Callable[[NodeFacts], list[str]]:
    """The install-time checks of the platform ``name`` (``MESHCNI_PLATFORM``) as one function."""
    pm, platform = load_platform(name, setting="MESHCNI_PLATFORM")
    return checks_of(pm, platform)


def checks_of(pm: Any, platform: Platform) -> Callable[[NodeFacts], list[str]]:
    """Every ``meshcni_install_check`` of ``pm``; each problem starts with the platform's name.

    A check that raises is itself a problem naming the extension: the node stays not ready rather
    than being configured without the check.
    """

    def check(node: NodeFacts) -> list[str]:
        try:
            problems = HookCalls(pm).install_check(node)
        except Exception as exc:  # noqa: BLE001 - a third party's failing check is reported, never fatal
            return [f"{platform.name}: the install check of {platform.provider} failed: {type(exc).__name__}: {exc}"]
        return [f"{platform.name}: {problem}" for problem in problems]

    return check
