"""The nftables backend: Istio-shaped native nftables tables through libnftables, in-process."""

from __future__ import annotations

from meshcni_backend_nftables.backend import NftablesBackend
from meshcni_hooks import hookimpl
from meshcni_hooks.types import BackendInfo

# Istio's netconf key (values.global.nativeNftables) that selects this backend.
NETCONF_SWITCH = "native_nftables"


def backend_info() -> BackendInfo:
    return BackendInfo(
        name="nftables",
        factory=NftablesBackend,
        description="native nftables (inet istio-proxy-* tables, as today's Istio), libnftables in-process",
        provider="meshcni-backend-nftables",
        netconf_switch=NETCONF_SWITCH,
    )


class NftablesBackendPlugin:
    @hookimpl
    def meshcni_register_backends(self) -> list[BackendInfo]:
        return [backend_info()]
