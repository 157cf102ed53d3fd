"""The agent's own plugin configuration, and what it takes from a client's request.

The agent runs pipelines with the configuration install-cni wrote into the node's CNI
configuration (or the file ``meshcni agent --config`` names). From a client's netconf it takes
only the per-request parts - the runtime's ``prevResult``, ``runtimeConfig`` and ``args``, the
network's ``name`` and ``cniVersion`` (the result's format), a GC's attachment lists - so no
client chooses the extensions, the backend or the kubeconfig the agent runs with. Other keys in
which the client differs are reported (and ignored): during an upgrade the runtime may still
send the previous entry for a moment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PER_REQUEST_KEYS = frozenset({
    "cniVersion", "name", "prevResult", "runtimeConfig", "args", "cni.dev/valid-attachments", "cni.dev/attachments",
})
PLUGIN_TYPE = "istio-cni"


class AgentConfigError(Exception):
    pass


def own_part(netconf: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that configure the plugin (everything but the per-request parts)."""
    return {k: v for k, v in netconf.items() if k not in PER_REQUEST_KEYS}


def for_request(own: Mapping[str, Any], client: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The netconf a request runs with: the agent's own configuration plus the client's
    per-request parts; and the configuration keys in which the client's netconf differs."""
    differing = sorted(k for k in own_part(client).keys() | own_part(own).keys() if client.get(k) != own.get(k))
    netconf = {**own_part(own), **{k: v for k, v in client.items() if k in PER_REQUEST_KEYS}}
    return netconf, differing


def load_file(path: str) -> dict[str, Any]:
    """The istio-cni netconf in ``path``: a plugin's netconf, or a conflist holding one."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise AgentConfigError(f"cannot read the agent's configuration {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise AgentConfigError(f"{path} is not a JSON object")
    entries = doc.get("plugins", [doc])
    if not isinstance(entries, list):
        raise AgentConfigError(f"{path}: plugins is not a list")
    found = [e for e in entries if isinstance(e, dict) and e.get("type") == PLUGIN_TYPE]
    if len(found) != 1:
        raise AgentConfigError(f"{path} must hold exactly one {PLUGIN_TYPE} entry, found {len(found)}")
    return {"cniVersion": doc.get("cniVersion", "1.0.0"), "name": doc.get("name", "k8s-pod-network"), **found[0]}
