"""Hosted-platform defaults, each from its own extension (``values.cni.platform: gke`` loads ``platform-gke``)."""

from __future__ import annotations

from typing import Any

from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import Platform

ENTRY_POINT_PREFIX = "platform-"


def load_platform(name: str) -> tuple[Any, Platform]:
    """The plugin manager holding the platform's extension, and the platform it registers."""
    from meshcni_core import extensions

    extension = ENTRY_POINT_PREFIX + name
    installed = sorted(e.name for e in extensions.installed_extensions())
    if extension not in installed:
        known = [n[len(ENTRY_POINT_PREFIX):] for n in installed if n.startswith(ENTRY_POINT_PREFIX)]
        raise MeshcniError(f"values.cni.platform: {name!r} needs the extension {extension!r}, which is not installed "
                           f"(installed platforms: {', '.join(known) or 'none'})")
    pm = extensions.new_manager([extension])
    registered = extensions.platforms(pm)
    if name not in registered:
        raise MeshcniError(f"extension {extension!r} does not register the platform {name!r}")
    return pm, registered[name]
