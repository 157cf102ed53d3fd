"""NftablesBackend: a pod's rule plan as Istio-shaped ``inet`` tables, one libnftables transaction.

ADD: one ``list tables`` (to refuse a netns holding iptables rules of ours or Istio's, and to
know whether an earlier ADD left tables of ours), then one transaction that creates our tables
(or replaces the earlier ones) with the plan's, for both families at once; then the plan's route
steps. If a route step fails,
what this ADD changed is undone: our tables as they were before (none, for a new pod) and the
routes it added. DEL deletes our tables only (and undoes the route steps). GC has nothing to
collect: every rule lives in the pod's own netns, which the runtime deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshcni_backend_nftables import canonical, library
from meshcni_backend_nftables.layout import FAMILY, OUR_TABLES
from meshcni_backend_nftables.mixing import iptables_rules_here
from meshcni_backend_nftables.transaction import new_pod_document, plan_commands, render, teardown_commands
from meshcni_hooks.errors import ApplyError
from meshcni_hooks.netns import entered
from meshcni_hooks.routesteps import exec_ip, run_route_step
from meshcni_hooks.ruleargs import refuse_unsafe_arguments, unsafe_arguments
from meshcni_hooks.types import RouteStep, RulePlan, Target

# The core's IPv6 inbound-passthrough address: removed on a DEL that came without any plan.
SELF_ADDRESS_UNDO = ("-6", "addr", "del", "::6/128", "dev", "lo")


@dataclass
class _Undo:
    """What an apply changed: ``previous`` is our tables' listing before it (None: there were
    none), ``routes`` the route steps that were not there before."""

    previous: list[dict[str, Any]] | None = None
    routes: list[RouteStep] = field(default_factory=list)


class NftablesBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._host_problems: list[str] | None = None

    # -- contract -------------------------------------------------------------------------------

    def host_problems(self) -> list[str]:
        if self._host_problems is None:
            self._host_problems = library.host_problems()
        return list(self._host_problems)

    def ready(self, flavour: str) -> None:
        problems = self.host_problems()
        if problems:
            raise ApplyError("the nftables backend cannot run on this host", "; ".join(problems))

    def transaction(self, plan: RulePlan) -> str:
        """The transaction of a new pod (a repeated ADD first deletes the tables an earlier one left)."""
        refuse_unsafe_arguments(plan)
        return render(plan_commands(plan))

    def apply(self, plan: RulePlan, target: Target) -> None:
        refuse_unsafe_arguments(plan)
        new_pod = new_pod_document(plan)  # an untranslatable rule fails here, before any change
        with entered(target.netns):
            session = library.Session()
            tables = session.list({"tables": None})
            mixed = iptables_rules_here(session, tables)
            if mixed:
                raise ApplyError(
                    "this pod's network namespace already holds iptables redirect rules; the nftables "
                    "backend does not add a second flavour (delete the pod, or select the iptables backend)",
                    "; ".join(mixed),
                )
            undo = _Undo()
            present = _ours(tables)
            if present:
                undo.previous = canonical_objects(session.list({"ruleset": None}))
            if present:
                session.run(plan_commands(plan, replacing=present))
            else:
                session.run_text(new_pod)
            try:
                for step in plan.routes:
                    run_route_step(step, undo.routes, routes_were_ours=undo.previous is not None)
            except (ApplyError, OSError) as exc:
                error = exc if isinstance(exc, ApplyError) else ApplyError(f"applying the routes failed: {exc}")
                rollback = self._roll_back(session, plan, undo)
                if rollback:
                    error.details = f"{error.details}\nrollback also failed: {rollback}".strip()
                raise error from None

    def teardown(self, target: Target, hints: RulePlan | None) -> None:
        if hints is not None and unsafe_arguments(hints):
            hints = None  # our tables are found by their names
        with entered(target.netns):
            session = library.Session()
            present = _ours(session.list({"tables": None}))
            if present:
                session.run(teardown_commands(present))
            for undo in _route_undo(hints):
                _ip(undo)

    def missing(self, plan: RulePlan, target: Target) -> list[str]:
        refuse_unsafe_arguments(plan)
        expected = canonical.expected_listing(plan_commands(plan))
        with entered(target.netns):
            actual = canonical.ours(library.Session().list({"ruleset": None}))
            problems = canonical.differences(expected, actual)
            for step in plan.routes:
                if step.show and step.expect not in _ip(step.show).stdout:
                    problems.append(f"ip {' '.join(step.show)}: {step.expect!r} is missing")
        return problems

    # -- rollback -------------------------------------------------------------------------------

    def _roll_back(self, session: library.Session, plan: RulePlan, undo: _Undo) -> str:
        problems = []
        restore = teardown_commands() + [{"add": o} for o in undo.previous or []]
        try:
            session.run(restore)
        except ApplyError as exc:
            problems.append(f"{exc.msg}: {exc.details}")
        routes = plan.routes if undo.previous is None else undo.routes
        for step in routes:
            if step.undo:
                _ip(step.undo)
        return "; ".join(problems)


def _ours(tables: list[dict[str, Any]]) -> list[str]:
    """The names of our tables in a ``list tables`` output."""
    found = (t.get("table") or {} for t in tables)
    return [t["name"] for t in found if t.get("family") == FAMILY and t.get("name") in OUR_TABLES]


def canonical_objects(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our tables' objects as ``add`` bodies (no handles), to put them back as they were."""
    out = []
    for item in listing:
        kind, body = next(iter(item.items()))
        table = body.get("name") if kind == "table" else body.get("table")
        if kind in ("table", "chain", "rule") and body.get("family") == FAMILY and table in OUR_TABLES:
            out.append({kind: {k: v for k, v in body.items() if k != "handle"}})
    return out


def _route_undo(hints: RulePlan | None) -> list[tuple[str, ...]]:
    if hints is None:
        return [SELF_ADDRESS_UNDO]
    return [s.undo for s in hints.routes if s.undo]


_ip = exec_ip
