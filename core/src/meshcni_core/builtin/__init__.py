"""The core's own stages, written as ordinary pluggy plugins (registered before extensions)."""

from __future__ import annotations

from meshcni_core.builtin.annotations import AnnotationRedirectSpec
from meshcni_core.builtin.backends import BuiltinBackends
from meshcni_core.builtin.config import NetconfLoader
from meshcni_core.builtin.eligibility import SeedEligibility
from meshcni_core.builtin.modes import RedirectModePlugin
from meshcni_core.builtin.repair_label import LabelPolicy
from meshcni_core.builtin.repair_reprogram import ReprogramPolicy
from meshcni_core.builtin.report import LogReport


def builtin_plugins() -> list[tuple[str, object]]:
    return [
        ("builtin:config", NetconfLoader()),
        ("builtin:eligibility", SeedEligibility()),
        ("builtin:annotations", AnnotationRedirectSpec()),
        ("builtin:redirect", RedirectModePlugin()),
        ("builtin:backends", BuiltinBackends()),
        ("builtin:report", LogReport()),
        ("builtin:repair-label", LabelPolicy()),
        ("builtin:repair-reprogram", ReprogramPolicy()),
    ]
