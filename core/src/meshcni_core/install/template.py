"""Istio's netconf template: placeholders filled in, then parsed as our plugin entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PLACEHOLDERS = (
    "__KUBECONFIG_FILEPATH__", "__KUBERNETES_SERVICE_HOST__", "__KUBERNETES_SERVICE_PORT__",
    "__KUBERNETES_NODE_NAME__", "__KUBECONFIG_FILENAME__", "__LOG_LEVEL__",
)


class TemplateError(ValueError):
    pass


def render_entry(template: str, values: Mapping[str, str], source: str) -> dict[str, Any]:
    """Substitute every placeholder (literally, everywhere) and parse the result."""
    text = template
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, values.get(placeholder, ""))
    if "__SERVICEACCOUNT_TOKEN__" in text:
        raise TemplateError(
            f"{source} uses __SERVICEACCOUNT_TOKEN__: the token would land in a world-readable conf file; "
            "use the kubeconfig (__KUBECONFIG_FILEPATH__) instead"
        )
    try:
        entry = json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"{source} is not valid JSON after substitution: {exc}") from None
    if not isinstance(entry, dict) or entry.get("type") != "istio-cni":
        raise TemplateError(f"{source} must be a JSON object with \"type\": \"istio-cni\"")
    return entry
