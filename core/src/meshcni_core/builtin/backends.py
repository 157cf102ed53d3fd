"""Built-in plugin: registers the iptables-restore backend."""

from __future__ import annotations

from meshcni_core.backends.iptables_restore import IptablesRestoreBackend
from meshcni_hooks import hookimpl
from meshcni_hooks.types import BackendInfo


class BuiltinBackends:
    @hookimpl(trylast=True)
    def meshcni_register_backends(self) -> list[BackendInfo]:
        return [
            BackendInfo(
                name="iptables-restore",
                factory=IptablesRestoreBackend,
                description="one iptables-restore transaction per family, host flavour (nft or legacy)",
            )
        ]
