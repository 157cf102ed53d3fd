"""The default backend: one ``iptables-restore --noflush`` transaction per address family,
run inside the pod's netns with the iptables flavour (nft or legacy) the host uses.

Both families run in parallel. If any step fails, what this ADD changed is undone: in a
namespace that held nothing of ours, everything of ours is removed; in one that already held our
rules (a repeated ADD), the tables are restored as they were before and only the routes this ADD
added are removed. A failed ADD never leaves a partial rule set, nor strips what an earlier ADD
programmed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshcni_core import netns, nftables_tables
from meshcni_core.backends import ip_steps
from meshcni_core.netns import IF_INET6
from meshcni_core.rules.builder import ipv6_self_address
from meshcni_core.rules.restore import (
    TABLES_WE_USE,
    missing_rules,
    parse_save,
    render_fresh_transaction,
    render_transaction,
)
from meshcni_hooks.errors import ApplyError
from meshcni_hooks.routesteps import run_route_step
from meshcni_hooks.ruleargs import refuse_unsafe_arguments, unsafe_arguments
from meshcni_hooks.types import RouteStep, RulePlan, Target

FAMILIES = (4, 6)
LOCK_WAIT_SECONDS = "10"
LEGACY_TABLES_FILE = "/proc/net/ip_tables_names"


@dataclass(frozen=True)
class Tools:
    flavour: str
    save: dict[int, str]
    restore: dict[int, str]


def detect_flavour(requested: str = "auto") -> str:
    """The host's iptables flavour: legacy when the host already has legacy tables (mixing the
    two breaks NAT), otherwise nft when its tools exist, otherwise legacy."""
    if requested in ("nft", "legacy"):
        return requested
    if requested != "auto":
        raise ApplyError(f"iptables flavour {requested!r} is not one of auto, nft, legacy")
    try:
        with open(LEGACY_TABLES_FILE) as f:
            if f.read().strip():
                return "legacy"
    except FileNotFoundError:
        pass
    return "nft" if shutil.which("iptables-nft-restore") else "legacy"


def missing_tools(flavour: str) -> list[str]:
    """The ``iptables-restore``/``-save`` executables of ``flavour`` (both families) not on PATH."""
    return [name for kind in ("restore", "save") for prefix in ("iptables", "ip6tables")
            if shutil.which(name := f"{prefix}-{flavour}-{kind}") is None]


def kernel_has_x_tables() -> bool:
    """Legacy iptables can work: its tables are loaded, or the ip_tables module can be loaded."""
    if os.path.exists(LEGACY_TABLES_FILE):
        return True
    modules = f"/lib/modules/{os.uname().release}"
    try:
        with open(f"{modules}/modules.dep") as deps:
            return any(line.split(":", 1)[0].rsplit("/", 1)[-1].startswith("ip_tables.ko") for line in deps)
    except OSError:
        return False


def tools_for(flavour: str) -> Tools:
    names = {
        "save": {4: f"iptables-{flavour}-save", 6: f"ip6tables-{flavour}-save"},
        "restore": {4: f"iptables-{flavour}-restore", 6: f"ip6tables-{flavour}-restore"},
    }
    resolved: dict[str, dict[int, str]] = {"save": {}, "restore": {}}
    for kind, by_family in names.items():
        for family, name in by_family.items():
            path = shutil.which(name)
            if path is None:
                raise ApplyError(f"{name} not found on PATH: install iptables ({flavour} flavour)")
            resolved[kind][family] = path
    return Tools(flavour, resolved["save"], resolved["restore"])


@dataclass
class Undo:
    """What an apply changed, for its rollback: ``previous`` is None when the namespace held
    nothing of ours (then everything of ours goes), else the ``iptables-save`` of each family
    before the transaction; ``routes`` are the route steps that were not there before."""

    previous: dict[int, str] | None = None
    routes: list[RouteStep] = field(default_factory=list)


def _run_parallel(commands: Mapping[int, tuple[list[str], str | None]]) -> dict[int, subprocess.CompletedProcess[str]]:
    """Start every command, then wait for all; returns completed processes by family."""
    procs = {
        family: (
            subprocess.Popen(
                argv, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
            data,
        )
        for family, (argv, data) in commands.items()
    }
    done = {}
    for family, (proc, data) in procs.items():
        out, err = proc.communicate(data)
        done[family] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _ip(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return ip_steps.run_ip(args)  # netlink in the node agent, an ``ip`` exec elsewhere


class IptablesRestoreBackend:
    name = "iptables-restore"

    def __init__(self) -> None:
        self._tools: dict[str, Tools] = {}
        self._usable = False

    def tools(self, target: Target) -> Tools:
        flavour = detect_flavour(target.iptables_flavour)
        if flavour not in self._tools:
            self._tools[flavour] = tools_for(flavour)
        return self._tools[flavour]

    def ready(self, flavour: str) -> None:
        """Raise ApplyError unless this host's iptables tools are usable."""
        tools_for(detect_flavour(flavour))

    def host_problems(self) -> list[str]:
        """What keeps this host from running iptables-restore: the executables of the flavour it
        would use, and a kernel with x_tables (legacy) or nf_tables (nft) support. A usable host
        is remembered (this runs before every ADD); problems are looked for again each time."""
        if self._usable:
            return []
        flavour = detect_flavour("auto")
        missing = missing_tools(flavour)
        if len(missing) == len(missing_tools("nft")) == len(missing_tools("legacy")) == 4:
            problems = ["iptables-restore, ip6tables-restore, iptables-save and ip6tables-save (nft or legacy) "
                        "not found on PATH: install iptables (Debian's iptables package)"]
        else:
            problems = [f"{name} not found on PATH: install iptables (Debian's iptables package, {flavour} flavour)"
                        for name in missing]
        if not nftables_tables.available() and not kernel_has_x_tables():
            problems.append("the kernel has neither x_tables (ip_tables) nor nf_tables support: "
                            "load one of those modules")
        self._usable = not problems
        return problems

    def transaction(self, plan: RulePlan) -> str:
        """The ``iptables-restore --noflush`` input of each family, as a new pod's ADD runs it."""
        parts = []
        for family in plan.families():
            tool = "iptables-restore" if family == 4 else "ip6tables-restore"
            parts.append(f"# IPv{family}: {tool} --noflush\n{render_fresh_transaction(plan, family)}")
        return "".join(parts)

    def snapshot(self, tools: Tools, families: tuple[int, ...]) -> dict[int, str]:
        """``iptables-save`` of each family in the current netns."""
        done = _run_parallel({f: ([tools.save[f]], None) for f in families})
        for family, proc in done.items():
            if proc.returncode != 0:
                raise ApplyError(f"{tools.save[family]} failed: {proc.stderr.strip()}")
        return {f: p.stdout for f, p in done.items()}

    def _reconcile(self, plan: RulePlan | None, tools: Tools, saved: dict[int, str] | None = None) -> None:
        """Make every family hold exactly ``plan`` of ours; ``saved`` is a fresh snapshot of them."""
        if saved is None:
            saved = self.snapshot(tools, available_families())
        families = tuple(saved)
        transactions = {f: render_transaction(plan, f, parse_save(saved[f])) for f in families}
        commands = {
            f: ([tools.restore[f], "--noflush", "--wait", LOCK_WAIT_SECONDS], text)
            for f, text in transactions.items()
            if text
        }
        failures = [
            f"IPv{f}: {os.path.basename(tools.restore[f])}: {p.stderr.strip() or 'exit ' + str(p.returncode)}"
            f"\n--- transaction ---\n{transactions[f]}"
            for f, p in _run_parallel(commands).items()
            if p.returncode != 0
        ]
        if failures:
            raise ApplyError("iptables-restore rejected the rules", "\n".join(failures))

    def _apply_fresh(self, plan: RulePlan, tools: Tools) -> tuple[bool, bool]:
        """One restore per family assuming nothing of ours is there yet (a new pod: half the
        executions of a reconcile). Returns (the namespace held nothing of ours, every family
        is done). The IPv4 ``-N`` of our chains is the guard: it fails, changing nothing, when an
        earlier ADD left our chains. Whatever else succeeded is completed by the reconcile, which
        is idempotent."""
        families = plan.families()
        if not families or not any(c.family == 4 for c in plan.chains):
            return False, False  # the guard needs IPv4 chains: every plan we build declares them
        commands = {
            f: ([tools.restore[f], "--noflush", "--wait", LOCK_WAIT_SECONDS], render_fresh_transaction(plan, f))
            for f in families
        }
        done = _run_parallel(commands)
        return done[4].returncode == 0, all(p.returncode == 0 for p in done.values())

    def apply(self, plan: RulePlan, target: Target) -> None:
        refuse_unsafe_arguments(plan)
        tools = self.tools(target)
        with netns.entered(target.netns), ip_steps.session():
            refuse_other_flavour()
            undo = Undo()
            try:
                was_empty, complete = self._apply_fresh(plan, tools)
                if not was_empty:
                    # After the fresh attempt: IPv4's changed nothing (its first table is nat, where
                    # every plan declares chains, and its -N failed there first); a family whose fresh
                    # transaction succeeded held none of our chains, and keeps its new rules.
                    undo.previous = self.snapshot(tools, available_families())
                if not complete:
                    self._reconcile(plan, tools, dict(undo.previous) if undo.previous else None)
                for step in plan.routes:
                    run_route_step(step, undo.routes, routes_were_ours=not was_empty, run=_ip)
            except (ApplyError, OSError) as exc:
                error = exc if isinstance(exc, ApplyError) else ApplyError(f"applying the rules failed: {exc}")
                rollback = self._roll_back(tools, plan, undo)
                if rollback:
                    error.details = f"{error.details}\nrollback also failed: {rollback}".strip()
                raise error from None

    def _roll_back(self, tools: Tools, plan: RulePlan, undo: Undo) -> str:
        """Undo what this apply changed; returns an error text or ''."""
        if undo.previous is None:
            return self._remove_everything(tools, plan)
        problems = []
        restores = {
            f: ([tools.restore[f], "--wait", LOCK_WAIT_SECONDS], tables_as_saved(text, plan.tables(f)))
            for f, text in undo.previous.items()
        }
        for family, proc in _run_parallel(restores).items():
            if proc.returncode != 0:
                problems.append(f"IPv{family}: restoring the tables as they were: {proc.stderr.strip()}")
        for step in undo.routes:
            if step.undo:
                _ip(step.undo)
        return "; ".join(problems)

    def _remove_everything(self, tools: Tools, hints: RulePlan | None) -> str:
        """Reconcile to an empty plan and undo routes; returns an error text or ''."""
        problems = []
        try:
            self._reconcile(None, tools)
        except ApplyError as exc:
            problems.append(f"{exc.msg}: {exc.details}")
        for step in default_route_undo(hints):
            _ip(step)
        return "; ".join(problems)

    def teardown(self, target: Target, hints: RulePlan | None) -> None:
        if hints is not None and unsafe_arguments(hints):
            hints = None  # our rules are still found by their ISTIO_ markers
        tools = self.tools(target)
        with netns.entered(target.netns), ip_steps.session():
            problems = self._remove_everything(tools, hints)
        if problems:
            raise ApplyError("removing the redirect rules failed", problems)

    def missing(self, plan: RulePlan, target: Target) -> list[str]:
        refuse_unsafe_arguments(plan)
        tools = self.tools(target)
        with netns.entered(target.netns), ip_steps.session():
            saved = self.snapshot(tools, plan.families())
            problems = [p for f in plan.families() for p in missing_rules(plan, f, parse_save(saved[f]))]
            for step in plan.routes:
                if step.show and step.expect not in _ip(step.show).stdout:
                    problems.append(f"ip {' '.join(step.show)}: {step.expect!r} is missing")
        return problems


