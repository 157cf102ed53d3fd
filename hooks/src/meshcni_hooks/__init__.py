"""meshcni's extension contract: hook specifications, frozen types and errors.

Extensions import only this package. Mark hook implementations with :data:`hookimpl`.
``hookimpl``, ``hookspec`` and ``__version__`` are created on first use, so that importing
``meshcni_hooks.errors`` or ``meshcni_hooks.types`` on the plugin's fast path does not import
pluggy or importlib.metadata.
"""

from __future__ import annotations

PROJECT_NAME = "meshcni"

TYPE_CHECKING = False  # importing typing would cost ~12 ms on the plugin's fast path
if TYPE_CHECKING:
    from typing import Any

    import pluggy

    hookimpl: pluggy.HookimplMarker
    hookspec: pluggy.HookspecMarker
    __version__: str


def __getattr__(name: str) -> Any:
    if name in ("hookimpl", "hookspec"):
        import pluggy

        marker = pluggy.HookimplMarker(PROJECT_NAME) if name == "hookimpl" else pluggy.HookspecMarker(PROJECT_NAME)
        globals()[name] = marker
        return marker
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("meshcni-hooks")
        except PackageNotFoundError:  # running from a source tree
            value = "0.0.0"
        globals()[name] = value
        return value
    raise AttributeError(f"module 'meshcni_hooks' has no attribute {name!r}")


__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]
