"""One rule in ``iptables-save`` form -> the libnftables JSON expressions of the same rule.

Only the bounded vocabulary our rule builders emit is translated (see docs/rules.md); any other
word is refused with RuleBuildError naming it, so no rule is ever dropped or weakened silently.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from meshcni_backend_nftables.layout import chain_name
from meshcni_hooks.errors import RuleBuildError

Expr = dict[str, Any]

STATE_NAMES = {"NEW": "new", "ESTABLISHED": "established", "RELATED": "related", "INVALID": "invalid",
               "UNTRACKED": "untracked"}
REJECT_TYPES = {
    "icmp6-port-unreachable": ("icmpv6", "port-unreachable", 6),
    "icmp-port-unreachable": ("icmp", "port-unreachable", 4),
}
FULL_MASK = 0xFFFFFFFF


class Untranslatable(RuleBuildError):
    """A rule word the nftables backend has no translation for."""


def _match(left: Expr, right: Any, negate: bool = False, op: str = "==") -> Expr:
    return {"match": {"op": "!=" if negate else op, "left": left, "right": right}}


def _address(text: str, family: int, what: str) -> Any:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Untranslatable(f"nftables backend: {what} {text!r} is not an address or network") from None
    if net.version != family:
        raise Untranslatable(f"nftables backend: {what} {text!r} in an IPv{family} rule")
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise Untranslatable(f"nftables backend: {what} {text!r} is not a number")
    return int(text)


def _mark(text: str) -> int:
    """``0x539/0xffffffff`` or ``0x539`` -> 1337; a partial mask has no plain nft equivalent."""
    value, _, mask = text.partition("/")
    try:
        number, mask_number = int(value, 0), int(mask, 0) if mask else FULL_MASK
    except ValueError:
        raise Untranslatable(f"nftables backend: firewall mark {text!r} is not a number") from None
    if mask_number != FULL_MASK:
        raise Untranslatable(f"nftables backend: firewall mark {text!r} with a partial mask is not supported")
    return number


class _Words:
    def __init__(self, args: tuple[str, ...]) -> None:
        self.args = args
        self.pos = 0

    def __iter__(self) -> Iterator[str]:
        while self.pos < len(self.args):
            word = self.args[self.pos]
            self.pos += 1
            yield word

    def value(self, option: str) -> str:
        if self.pos >= len(self.args):
            raise Untranslatable(f"nftables backend: {option} has no value in {' '.join(self.args)!r}")
        word = self.args[self.pos]
        self.pos += 1
        return word


def translate(args: tuple[str, ...], family: int) -> tuple[list[Expr], bool]:
    """The rule's expressions, and whether the rule names its address family itself (an address
    match or a family-bound target); a rule that does not must be qualified when it lives in an
    ``inet`` chain for one family only."""
    words = _Words(args)
    matches: list[Expr] = []
    statements: list[Expr] = []
    protocol = ""
    ports = False
    family_bound = False
    negate = False
    module = ""  # the -m / -j whose --options follow

    def refuse(word: str) -> Untranslatable:
        return Untranslatable(f"nftables backend: cannot translate {word!r} in rule {' '.join(args)!r}")

    for word in words:
        if word == "!":
            negate = True
            continue
        if word == "-p":
            protocol = words.value(word)
            if protocol not in ("tcp", "udp"):
                raise refuse(f"-p {protocol}")
            if negate:
                raise refuse("! -p")
        elif word in ("-s", "-d"):
            field = "saddr" if word == "-s" else "daddr"
            address = _address(words.value(word), family, word)
            matches.append(_match({"payload": {"protocol": "ip" if family == 4 else "ip6", "field": field}},
                                  address, negate))
            family_bound = True
        elif word in ("-i", "-o"):
            key = "iifname" if word == "-i" else "oifname"
            matches.append(_match({"meta": {"key": key}}, words.value(word), negate))
        elif word == "-m":
            module = words.value(word)
            if module in ("tcp", "udp"):
                if module != protocol:
                    raise refuse(f"-m {module} without -p {module}")
            elif module not in ("owner", "conntrack", "state"):
                raise refuse(f"-m {module}")
        elif word in ("--dport", "--sport") and module in ("tcp", "udp"):
            port = _number(words.value(word), word)
            matches.append(_match({"payload": {"protocol": module, "field": word[2:]}}, port, negate))
            ports = True
        elif word in ("--uid-owner", "--gid-owner") and module == "owner":
            key = "skuid" if word == "--uid-owner" else "skgid"
            matches.append(_match({"meta": {"key": key}}, _number(words.value(word), word), negate))
        elif word in ("--ctstate", "--state") and module in ("conntrack", "state"):
            names = []
            for state in words.value(word).split(","):
                if state not in STATE_NAMES:
                    raise refuse(f"{word} {state}")
                names.append(STATE_NAMES[state])
            if negate:
                raise refuse(f"! {word}")
            matches.append(_match({"ct": {"key": "state"}}, names if len(names) > 1 else names[0], op="in"))
        elif word == "-j":
            target = words.value(word)
            module = target
            statements.extend(_target(target, words, family, refuse))
            if target in ("TPROXY", "REJECT"):
                family_bound = True
        else:
            raise refuse(word)
        if negate and word not in ("-s", "-d", "-i", "-o", "--dport", "--sport", "--uid-owner", "--gid-owner"):
            raise refuse(f"! {word}")
        negate = False
    if not statements:
        raise Untranslatable(f"nftables backend: rule {' '.join(args)!r} has no -j target")
    if protocol and not ports:
        matches.insert(0, _match({"meta": {"key": "l4proto"}}, protocol))
    return matches + statements, family_bound


def _target(target: str, words: _Words, family: int, refuse: Any) -> list[Expr]:
    options: dict[str, str] = {}
    while words.pos < len(words.args) and words.args[words.pos].startswith("--"):
        option = words.value("")
        options[option] = words.value(option)

    def only(*known: str) -> None:
        extra = sorted(set(options) - set(known))
        if extra:
            raise refuse(f"-j {target} {extra[0]}")

    if target in ("RETURN", "ACCEPT", "DROP"):
        only()
        return [{target.lower(): None}]
    if target.startswith("ISTIO_"):
        only()
        return [{"jump": {"target": chain_name("", target)}}]
    if target == "REDIRECT":
        only("--to-ports")
        if "--to-ports" not in options or not options["--to-ports"].isdigit():
            raise refuse("-j REDIRECT without a single --to-ports port")
        return [{"redirect": {"port": int(options["--to-ports"])}}]
    if target == "TPROXY":
        only("--on-port", "--on-ip", "--tproxy-mark")
        port = _number(options.get("--on-port", ""), "--on-port")
        tproxy: Expr = {"family": "ip" if family == 4 else "ip6", "port": port}
        on_ip = options.get("--on-ip", "")
        if on_ip and _address(on_ip, family, "--on-ip") != ("::" if family == 6 else "0.0.0.0"):
            tproxy["addr"] = _address(on_ip, family, "--on-ip")
        out: list[Expr] = [{"tproxy": tproxy}]
        if "--tproxy-mark" in options:
            out.append({"mangle": {"key": {"meta": {"key": "mark"}}, "value": _mark(options["--tproxy-mark"])}})
        return [*out, {"accept": None}]  # the iptables TPROXY target accepts the packet
    if target == "MARK":
        only("--set-xmark", "--set-mark")
        mark = options.get("--set-xmark") or options.get("--set-mark") or ""
        return [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": _mark(mark)}}]
    if target == "CT":
        only("--zone")
        if not options.get("--zone", "").isdigit():
            raise refuse("-j CT without a numeric --zone")
        return [{"mangle": {"key": {"ct": {"key": "zone"}}, "value": int(options["--zone"])}}]
    if target == "REJECT":
        only("--reject-with")
        kind = REJECT_TYPES.get(options.get("--reject-with", ""))
        if kind is None or kind[2] != family:
            raise refuse(f"-j REJECT --reject-with {options.get('--reject-with', '')}")
        return [{"reject": {"type": kind[0], "expr": kind[1]}}]
    raise refuse(f"-j {target}")
