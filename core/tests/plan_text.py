"""Render a RulePlan the way iptables-save lists it, for golden comparisons."""

from meshcni_hooks.types import RulePlan


def save_text(plan: RulePlan, family: int, table: str) -> str:
    chains = [c for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")]
    chains += sorted(c.name for c in plan.chains if c.family == family and c.table == table)
    lines = []
    for chain in chains:
        lines += [f"-A {chain} {r.text}" for r in plan.chain_rules(family, table, chain)]
    return "\n".join(lines)


def full_text(plan: RulePlan) -> str:
    parts = []
    for family in plan.families():
        for table in ("nat", "mangle", "filter", "raw"):
            body = save_text(plan, family, table)
            if body:
                parts.append(f"# IPv{family} {table}\n{body}")
    for step in plan.routes:
        parts.append("# ip " + " ".join(step.args))
    return "\n".join(parts) + "\n"
