"""Turn a rule in iptables-save canonical form into a python-iptables Rule."""

from __future__ import annotations

from typing import Any

RULE_FIELDS = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface", "-p": "protocol"}


class RuleSyntaxError(ValueError):
    pass


def build_rule(iptc: Any, family: int, args: tuple[str, ...]) -> Any:
    """``("-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "RETURN")`` -> iptc.Rule(6)."""
    rule = iptc.Rule() if family == 4 else iptc.Rule6()
    current: Any = None  # the match or target that following --options belong to
    target: Any = None
    negate = False
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "!":
            negate = True
            i += 1
            continue
        if i + 1 >= len(words):
            raise RuleSyntaxError(f"{word!r} has no value in {' '.join(args)!r}")
        value = words[i + 1]
        if word in RULE_FIELDS:
            setattr(rule, RULE_FIELDS[word], f"!{value}" if negate else value)
        elif word == "-m":
            current = rule.create_match(value)
        elif word == "-j":
            target = iptc.Target(rule, value)
            rule.target = target
            current = target
        elif word.startswith("--"):
            if current is None:
                raise RuleSyntaxError(f"option {word} before any -m or -j in {' '.join(args)!r}")
            setattr(current, word[2:].replace("-", "_"), f"!{value}" if negate else value)
        else:
            raise RuleSyntaxError(f"unsupported word {word!r} in {' '.join(args)!r}")
        negate = False
        i += 2
    if target is None:
        raise RuleSyntaxError(f"no -j target in {' '.join(args)!r}")
    return rule
