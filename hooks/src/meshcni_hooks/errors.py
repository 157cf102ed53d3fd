"""Errors that cross the hook boundary.

Every error carries a CNI error ``code`` and names the ``stage`` it came from, so the plugin can
print one CNI error object that says where it failed and why.
"""

from __future__ import annotations


class MeshcniError(Exception):
    """Base of every error meshcni reports. ``code`` is the CNI error code printed on failure."""

    code = 100
    stage = "plugin"

    def __init__(self, msg: str, details: str = "", *, code: int | None = None, stage: str | None = None):
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code
        if stage is not None:
            self.stage = stage


class ConfigError(MeshcniError):
    """The network configuration (stdin) or an extension's settings are invalid (CNI code 7)."""

    code = 7
    stage = "config"


class SettingError(ConfigError):
    """One key of an extension's settings block has an invalid value (raised by ``parse_settings``).
    The core prefixes the extension's name; the message names the key and the value."""

    def __init__(self, setting: str, value: object, reason: str):
        super().__init__(f"invalid setting {setting}={value!r}: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason


class ExtensionError(MeshcniError):
    """An enabled extension is missing, broken, incompatible or conflicts with another."""

    code = 101
    stage = "extensions"


class PodLookupError(MeshcniError):
    """The pod's metadata could not be obtained (API unreachable, unauthorized, not found in time)."""

    code = 102
    stage = "pod-lookup"


class AnnotationError(MeshcniError):
    """A redirect annotation has an invalid value. The message names the annotation and the value."""

    code = 103
    stage = "redirect-spec"

    def __init__(self, annotation: str, value: str, reason: str):
        super().__init__(f"invalid annotation {annotation}={value!r}: {reason}", code=103)
        self.annotation = annotation
        self.value = value
        self.reason = reason


class RuleBuildError(MeshcniError):
    """The redirect rules could not be built from a valid spec (e.g. unknown mode)."""

    code = 104
    stage = "rule-build"


class ApplyError(MeshcniError):
    """Programming the pod's network namespace failed; nothing of ours was left behind."""

    code = 105
    stage = "apply"


class VerifyError(MeshcniError):
    """CHECK found the pod's redirect rules missing or different."""

    code = 106
    stage = "check"
