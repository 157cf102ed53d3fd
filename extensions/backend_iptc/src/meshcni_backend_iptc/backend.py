"""IptcBackend: reconcile a pod netns to a rule plan with libiptc, one commit per table."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from meshcni_backend_iptc.rules import build_rule
from meshcni_hooks.errors import ApplyError
from meshcni_hooks.netns import entered
from meshcni_hooks.ruleargs import refuse_unsafe_arguments, unsafe_arguments
from meshcni_hooks.types import RulePlan, Target

OWNED_PREFIX = "ISTIO_"
BUILTIN = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "raw": ("PREROUTING", "OUTPUT"),  # today's Istio's DNS conntrack zones
}
LEGACY_TABLES_FILE = "/proc/net/ip_tables_names"


def host_uses_legacy() -> bool:
    try:
        with open(LEGACY_TABLES_FILE) as f:
            return bool(f.read().strip())
    except FileNotFoundError:
        return False


class IptcBackend:
    name = "iptc"

    def __init__(self) -> None:
        self._iptc: Any = None

    def ready(self, flavour: str) -> None:
        self._check_flavour(flavour)
        self._module()

    def host_problems(self) -> list[str]:
        """python-iptables (with libxtables) must load. Which flavour a pod's netns uses is checked
        per ADD (``iptables_flavour``), since legacy tables are per namespace."""
        try:
            self._module()
        except ApplyError as exc:
            return [f"{exc.msg}: install python-iptables and Debian's libxtables12"]
        return []

    def transaction(self, plan: RulePlan) -> str:
        """python-iptables commits each table through libiptc, with no text: the rules it makes
        exactly true, per family and table, as ``iptables-save`` will list them."""
        out = []
        for family in plan.families():
            for name in plan.tables(family):
                out.append(f"# IPv{family} {name}: one libiptc commit")
                out += [f":{c.name}" for c in plan.chains if (c.family, c.table) == (family, name)]
                chains = dict.fromkeys(r.chain for r in plan.rules if (r.family, r.table) == (family, name))
                for chain in chains:
                    out += [f"-A {chain} {r.text}" for r in plan.chain_rules(family, name, chain)]
        return "\n".join(out) + "\n" if out else ""

    def _check_flavour(self, flavour: str) -> None:
        if flavour == "legacy" or (flavour == "auto" and host_uses_legacy()):
            return
        why = "iptables_flavour is 'nft'" if flavour == "nft" else "this host uses iptables-nft (no legacy tables)"
        raise ApplyError(
            f"backend 'iptc' (python-iptables) programs only legacy iptables, and {why}; mixing the two "
            "breaks NAT. Use the default backend 'iptables-restore', or set iptables_flavour to 'legacy' "
            "on a legacy host."
        )

    def _module(self) -> Any:
        if self._iptc is None:
            try:
                import iptc  # libxtables is loaded here
            except Exception as exc:  # noqa: BLE001 - import failures of a C binding vary
                raise ApplyError(f"python-iptables cannot be loaded: {exc}") from None
            self._iptc = iptc
        return self._iptc

    # -- tables ---------------------------------------------------------------------------------

    def _table(self, family: int, name: str) -> Any:
        iptc = self._module()
        table = iptc.Table(name) if family == 4 else iptc.Table6(name)
        table.autocommit = False
        table.refresh()
        return table

    def _reconcile_table(self, plan: RulePlan | None, family: int, name: str, hints: RulePlan | None) -> None:
        """Make one table hold exactly ``plan`` of ours (nothing, for ``None``). ``hints`` names
        further rules that may be ours (the IPv6 lock-down, kubevirt RETURNs) for removal."""
        iptc = self._module()
        table = self._table(family, name)
        planned = [r for r in (plan.rules if plan else ()) if r.family == family and r.table == name]
        hinted = [r for r in (hints.rules if hints else ()) if r.family == family and r.table == name]
        # Jumps to our chains are recognised by target name; our other built-in-chain rules
        # (kubevirt RETURNs, the lock-down) are matched by content. A jump can only be built once
        # its chain exists, hence the split.
        builtin_planned = [
            build_rule(iptc, family, r.args) for r in [*planned, *hinted]
            if r.chain in BUILTIN[name] and not _jumps_to_owned(r.args)
        ]
        kubevirt_interfaces = _interfaces_jumping_to_owned(iptc, table) if name == "nat" else set()
        declared = {c.name for c in (plan.chains if plan else ()) if c.family == family and c.table == name}
        flushed = {f.chain for f in (plan.flushes if plan else ()) if f.family == family and f.table == name}
        for chain_name in BUILTIN[name]:
            chain = iptc.Chain(table, chain_name)
            if chain_name in flushed:
                chain.flush()
                continue
            for existing in list(chain.rules):
                target = existing.target.name if existing.target else ""
                if (
                    target.startswith(OWNED_PREFIX)
                    or any(_same(existing, p, family) for p in builtin_planned)
                    or (chain_name == "PREROUTING" and _is_return_from(existing, kubevirt_interfaces))
                ):
                    chain.delete_rule(existing)
        for chain in list(table.chains):
            if chain.name.startswith(OWNED_PREFIX):
                chain.flush()
        for chain in list(table.chains):
            if chain.name.startswith(OWNED_PREFIX) and chain.name not in declared:
                chain.delete()
        existing_names = {c.name for c in table.chains}
        for chain_name in declared - existing_names:
            table.create_chain(chain_name)
        for rule in planned:
            chain = iptc.Chain(table, rule.chain)
            obj = build_rule(iptc, family, rule.args)
            if rule.head:
                chain.insert_rule(obj)
            else:
                chain.append_rule(obj)
        table.commit()

    def _reconcile(self, plan: RulePlan | None, hints: RulePlan | None = None) -> None:
        # A kernel booted without IPv6 has no ip6tables tables to reconcile.
        families = (4, 6) if os.path.exists("/proc/thread-self/net/if_inet6") else (4,)
        for family in families:
            for name in BUILTIN:
                try:
                    self._reconcile_table(plan, family, name, hints)
                except Exception as exc:  # noqa: BLE001 - libiptc reports through several types
                    raise ApplyError(f"python-iptables failed on the IPv{family} {name} table: {exc}") from None

    # -- Backend protocol -----------------------------------------------------------------------

    def apply(self, plan: RulePlan, target: Target) -> None:
        refuse_unsafe_arguments(plan)
        self._check_flavour(target.iptables_flavour)
        with entered(target.netns):
            try:
                self._reconcile(plan)
                for step in plan.routes:
                    if step.pre:
                        _ip(step.pre)
                    proc = _ip(step.args)
                    if proc.returncode != 0 and not step.ignore_errors:
                        raise ApplyError(f"ip {' '.join(step.args)} failed: {proc.stderr.strip()}")
            except ApplyError:
                self._remove_everything(plan)
                raise

    def _remove_everything(self, hints: RulePlan | None) -> None:
        try:
            self._reconcile(None, hints)
        finally:
            for step in hints.routes if hints else ():
                if step.undo:
                    _ip(step.undo)

    def teardown(self, target: Target, hints: RulePlan | None) -> None:
        if hints is not None and unsafe_arguments(hints):
            hints = None  # our rules are still found by their ISTIO_ markers
        self._check_flavour(target.iptables_flavour)
        with entered(target.netns):
            self._remove_everything(hints)

    def missing(self, plan: RulePlan, target: Target) -> list[str]:
        refuse_unsafe_arguments(plan)
        self._check_flavour(target.iptables_flavour)
        iptc = self._module()
        problems: list[str] = []
        with entered(target.netns):
            for family in plan.families():
                for name in plan.tables(family):
                    table = self._table(family, name)
                    names = {c.name for c in table.chains}
                    for decl in (c for c in plan.chains if c.family == family and c.table == name):
                        if decl.name not in names:
                            problems.append(f"IPv{family} {name}: chain {decl.name} is missing")
                    for chain_name in sorted({r.chain for r in plan.rules if r.family == family and r.table == name}):
                        if chain_name not in names and chain_name not in BUILTIN[name]:
                            continue
                        want = plan.chain_rules(family, name, chain_name)
                        have = list(iptc.Chain(table, chain_name).rules)
                        if any(_jumps_to_owned(r.args) and r.args[-1] not in names for r in want):
                            problems.append(f"IPv{family} {name} {chain_name}: jumps to a missing chain")
                            continue
                        wanted_objects = [build_rule(iptc, family, r.args) for r in want]
                        if chain_name in BUILTIN[name]:
                            have = [h for h in have if any(_same(h, w, family) for w in wanted_objects)]
                        if len(have) != len(wanted_objects) or not all(
                            _same(h, w, family) for h, w in zip(have, wanted_objects, strict=True)
                        ):
                            problems.append(f"IPv{family} {name} {chain_name}: expected {[r.text for r in want]}")
            for step in plan.routes:
                if step.show and step.expect not in _ip(step.show).stdout:
                    problems.append(f"ip {' '.join(step.show)}: {step.expect!r} is missing")
        return problems


def _same(a: Any, b: Any, family: int) -> bool:
    """Rule equality through python-iptables' own decoder. (Its ``==`` compares raw target
    payloads, which differ between a rule built here and the same rule read back from the
    kernel by another process - seen with REDIRECT.)"""
    import iptc.easy

    def decoded(rule: Any) -> dict[str, Any]:
        view = iptc.easy.decode_iptc_rule(rule, ipv6=(family == 6))
        view.pop("counters", None)
        return view

    return decoded(a) == decoded(b)


def _interfaces_jumping_to_owned(iptc: Any, table: Any) -> set[str]:
    chain = iptc.Chain(table, "PREROUTING")
    return {
        r.in_interface for r in chain.rules
        if r.target is not None and r.target.name.startswith(OWNED_PREFIX) and r.in_interface
    }


def _is_return_from(rule: Any, interfaces: set[str]) -> bool:
    """A bare ``-i IF -j RETURN`` for an interface of ours: the kubevirt pair's other half."""
    return (
        rule.in_interface in interfaces and rule.target is not None and rule.target.name == "RETURN"
        and not rule.matches and rule.protocol in ("ip", "all", None, "")
        and rule.src in ("0.0.0.0/0.0.0.0", "::/0") and rule.dst in ("0.0.0.0/0.0.0.0", "::/0")
    )


def _jumps_to_owned(args: tuple[str, ...]) -> bool:
    return any(args[i] in ("-j", "-g") and args[i + 1].startswith(OWNED_PREFIX) for i in range(len(args) - 1))


def _ip(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "ip"
    return subprocess.run([ip, *args], capture_output=True, text=True)
