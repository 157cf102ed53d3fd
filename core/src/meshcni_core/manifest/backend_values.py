"""How install values choose the plugin's backend: Istio's ``values.global.nativeNftables`` and
meshcni's ``values.cni.backend``.

``nativeNftables: true`` becomes the netconf's ``native_nftables: true`` (as Istio's chart writes
it) and enables the installed extension whose backend that switch selects; ``values.cni.backend``
becomes the netconf's ``backend`` and enables the installed extension registering that backend.
No extension is named here: they are found among the installed ones by what they register.
"""

from __future__ import annotations

from typing import Any

from meshcni_core.schemas.boolean import parse_bool

NATIVE_NFTABLES = ("values", "global", "nativeNftables")
NATIVE_NFTABLES_SWITCH = "native_nftables"
CORE_CHOICES = ("", "auto", "iptables-restore")  # no extension needed


def native_nftables(spec: dict[str, Any], problems: list[str]) -> bool:
    """``values.global.nativeNftables`` (a YAML boolean or Go's ParseBool text), default false."""
    node: Any = spec
    for key in NATIVE_NFTABLES:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    try:
        return parse_bool(node)
    except ValueError as exc:
        problems.append(f"{'.'.join(NATIVE_NFTABLES)}: {exc}")
        return False


def backend_extensions(cni: dict[str, Any], nftables: bool, problems: list[str]) -> list[str]:
    """The installed extensions to enable (beyond ``values.cni.extensions``) for the backend the
    values choose; a choice no installed extension provides is a problem naming its path."""
    from meshcni_core import extensions
    from meshcni_core.backend_selection import claims_switch

    wanted: list[str] = []
    if nftables:
        found = extensions.installed_where(lambda hooks: claims_switch(NATIVE_NFTABLES_SWITCH, hooks), first_only=True)
        if found:
            wanted.append(found[0])
        else:
            problems.append(f"{'.'.join(NATIVE_NFTABLES)}: true, but no installed meshcni extension provides a "
                            f"backend selected by {NATIVE_NFTABLES_SWITCH}: install the extension that provides it")
    name = cni["backend"]
    if name not in CORE_CHOICES:
        found = extensions.installed_where(lambda hooks: name in hooks.backends(), first_only=True)
        if found:
            wanted.append(found[0])
        else:
            problems.append(f"values.cni.backend: no installed meshcni extension registers the backend {name!r}")
    return [name for name in dict.fromkeys(wanted) if name not in cni["extensions"]]
