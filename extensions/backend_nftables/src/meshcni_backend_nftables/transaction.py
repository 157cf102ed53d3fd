"""A whole rule plan -> one libnftables JSON transaction for both address families.

Each iptables table becomes one ``inet`` table (see layout). A chain's IPv4 and IPv6 rules are
merged into the one ``inet`` chain: a rule both families have at the same place in their order
(a longest common subsequence) is written once; any other rule is bound to its family, by its
own address match or else by ``meta nfproto``. Each family's packets therefore meet exactly
their own rules in their own order, as in the two iptables rule sets.

For a new pod the transaction creates our tables (``create`` fails, changing nothing, if one
exists after all). For a netns that holds tables of ours it first deletes them, so that it holds
only what the plan says whatever an earlier ADD left; a deletion costs the kernel an RCU grace
period (milliseconds), which a new pod does not pay. The kernel applies either all or nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshcni_backend_nftables.layout import (
    BASE_CHAINS,
    FAMILY,
    OUR_TABLES,
    chain_name,
    is_base_chain,
    table_name,
)
from meshcni_backend_nftables.ruleexpr import Expr, translate
from meshcni_hooks.types import RulePlan

NFPROTO = {4: "ipv4", 6: "ipv6"}
Command = dict[str, Any]


@dataclass(frozen=True)
class _Translated:
    exprs: tuple[str, ...]  # each expression as canonical JSON, to compare rules
    family_bound: bool

    def common_with(self, other: _Translated) -> bool:
        return not self.family_bound and not other.family_bound and self.exprs == other.exprs


def _translated(args: tuple[str, ...], family: int) -> _Translated:
    exprs, bound = translate(args, family)
    return _Translated(tuple(json.dumps(e, sort_keys=True) for e in exprs), bound)


def _exprs(rule: _Translated, family: int | None) -> list[Expr]:
    exprs = [json.loads(e) for e in rule.exprs]
    if family is not None and not rule.family_bound:
        exprs.insert(0, {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": NFPROTO[family]}})
    return exprs


def merge_families(v4: list[_Translated], v6: list[_Translated]) -> list[tuple[_Translated, int | None]]:
    """Both families' rules of one chain as one list of (rule, family or None for both)."""
    rows, cols = len(v4), len(v6)
    common = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            common[i][j] = (common[i + 1][j + 1] + 1 if v4[i].common_with(v6[j])
                            else max(common[i + 1][j], common[i][j + 1]))
    merged: list[tuple[_Translated, int | None]] = []
    i = j = 0
    while i < rows or j < cols:
        if i < rows and j < cols and v4[i].common_with(v6[j]) and common[i][j] == common[i + 1][j + 1] + 1:
            merged.append((v4[i], None))
            i, j = i + 1, j + 1
        elif i < rows and (j == cols or common[i + 1][j] >= common[i][j + 1]):
            merged.append((v4[i], 4))
            i += 1
        else:
            merged.append((v6[j], 6))
            j += 1
    return merged


def _table_ref(name: str) -> dict[str, str]:
    return {"family": FAMILY, "name": name}


def plan_commands(plan: RulePlan, replacing: Iterable[str] = ()) -> list[Command]:
    """The transaction's commands: the tables of ours in ``replacing`` deleted, then the plan's
    tables built (created, when none of ours was there)."""
    replacing = list(replacing)
    if not replacing:
        return list(_new_pod_commands(plan))
    return teardown_commands(replacing) + [{"add": c["create"]} if "create" in c else c
                                           for c in _new_pod_commands(plan)]


@functools.lru_cache(maxsize=64)
def _new_pod_commands(plan: RulePlan) -> tuple[Command, ...]:
    """Cached: the agent builds the same plan for every pod with the same annotations (the
    commands are never modified)."""
    iptables_tables: list[str] = []
    for family in plan.families():
        iptables_tables += [t for t in plan.tables(family) if t not in iptables_tables]
    commands: list[Command] = []
    for iptables_table in iptables_tables:
        commands += _table_commands(plan, iptables_table, "create")
    return tuple(commands)


@functools.lru_cache(maxsize=64)
def new_pod_document(plan: RulePlan) -> str:
    """The new-pod transaction as the JSON text libnftables parses."""
    return json.dumps(document(list(_new_pod_commands(plan))))


def _table_commands(plan: RulePlan, iptables_table: str, verb: str) -> list[Command]:
    table = table_name(iptables_table)
    named = [(c.table, c.name) for c in plan.chains] + [(f.table, f.chain) for f in plan.flushes] \
        + [(r.table, r.chain) for r in plan.rules]
    chains: list[str] = []  # iptables chain names, in first-seen order
    for table_of, name in named:
        if table_of == iptables_table and name not in chains:
            chains.append(name)
    # Base chains first (as Istio lists them), then ours in declaration order.
    chains.sort(key=lambda c: not is_base_chain(iptables_table, c))
    commands: list[Command] = [{verb: {"table": _table_ref(table)}}]
    for chain in chains:
        spec: dict[str, Any] = {"family": FAMILY, "table": table, "name": chain_name(iptables_table, chain)}
        if is_base_chain(iptables_table, chain):
            base = BASE_CHAINS[(iptables_table, chain)]
            spec.update(type=base.type, hook=base.hook, prio=base.priority, policy="accept")
        commands.append({"add": {"chain": spec}})
    for chain in chains:
        per_family = {f: [_translated(r.args, f) for r in plan.chain_rules(f, iptables_table, chain)]
                      for f in (4, 6)}
        for rule, family in merge_families(per_family[4], per_family[6]):
            commands.append({"add": {"rule": {
                "family": FAMILY, "table": table, "chain": chain_name(iptables_table, chain),
                "expr": _exprs(rule, family),
            }}})
    return commands


def teardown_commands(present: Iterable[str] = OUR_TABLES) -> list[Command]:
    """Remove these tables of ours (the ``add`` makes the deletion of an absent one harmless)."""
    return [c for name in present
            for c in ({"add": {"table": _table_ref(name)}}, {"delete": {"table": _table_ref(name)}})]


def document(commands: list[Command]) -> dict[str, Any]:
    return {"nftables": commands}


def render(commands: list[Command]) -> str:
    """The JSON document as libnftables receives it, one command per line for people."""
    lines = ",\n  ".join(json.dumps(c, separators=(", ", ": ")) for c in commands)
    return '{"nftables": [\n  ' + lines + "\n]}\n"
