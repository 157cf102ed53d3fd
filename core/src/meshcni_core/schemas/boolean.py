"""The one boolean parser of every configuration edge.

Istio reads its install-cni and istio-cni-repair booleans through viper, which parses text with
Go's ``strconv.ParseBool``: exactly these spellings, case and all. Istio turns any other text
silently into false; meshcni refuses it instead, so a typo ("ture", "yes") never selects a mode.
"""

from __future__ import annotations

TRUE_SPELLINGS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_SPELLINGS = ("0", "f", "F", "FALSE", "false", "False")
SPELLINGS_HELP = "true or false (Go's spellings 1, t, T, TRUE, True, 0, f, F, FALSE, False too)"


def parse_bool(value: object) -> bool:
    """A YAML boolean as is, or text in one of Go's spellings; anything else raises ValueError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in TRUE_SPELLINGS:
            return True
        if value in FALSE_SPELLINGS:
            return False
    raise ValueError(f"expected true or false, got {value!r}")
