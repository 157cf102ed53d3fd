"""Render rule plans as ``iptables-restore --noflush`` transactions, and read ``iptables-save``.

One transaction per address family makes the netns hold exactly our plan, whatever of ours was
there before (a repeated ADD), without touching anybody else's rules:

1. delete our rules found in built-in chains (the plan's own, plus any jump to an ``ISTIO_``
   chain left by an earlier plan);
2. declare our chains (declaring flushes them) and flush the built-in chains the plan flushes;
3. delete ``ISTIO_`` chains the plan no longer has;
4. add the plan's rules: head rules with ``-I CHAIN 1`` in order, the rest with ``-A``.

Teardown is the same reconcile towards an empty plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcni_core.rules.builder import ipv6_lockdown
from meshcni_hooks.types import RulePlan

BUILTIN_CHAINS = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "raw": ("PREROUTING", "OUTPUT"),
}
OWNED_PREFIX = "ISTIO_"
TABLES_WE_USE = ("nat", "mangle", "filter", "raw")  # raw: today's Istio's DNS conntrack zones


@dataclass
class TableState:
    """One table of an ``iptables-save`` dump: chain names and each chain's rules in order."""

    chains: dict[str, list[str]] = field(default_factory=dict)


def parse_save(text: str) -> dict[str, TableState]:
    """Parse ``iptables-save`` output into tables -> chains -> rule texts (without ``-A CHAIN``)."""
    tables: dict[str, TableState] = {}
    current: TableState | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], TableState())
        elif line == "COMMIT":
            current = None
        elif current is not None and line.startswith(":"):
            current.chains.setdefault(line[1:].split()[0], [])
        elif current is not None and line.startswith("-A "):
            _, chain, rest = ([*line.split(" ", 2), ""])[:3]
            current.chains.setdefault(chain, []).append(rest)
    return tables


def _jumps_to_owned(rule_text: str) -> bool:
    words = rule_text.split()
    return any(words[i] in ("-j", "-g") and words[i + 1].startswith(OWNED_PREFIX) for i in range(len(words) - 1))


def owned_builtin_rules(plan: RulePlan | None, family: int, table: str, state: TableState) -> list[tuple[str, str]]:
    """(chain, rule) pairs in built-in chains that belong to us and must be removed first."""
    planned: set[tuple[str, str]] = set()
    if plan is not None:
        planned = {(r.chain, r.text) for r in plan.rules if r.family == family and r.table == table}
    found: list[tuple[str, str]] = []
    for chain in BUILTIN_CHAINS.get(table, ()):
        for text in state.chains.get(chain, []):
            if _jumps_to_owned(text) or (chain, text) in planned:
                found.append((chain, text))
    found += _orphan_interface_returns(table, state)
    found += _excluded_interface_returns(table, state)
    found += _lockdown_rules(family, table, state)
    return list(dict.fromkeys(found))


def _lockdown_rules(family: int, table: str, state: TableState) -> list[tuple[str, str]]:
    """Istio's IPv6 lock-down triple, recognised only when all three stand together in order."""
    triple = [r.text for r in ipv6_lockdown()[1]]
    if (family, table) != (6, "filter"):
        return []
    rules = state.chains.get("INPUT", [])
    for start in range(len(rules) - len(triple) + 1):
        if rules[start : start + len(triple)] == triple:
            return [("INPUT", text) for text in triple]
    return []


def _orphan_interface_returns(table: str, state: TableState) -> list[tuple[str, str]]:
    """``-i IF -j RETURN`` rules in nat PREROUTING for interfaces that also have a rule jumping to
    one of our chains: an interface pair an extension added, recognisable without any state file."""
    if table != "nat":
        return []
    prerouting = state.chains.get("PREROUTING", [])
    our_interfaces = set()
    for text in prerouting:
        words = text.split()
        if _jumps_to_owned(text) and "-i" in words:
            our_interfaces.add(words[words.index("-i") + 1])
    return [
        ("PREROUTING", text)
        for text in prerouting
        if len(text.split()) == 4 and text.split()[0] == "-i" and text.split()[1] in our_interfaces
        and text.endswith("-j RETURN")
    ]


