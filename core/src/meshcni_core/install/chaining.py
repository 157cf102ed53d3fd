"""Put our entry into a primary CNI's configuration, and take it out again - pure functions.

Chained: every earlier ``istio-cni`` entry is removed and ours appended last, everything else is
kept as it was. A single-plugin ``.conf``/``.json`` becomes ``<same base>.conflist`` built as
libcni builds it (the list keeps the original ``name`` and ``cniVersion``; the original object,
verbatim, is ``plugins[0]``); Istio instead renamed the network ``k8s-pod-network`` and forced
``cniVersion`` 0.3.0, which orphans the runtime's cached results (keyed by network name).

What uninstall needs to restore the original travels inside our own entry (``meshcni``), so no
state file is written anywhere. Anyone who can write the conf dir can forge that entry, so the
restore name is checked before it becomes a path (``restore_name_problem``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from meshcni_core.cni.protocol import SUPPORTED_VERSIONS, VERSION_WHEN_MISSING
from meshcni_core.install.files import plain_name_problem

PLUGIN_TYPE = "istio-cni"
MARKER = "meshcni"  # our entry's own key: {"converted_from": "<name>.conf"} after a conversion


class ChainError(ValueError):
    """The file cannot be chained safely; the message says why."""


@dataclass(frozen=True)
class Chained:
    name: str  # file name to write
    content: dict[str, Any]
    replaces: str | None = None  # a .conf/.json to remove once ``name`` is written
    refused: str = ""  # why a recorded restore name was not used (the list keeps its name instead)


def versions_the_runtime_may_pick(doc: dict[str, Any]) -> list[str]:
    versions = [str(doc.get("cniVersion") or VERSION_WHEN_MISSING)]
    extra = doc.get("cniVersions")
    if isinstance(extra, list):
        versions += [str(v) for v in extra]
    return versions


def check_versions(doc: dict[str, Any], name: str) -> None:
    unsupported = [v for v in versions_the_runtime_may_pick(doc) if v not in SUPPORTED_VERSIONS]
    if unsupported:
        raise ChainError(
            f"{name}: cniVersion {', '.join(unsupported)} is not supported by istio-cni "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)}); chaining would fail every pod's ADD"
        )


def is_ours(plugin: Any) -> bool:
    return isinstance(plugin, dict) and plugin.get("type") == PLUGIN_TYPE


def chain(name: str, doc: dict[str, Any], entry: dict[str, Any]) -> Chained:
    """The file content with our entry last. ``doc`` must be valid for its extension."""
    ours = copy.deepcopy(entry)
    ours.pop(MARKER, None)
    if name.endswith(".conflist"):
        check_versions(doc, name)
        previous = next((p for p in doc["plugins"] if is_ours(p)), None)
        if previous is not None and isinstance(previous.get(MARKER), dict):
            ours[MARKER] = previous[MARKER]  # keep what uninstall must restore
        patched = dict(doc)
        patched["plugins"] = [p for p in doc["plugins"] if not is_ours(p)] + [ours]
        return Chained(name, patched)
    if is_ours(doc):
        raise ChainError(f"{name} is istio-cni's own standalone file, not a primary CNI configuration")
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ChainError(f"{name} has no 'name'; a list made from it would be invalid")
    check_versions(doc, name)
    base = name.rsplit(".", 1)[0]
    ours[MARKER] = {"converted_from": name}
    result: dict[str, Any] = {}
    if "cniVersion" in doc:
        result["cniVersion"] = doc["cniVersion"]
    result["name"] = doc["name"]
    result["plugins"] = [copy.deepcopy(doc), ours]
    return Chained(f"{base}.conflist", result, replaces=name)


def restore_name_problem(list_name: str, value: Any) -> str:
    """Why ``value`` (a ``converted_from`` read from ``list_name``) must not be written ("" if it may).

    Our conversion turns ``<base>.conf`` or ``<base>.json`` into ``<base>.conflist``, so only those
    two names are accepted: a plain visible name in the conf dir, never another file there."""
    if not isinstance(value, str):
        return "it is not a string"
    problem = plain_name_problem(value)
    if problem:
        return problem
    base = list_name.removesuffix(".conflist")
    if value not in (f"{base}.conf", f"{base}.json"):
        return f"our conversion of {list_name} can only have come from {base}.conf or {base}.json"
    return ""


def unchain(name: str, doc: dict[str, Any], keep_name: bool = False) -> Chained | None:
    """The file as it was before us, or None when it holds nothing of ours. A list we made from
    a ``.conf`` becomes that ``.conf`` again (``replaces`` is then the ``.conflist``); when the
    recorded name is refused, or ``keep_name`` is set (the list is a symlink, which we never
    convert), the list only loses our entry and ``refused`` says why."""
    if not name.endswith(".conflist") or not any(is_ours(p) for p in doc.get("plugins", [])):
        return None
    ours = [p for p in doc["plugins"] if is_ours(p)]
    others = [p for p in doc["plugins"] if not is_ours(p)]
    marker = next((p[MARKER] for p in ours if isinstance(p.get(MARKER), dict)), None)
    refused = ""
    if marker is not None and "converted_from" in marker and len(others) == 1:
        converted = marker["converted_from"]
        problem = f"{name} is a symlink, which stays one" if keep_name else restore_name_problem(name, converted)
        if not problem:
            return Chained(converted, copy.deepcopy(others[0]), replaces=name)
        refused = f"converted_from {converted!r} in {name} refused: {problem}"
    result = dict(doc)
    result["plugins"] = others
    return Chained(name, result, refused=refused)


def owned_copy(primary_name: str, chained: dict[str, Any]) -> dict[str, Any]:
    """The list for our own file: ``chained`` (the primary's content with our entry last), our
    entry marked as the owned copy of ``primary_name`` so that uninstall removes the whole file."""
    content = copy.deepcopy(chained)
    content["plugins"][-1][MARKER] = {"owned_copy_of": primary_name}
    return content


def is_owned_copy(doc: dict[str, Any]) -> bool:
    plugins = doc.get("plugins")
    return isinstance(plugins, list) and any(
        is_ours(p) and isinstance(p.get(MARKER), dict) and "owned_copy_of" in p[MARKER] for p in plugins)


def has_our_entry_last(doc: dict[str, Any]) -> bool:
    plugins = doc.get("plugins")
    return isinstance(plugins, list) and bool(plugins) and is_ours(plugins[-1]) and sum(map(is_ours, plugins)) == 1


def plugin_types(doc: dict[str, Any]) -> tuple[str, ...]:
    """The executables the runtime looks up for a conf file's plugins other than ours (IPAM too)."""
    plugins = doc.get("plugins") if "plugins" in doc else [doc]
    types: list[str] = []
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, dict) or is_ours(plugin):
            continue
        ipam = plugin.get("ipam")
        for kind in (plugin.get("type"), ipam.get("type") if isinstance(ipam, dict) else None):
            if isinstance(kind, str) and kind and kind not in types:
                types.append(kind)
    return tuple(types)
