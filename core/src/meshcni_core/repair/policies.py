"""Repair policies chosen by their registered name (``meshcni_register_repair_policies``).

The built-in policies are always there. Other names come from extensions: those named with
``--extensions`` (``REPAIR_EXTENSIONS``), or, when none are named, the one installed extension
that registers the chosen name - so Istio's ``--delete-pods`` finds ``delete`` in
``meshcni-repair-delete`` and a third party's policy is used by its name alone. A name nobody
registers is an error that lists every known policy and the extension providing it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import RepairPolicy

log = logging.getLogger("meshcni.repair")


@dataclass(frozen=True)
class Offer:
    policy: RepairPolicy
    extension: str  # "" for the core's built-ins


def offers(enabled: Sequence[str] = ()) -> dict[str, Offer]:
    """Every policy the built-ins and the ``enabled`` extensions register, with who registers it."""
    from meshcni_core import extensions

    builtin = extensions.repair_policies(extensions.new_manager())
    found = {name: Offer(policy, "") for name, policy in builtin.items()}
    for extension in enabled:
        for name, policy in extensions.repair_policies(extensions.new_manager([extension])).items():
            if name not in builtin:
                found[name] = Offer(policy, extension)
    return found


def installed_offers() -> tuple[dict[str, list[Offer]], list[str]]:
    """Policy name -> the installed extensions registering it; and the extensions that failed to load."""
    from meshcni_core import extensions

    by_name: dict[str, list[Offer]] = {}
    broken: list[str] = []
    for installed in extensions.installed_extensions():
        try:
            found = offers([installed.name])
        except MeshcniError as exc:
            broken.append(f"{installed.name}: {exc.msg}")
            continue
        for name, offer in found.items():
            if offer.extension:
                by_name.setdefault(name, []).append(offer)
    return by_name, broken


def select(name: str, enabled: Sequence[str] = ()) -> RepairPolicy:
    """The policy registered as ``name`` by a built-in or an ``enabled`` extension; with no
    extension enabled, by the one installed extension that registers it."""
    known = offers(enabled)
    if name in known:
        return known[name].policy
    if enabled:
        raise MeshcniError(_unknown(name, known, enabled))
    by_name, broken = installed_offers()
    providers = by_name.get(name, [])
    if len(providers) == 1:
        log.info("repair policy %r from extension %r", name, providers[0].extension)
        return providers[0].policy
    if len(providers) > 1:
        names = ", ".join(offer.extension for offer in providers)
        raise MeshcniError(f"repair policy {name!r} is registered by several installed extensions ({names}): "
                           "name the one to use with --extensions (REPAIR_EXTENSIONS)")
    raise MeshcniError(_unknown(name, known, enabled, by_name, broken))


def _unknown(name: str, known: dict[str, Offer], enabled: Sequence[str],
             installed: dict[str, list[Offer]] | None = None, broken: Sequence[str] = ()) -> str:
    lines = [f"no repair policy {name!r} is registered; known policies:"]
    for policy_name, offer in sorted(known.items()):
        lines.append(f"  {policy_name}: " + (f"extension {offer.extension}" if offer.extension else "built in"))
    for policy_name, providers in sorted((installed or {}).items()):
        lines.extend(f"  {policy_name}: extension {offer.extension} (installed, {offer.policy.provider})"
                     for offer in providers)
    if enabled:
        lines.append(f"only the built-ins and --extensions {','.join(enabled)} were searched")
    else:
        lines.append("a policy comes from an extension that registers it through meshcni_register_repair_policies: "
                     "install its wheel")
    lines.extend(f"  could not load extension {problem}" for problem in broken)
    return "\n".join(lines)
