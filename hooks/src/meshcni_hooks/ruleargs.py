"""What may reach a netfilter rule: the shapes of rule values, and every backend's last check.

``iptables-restore`` reads one rule per line, splits it into words on whitespace and honours
quotes and backslashes, so a newline or a space inside one argument writes rules of its own (a
pod annotation once closed our ``nat`` transaction and opened a ``filter`` one through an IPv6
"zone"). Hence two walls:

1. values are rendered from typed parts: :func:`network_text` (an address from its integer and
   prefix length, never a zone), ports from ints, interface names and owner ids that
   ``fullmatch`` :data:`INTERFACE_NAME_CHARACTERS` / :func:`is_owner_id`;
2. a backend calls :func:`refuse_unsafe_arguments` before it applies anything: a plan holding an
   argument outside printable ASCII, or with a space, quote or backslash, is refused whoever built it.

String methods and character sets rather than ``re``: this runs for every pod and costs microseconds.
"""

from __future__ import annotations

import ipaddress

from meshcni_hooks.errors import AnnotationError, ApplyError
from meshcni_hooks.types import IPNetwork, RulePlan

# Allowed in an argument: printable ASCII except space, quotes and backslash (iptables-restore
# interprets those).
FORBIDDEN_PRINTABLE = (" ", '"', "'", "\\")
# The kernel allows any name of 1-15 bytes without '/', ':' or whitespace, other than '.' and '..';
# rules need less: ASCII only, no ',' (our list separator), no '+' (an iptables wildcard).
INTERFACE_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
INTERFACE_NAME_MAX = 15
OWNER_ID_CHARACTERS = INTERFACE_NAME_CHARACTERS
OWNER_ID_MAX = 32  # a numeric uid/gid or a user/group name (useradd's limit)


def network_text(network: IPNetwork) -> str:
    """``address/prefix`` rendered from the network's integer and prefix length (a zone, which
    ``str()`` of an IPv6 network keeps verbatim, cannot survive this), spelt as ``iptables-save``
    spells it so that a plan compares equal to the live rules."""
    number = int(network.network_address)
    if network.version == 4:
        return f"{ipaddress.IPv4Address(number)}/{int(network.prefixlen)}"
    return f"{ipv6_text(number)}/{int(network.prefixlen)}"


def destination_args(network: IPNetwork) -> tuple[str, ...]:
    """``("-d", NET)``, or nothing for a ``/0``: iptables-save omits a match-everything address,
    and a plan is written as iptables-save prints it."""
    return ("-d", network_text(network)) if network.prefixlen else ()


def ipv6_text(number: int) -> str:
    """glibc's ``inet_ntop``: as Python's ``str()``, except that an IPv4-mapped address
    (``::ffff:a.b.c.d``) and an IPv4-compatible one (``::a.b.c.d``, not ``::`` or ``::1``-like)
    end in dotted quad."""
    low = ipaddress.IPv4Address(number & 0xFFFFFFFF)
    if number >> 32 == 0xFFFF:
        return f"::ffff:{low}"
    if number >> 32 == 0 and number >> 16 != 0:
        return f"::{low}"
    return str(ipaddress.IPv6Address(number))


def is_interface_name(text: str) -> bool:
    return (
        0 < len(text) <= INTERFACE_NAME_MAX and text not in (".", "..") and INTERFACE_NAME_CHARACTERS.issuperset(text)
    )


def parse_interfaces(key: str, value: str) -> tuple[str, ...]:
    """Istio's interface list: empty, or comma-separated whole interface names (no iptables
    wildcard), de-duplicated in order. A bad element raises AnnotationError naming ``key``."""
    if value == "":
        return ()
    names: dict[str, None] = {}
    for element in value.split(","):
        if not is_interface_name(element):
            raise AnnotationError(
                key, value,
                f"{element!r} is not a network interface name (1-{INTERFACE_NAME_MAX} of A-Z a-z 0-9 _ . -)",
            )
        names[element] = None
    return tuple(names)


def is_owner_id(text: str) -> bool:
    """A uid/gid or a user/group name as ``-m owner --uid-owner`` takes it."""
    return 0 < len(text) <= OWNER_ID_MAX and text[0] not in "-." and OWNER_ID_CHARACTERS.issuperset(text)


def _safe_text(text: str) -> bool:
    """Only printable ASCII other than FORBIDDEN_PRINTABLE (C-speed string scans, no per-character loop)."""
    return text.isascii() and text.isprintable() and not any(c in text for c in FORBIDDEN_PRINTABLE)


def is_safe_argument(word: object) -> bool:
    return isinstance(word, str) and word != "" and _safe_text(word)


def _all_words(plan: RulePlan) -> list[object]:
    words: list[object] = []
    for decl in plan.chains:
        words += (decl.table, decl.name)
    for flush in plan.flushes:
        words += (flush.table, flush.chain)
    for rule in plan.rules:
        words += (rule.table, rule.chain, *rule.args)
    for step in plan.routes:
        words += (*step.args, *step.undo, *step.pre, *step.show)
    return words


def unsafe_arguments(plan: RulePlan) -> list[str]:
    """Every argument of ``plan`` that must not reach a backend, described with ``repr``."""
    words = _all_words(plan)
    try:
        if "" not in words and _safe_text("".join(words)):  # type: ignore[arg-type]  # TypeError below
            return []  # the usual case: one scan of all the characters
    except TypeError:  # a word that is not a string: described below
        pass
    found: list[str] = []

    def check(where: str, words: tuple[object, ...]) -> None:
        found.extend(f"{word!r} in {where}" for word in words if not is_safe_argument(word))

    for decl in plan.chains:
        check(f"IPv{decl.family} chain declaration", (decl.table, decl.name))
    for flush in plan.flushes:
        check(f"IPv{flush.family} chain flush", (flush.table, flush.chain))
    for rule in plan.rules:
        where = f"IPv{rule.family} {rule.table} {rule.chain} rule from {rule.source}"
        check(where, (rule.table, rule.chain, *rule.args))
    for step in plan.routes:
        for command in (step.args, step.undo, step.pre, step.show):
            check(f"ip command from {step.source}", command)
    return found


def refuse_unsafe_arguments(plan: RulePlan) -> None:
    """Raise ApplyError (nothing applied) when any argument holds whitespace, a control, quote or
    non-ASCII character, or is empty."""
    found = unsafe_arguments(plan)
    if found:
        raise ApplyError(
            "refusing to apply a rule plan with unsafe arguments (whitespace, control, quote or non-ASCII "
            "characters, or empty); nothing was applied",
            "\n".join(found),
        )
