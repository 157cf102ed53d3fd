"""``meshcni repair``'s settings (Istio 1.6's istio-cni-repair flags) as a marshmallow schema.

Keys are the flag names; each setting comes from its flag, else its ``REPAIR_<FLAG>`` variable,
else the default here. Every problem is reported at once, named by the flag or variable it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError

from meshcni_core.schemas.fields import Boolean, CommaSeparated, Integer, LabelKey, LabelValue, Matching, Text
from meshcni_core.schemas.problems import problems
from meshcni_hooks.errors import MeshcniError

_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
# Istio's policy flags, in the order they win, and the policy each names.
ISTIO_POLICY_FLAGS = (("repair-pods", "reprogram"), ("delete-pods", "delete"), ("label-pods", "label"))


class RepairFlags(Schema):
    class Meta:
        unknown = RAISE

    node_name = Text(data_key="node-name", load_default="")
    sidecar_annotation = Text(data_key="sidecar-annotation", load_default="sidecar.istio.io/status")
    init_container_name = Text(data_key="init-container-name", load_default="istio-validation")
    init_container_termination_message = Text(data_key="init-container-termination-message", load_default="")
    init_container_exit_code = Integer(minimum=0, data_key="init-container-exit-code", load_default=126)
    label_selectors = Text(data_key="label-selectors", load_default="")
    field_selectors = Text(data_key="field-selectors", load_default="")
    repair_pods = Boolean(data_key="repair-pods", load_default=False)
    delete_pods = Boolean(data_key="delete-pods", load_default=False)
    label_pods = Boolean(data_key="label-pods", load_default=False)
    run_as_daemon = Boolean(data_key="run-as-daemon", load_default=False)
    broken_pod_label_key = LabelKey(data_key="broken-pod-label-key", load_default="cni.istio.io/uninitialized")
    broken_pod_label_value = LabelValue(data_key="broken-pod-label-value", load_default="true")
    policy = Matching(_NAME, "a repair policy name", empty_ok=True, data_key="policy", load_default="")
    extensions = CommaSeparated(data_key="extensions", load_default=())


FLAGS = RepairFlags()
FLAG_NAMES = tuple(field.data_key or name for name, field in FLAGS.fields.items())
BOOLEAN_FLAGS = tuple(n for n, f in zip(FLAG_NAMES, FLAGS.fields.values(), strict=True) if isinstance(f, Boolean))


def env_name(flag: str) -> str:
    return f"REPAIR_{flag.upper()}"


def load(flags: Mapping[str, str | None], env: Mapping[str, str]) -> dict[str, Any]:
    """Each flag's text (None: not given), else its variable's (unless empty), checked and typed."""
    given: dict[str, str] = {}
    source: dict[str, str] = {}
    for name in FLAG_NAMES:
        if flags.get(name) is not None:
            given[name], source[name] = str(flags[name]), f"--{name}"
        elif env.get(env_name(name)):
            given[name], source[name] = env[env_name(name)], env_name(name)
    try:
        loaded: dict[str, Any] = FLAGS.load(given)
        return loaded
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
        named = {source.get(str(key), str(key)): value for key, value in messages.items()}
        raise MeshcniError("invalid settings:\n" + "\n".join(f"  {p}" for p in problems(named, None))) from None


def chosen_policy(values: Mapping[str, Any]) -> str:
    """``--policy``, else the policy Istio's first true flag names, else "" (report only)."""
    named = [policy for flag, policy in ISTIO_POLICY_FLAGS if values[flag.replace("-", "_")]]
    if values["policy"] and named and named[0] != values["policy"]:
        raise MeshcniError(f"--policy {values['policy']} contradicts the Istio flag that selects {named[0]!r}: "
                           "set one of them")
    return values["policy"] or (named[0] if named else "")