def _excluded_interface_returns(table: str, state: TableState) -> list[tuple[str, str]]:
    """The excludeInterfaces pair, recognisable without any state file: ``-i IF -j RETURN`` in
    PREROUTING and ``-o IF -j RETURN`` in OUTPUT for the same interface, in a table where one of
    those chains jumps to one of our chains."""
    if table not in ("nat", "mangle"):
        return []
    prerouting, output = state.chains.get("PREROUTING", []), state.chains.get("OUTPUT", [])
    if not any(_jumps_to_owned(text) for text in (*prerouting, *output)):
        return []

    def returns(rules: list[str], flag: str) -> dict[str, str]:
        found = {}
        for text in rules:
            words = text.split()
            if len(words) == 4 and words[0] == flag and words[2:] == ["-j", "RETURN"]:
                found[words[1]] = text
        return found

    inbound, outbound = returns(prerouting, "-i"), returns(output, "-o")
    pairs = [name for name in inbound if name in outbound]
    return [("PREROUTING", inbound[n]) for n in pairs] + [("OUTPUT", outbound[n]) for n in pairs]


def render_transaction(plan: RulePlan | None, family: int, current: dict[str, TableState]) -> str:
    """The ``iptables-restore --noflush`` input that turns ``current`` into ``plan`` for one family.

    Returns an empty string when there is nothing to do (no plan and nothing of ours present).
    """
    plan_tables = plan.tables(family) if plan else []
    tables = [t for t in TABLES_WE_USE if t in plan_tables or _has_owned(current.get(t))]
    out: list[str] = []
    for table in tables:
        state = current.get(table, TableState())
        body: list[str] = []
        for chain, text in owned_builtin_rules(plan, family, table, state):
            body.append(f"-D {chain} {text}")
        declared = [c.name for c in plan.chains if c.family == family and c.table == table] if plan else []
        flushed = [f.chain for f in plan.flushes if f.family == family and f.table == table] if plan else []
        stale = [c for c in state.chains if c.startswith(OWNED_PREFIX) and c not in declared]
        for chain in flushed:
            body.append(f"-F {chain}")
        for chain in stale:
            body.append(f"-F {chain}")
        for chain in stale:
            body.append(f"-X {chain}")
        if plan:
            for rule_ in (r for r in plan.rules if r.family == family and r.table == table):
                verb = "-I" if rule_.head else "-A"
                where = f"{rule_.chain} 1" if rule_.head else rule_.chain
                body.append(f"{verb} {where} {rule_.text}")
        if not body and not declared:
            continue
        out.append(f"*{table}")
        out.extend(f":{name} - [0:0]" for name in declared)
        out.extend(body)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def render_fresh_transaction(plan: RulePlan, family: int) -> str:
    """The transaction for a namespace that holds nothing of ours (a new pod): our chains are
    created with ``-N``, which fails - atomically, changing nothing - if any already exists, so
    a namespace that is not fresh is detected by the kernel instead of by an iptables-save."""
    out: list[str] = []
    for table in plan.tables(family):
        out.append(f"*{table}")
        out += [f"-N {c.name}" for c in plan.chains if c.family == family and c.table == table]
        out += [f"-F {f.chain}" for f in plan.flushes if f.family == family and f.table == table]
        for rule_ in (r for r in plan.rules if r.family == family and r.table == table):
            out.append(f"-I {rule_.chain} 1 {rule_.text}" if rule_.head else f"-A {rule_.chain} {rule_.text}")
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def _has_owned(state: TableState | None) -> bool:
    if state is None:
        return False
    if any(c.startswith(OWNED_PREFIX) for c in state.chains):
        return True
    if _lockdown_rules(6, "filter", state):
        return True
    return any(_jumps_to_owned(t) for chain in state.chains for t in state.chains[chain])


def missing_rules(plan: RulePlan, family: int, current: dict[str, TableState]) -> list[str]:
    """Differences between the plan and the live tables, as readable lines (empty = matches)."""
    problems: list[str] = []
    for table in plan.tables(family):
        state = current.get(table, TableState())
        for decl in (c for c in plan.chains if c.family == family and c.table == table):
            if decl.name not in state.chains:
                problems.append(f"IPv{family} {table}: chain {decl.name} is missing")
        chains = {r.chain for r in plan.rules if r.family == family and r.table == table}
        for chain in sorted(chains):
            want = [r.text for r in plan.chain_rules(family, table, chain)]
            have = state.chains.get(chain, [])
            if chain in BUILTIN_CHAINS.get(table, ()):
                have = [t for t in have if t in set(want)]
            if have != want:
                problems.append(
                    f"IPv{family} {table} {chain}: expected {len(want)} rules {want!r}, found {have!r}"
                )
    return problems
