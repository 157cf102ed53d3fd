"""The python-iptables backend: libiptc in-process, legacy iptables only."""

from __future__ import annotations

from meshcni_backend_iptc.backend import IptcBackend
from meshcni_hooks import hookimpl
from meshcni_hooks.types import BackendInfo


class IptcBackendPlugin:
    @hookimpl
    def meshcni_register_backends(self) -> list[BackendInfo]:
        return [
            BackendInfo(
                name="iptc",
                factory=IptcBackend,
                description="python-iptables (libiptc), legacy iptables hosts only",
                provider="meshcni-backend-iptc",
            )
        ]
