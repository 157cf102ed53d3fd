"""Which registered backend programs this configuration's pods, without naming any extension.

The netconf's ``backend`` wins when it names one; else a backend whose ``netconf_switch`` key is
true (Istio's ``native_nftables``); else ``iptables-restore``. ``backend: "auto"`` takes the
first registered backend (the core's first) that reports no host problems, and logs why. A true
Istio switch that no enabled extension's backend claims is a configuration error: the pod must
not silently get the other flavour.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshcni_core import extensions
from meshcni_core.hookcalls import HookCalls
from meshcni_hooks.errors import ApplyError, ConfigError
from meshcni_hooks.types import Backend, BackendInfo, PluginConfig

log = logging.getLogger("meshcni")
AUTO = "auto"
DEFAULT = "iptables-restore"
# Istio's netconf keys that choose how a pod's rules are programmed (its install-cni writes them).
ISTIO_SWITCHES = ("native_nftables",)


@dataclass(frozen=True)
class Choice:
    """The backend to use (``""`` with ``auto``: decided on first use) and why."""

    name: str
    reason: str


def choose(config: PluginConfig, registered: Mapping[str, BackendInfo]) -> Choice:
    """The configured choice, checked against the registered backends (ConfigError when wrong)."""
    switched = [i for i in registered.values() if i.netconf_switch and config.switches.get(i.netconf_switch)]
    claimed = {info.netconf_switch for info in registered.values()}
    for key in ISTIO_SWITCHES:
        if config.switches.get(key) and key not in claimed:
            provider = extensions.probe_installed(config.extensions, functools.partial(claims_switch, key))
            hint = f": enable the '{provider}' extension" if provider else " (none installed provides it)"
            raise ConfigError(f"netconf key {key}=true asks for a backend that no enabled extension provides{hint}; "
                              "the pod is not programmed with iptables instead")
    if len(switched) > 1:
        keys = ", ".join(f"{i.netconf_switch}=true (backend {i.name})" for i in switched)
        raise ConfigError(f"netconf keys {keys} each select a different backend: keep one")
    if config.backend:
        if config.backend != AUTO and config.backend not in registered:
            known = ", ".join(sorted(registered))
            raise ConfigError(f"netconf key backend={config.backend!r} is not registered (registered: {known})")
        if switched and switched[0].name != config.backend:
            raise ConfigError(f"netconf key backend={config.backend!r} contradicts "
                              f"{switched[0].netconf_switch}=true (backend {switched[0].name!r}): keep one")
        return Choice("" if config.backend == AUTO else config.backend, f"netconf key backend={config.backend!r}")
    if switched:
        return Choice(switched[0].name, f"netconf key {switched[0].netconf_switch}=true")
    if DEFAULT not in registered:
        raise ConfigError(f"no backend named: the default {DEFAULT!r} is not registered")
    return Choice(DEFAULT, "the default")


def claims_switch(key: str, hooks: HookCalls) -> bool:
    """Whether a backend of ``hooks``' plugins is selected by the netconf switch ``key``."""
    return any(info.netconf_switch == key for info in hooks.backends().values())


def first_usable(registered: Mapping[str, BackendInfo], create: Callable[[BackendInfo], Backend]) -> Backend:
    """``auto``: the first registered backend, the core's first, with no host problems."""
    order = sorted(registered.values(), key=lambda info: info.provider != "builtin")
    refused: list[str] = []
    for info in order:
        backend = create(info)
        problems = backend.host_problems()
        if not problems:
            why = f" ({'; '.join(refused)})" if refused else ""
            log.info("backend auto: using %s, the first registered backend this node can run%s", info.name, why)
            return backend
        refused.append(f"{info.name} cannot run here: {'; '.join(problems)}")
    raise ApplyError("backend auto: no registered backend can run on this node", "\n".join(refused))