def refuse_other_flavour() -> None:
    """One pod never holds both flavours: refuse a netns the nftables flavour already programmed."""
    found = nftables_tables.istio_tables()
    if found:
        raise ApplyError(
            f"this pod's network namespace already holds the nftables redirect tables {', '.join(found)}; "
            "the iptables-restore backend does not add iptables rules beside them (one pod, one flavour): "
            "select the backend that programmed them, or delete the pod")


def tables_as_saved(saved: str, touched: list[str] | tuple[str, ...]) -> str:
    """``iptables-restore`` input (without --noflush) that puts our tables back as ``saved``
    shows them: each table replaced by its saved section, and a table the snapshot did not have
    but the transaction touched emptied."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            current = sections.setdefault(line[1:].strip(), [line])
        elif current is not None:
            current.append(line)
            if line.strip() == "COMMIT":
                current = None
    out: list[str] = []
    for table in TABLES_WE_USE:
        if table in sections:
            out.extend(sections[table])
        elif table in touched:
            out.extend([f"*{table}", "COMMIT"])
    return "\n".join(out) + "\n" if out else ""


def available_families() -> tuple[int, ...]:
    """The address families of the current netns's kernel (no IPv6 when booted without it)."""
    return FAMILIES if os.path.exists(IF_INET6) else (4,)


def default_route_undo(hints: RulePlan | None) -> list[tuple[str, ...]]:
    """How to remove our routes: the plan's own undo steps (whoever contributed them), or, with no
    plan at all, the core's own ``::6`` address (the pipeline always passes a plan when it can
    read the netns, with every registered mode's routes)."""
    if hints is not None:
        return [s.undo for s in hints.routes if s.undo]
    return [ipv6_self_address().undo]
