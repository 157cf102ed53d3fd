"""Built-in plugin: Istio's netconf (unchanged) plus meshcni's keys -> PluginConfig.

Validated by hand rather than with marshmallow: this runs on every pod start, and importing
marshmallow alone costs about 68 ms here (ARCHITECTURE.md §5). Every message names the key.
Unknown keys are ignored as Istio ignores them (runtimes add their own), but unknown keys inside
``kubernetes`` are logged, since they are usually typos.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from meshcni_core.agent.client import agent_timeout
from meshcni_core.logs import LEVEL_NAMES
from meshcni_hooks import hookimpl
from meshcni_hooks.errors import ConfigError, MeshcniError
from meshcni_hooks.types import PluginConfig

log = logging.getLogger("meshcni")

KUBERNETES_KEYS = {
    "kubeconfig", "k8s_api_root", "node_name", "exclude_namespaces", "cni_bin_dir", "intercept_type",
    "pod_lookup_timeout",
}
INTERCEPT_TYPES = ("iptables",)
ATTACHMENTS = ("chained", "secondary")
FLAVOURS = ("auto", "nft", "legacy")
LOG_LEVELS = LEVEL_NAMES


def _string(obj: Mapping[str, object], key: str, path: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"netconf key {path} must be a string, got {type(value).__name__}: {value!r}")
    return value


def _string_list(obj: Mapping[str, object], key: str, path: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"netconf key {path} must be a list of strings, got {value!r}")
    return tuple(value)


def _bool(obj: Mapping[str, object], key: str, path: str) -> bool:
    value = obj.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"netconf key {path} must be true or false, got {value!r}")
    return value


def _choice(value: str, path: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"netconf key {path}={value!r} is not one of {', '.join(choices)}")
    return value


def _check_lookup_within_agent_deadline(lookup_timeout: float, netconf: Mapping[str, object]) -> None:
    """The pod lookup must end before istio-cni stops waiting for the agent, so that the lookup's
    own error (naming the pod and the API's last answer) is what the runtime reports."""
    try:
        deadline = agent_timeout(netconf)
    except MeshcniError as exc:
        raise ConfigError(exc.msg) from None
    if lookup_timeout >= deadline:
        raise ConfigError(
            f"netconf key kubernetes.pod_lookup_timeout ({lookup_timeout:g}s) must be shorter than "
            f"agent_timeout ({deadline:g}s, how long istio-cni waits for the node agent)"
        )


def load_plugin_config(netconf: Mapping[str, object]) -> PluginConfig:
    k8s = netconf.get("kubernetes", {})
    if k8s is None:
        k8s = {}
    if not isinstance(k8s, Mapping):
        raise ConfigError(f"netconf key kubernetes must be an object, got {k8s!r}")
    unknown = sorted(set(k8s) - KUBERNETES_KEYS)
    if unknown:
        log.warning("ignoring unknown netconf keys: %s", ", ".join(f"kubernetes.{k}" for k in unknown))
    timeout = k8s.get("pod_lookup_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise ConfigError(f"netconf key kubernetes.pod_lookup_timeout must be seconds in (0, 300], got {timeout!r}")
    _check_lookup_within_agent_deadline(float(timeout), netconf)
    settings = netconf.get("extension_settings", {}) or {}
    if not isinstance(settings, Mapping) or not all(isinstance(v, Mapping) for v in settings.values()):
        raise ConfigError(f"netconf key extension_settings must map extension names to objects, got {settings!r}")
    log_level = _string(netconf, "log_level", "log_level", "info").lower()
    return PluginConfig(
        cni_version=_string(netconf, "cniVersion", "cniVersion"),
        network_name=_string(netconf, "name", "name"),
        exclude_namespaces=_string_list(k8s, "exclude_namespaces", "kubernetes.exclude_namespaces"),
        kubeconfig=_string(k8s, "kubeconfig", "kubernetes.kubeconfig"),
        k8s_api_root=_string(k8s, "k8s_api_root", "kubernetes.k8s_api_root"),
        node_name=_string(k8s, "node_name", "kubernetes.node_name"),
        cni_bin_dir=_string(k8s, "cni_bin_dir", "kubernetes.cni_bin_dir") or "/opt/cni/bin",
        intercept_type=_choice(
            _string(k8s, "intercept_type", "kubernetes.intercept_type") or "iptables",
            "kubernetes.intercept_type", INTERCEPT_TYPES,
        ),
        log_level=_choice(log_level, "log_level", LOG_LEVELS),
        extensions=_string_list(netconf, "extensions", "extensions"),
        backend=_string(netconf, "backend", "backend"),
        iptables_flavour=_choice(
            _string(netconf, "iptables_flavour", "iptables_flavour") or "auto", "iptables_flavour", FLAVOURS
        ),
        pod_lookup_timeout=float(timeout),
        attachment=_choice(_string(netconf, "attachment", "attachment") or "chained", "attachment", ATTACHMENTS),
        extension_settings=settings,
        dns_capture=_bool(netconf, "dns_capture", "dns_capture"),
        switches={key: value for key, value in netconf.items() if isinstance(value, bool)},
    )


class NetconfLoader:
    @hookimpl(trylast=True)
    def meshcni_load_config(self, netconf: Mapping[str, object], env: Mapping[str, str]) -> PluginConfig:
        return load_plugin_config(netconf)
