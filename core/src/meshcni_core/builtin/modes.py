"""Built-in plugin: the REDIRECT interception mode (nat REDIRECT to the inbound capture port)."""

from __future__ import annotations

from meshcni_core.rules.builder import redirect_inbound
from meshcni_hooks import hookimpl
from meshcni_hooks.types import RedirectMode


class RedirectModePlugin:
    @hookimpl(trylast=True)
    def meshcni_register_redirect_modes(self) -> list[RedirectMode]:
        return [
            RedirectMode(
                name="REDIRECT",
                build_inbound=redirect_inbound,
                description="nat REDIRECT of inbound TCP to the inbound capture port (Istio's default)",
            )
        ]
