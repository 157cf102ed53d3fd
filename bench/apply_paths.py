"""What the node agent's apply path costs per mechanism, measured in the agent's situation (warm
process, a fresh pod netns each sample): exec'd ``iptables-restore`` against python-iptables
(the ``iptc`` backend, legacy tables only), the ``nftables`` backend's transaction through
libnftables in-process against ``nft -j -f -`` per pod, and ``ip`` execs against pyroute2 for
DEL's route clean-up. Prints medians; issue 16 item 2 and issue 11 choose by these numbers
(docs/performance.md, docs/rules.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Callable

from meshcni_core import netns
from meshcni_core.backends.iptables_restore import IptablesRestoreBackend, default_route_undo
from meshcni_core.pipeline import Pipeline
from meshcni_core.rules.builder import build_plan
from meshcni_hooks.types import RedirectSpec, RulePlan, Target
from meshcni_testing.netlab import Lab

# DEL without hints runs these three (default_route_undo): the pyroute2 calls doing the same.
TPROXY_MARK, TPROXY_TABLE = 1337, 133


def timed(samples: int, lab: Lab, prepare: Callable[[str], object], measured: Callable[[str], object]) -> dict:
    taken = []
    for i in range(samples + 1):
        ns = lab.netns(f"ap{i}")
        prepare(ns)
        started = time.perf_counter()
        measured(ns)
        elapsed = (time.perf_counter() - started) * 1000
        lab.close_one(ns)
        if i:
            taken.append(elapsed)
    return {"median_ms": round(statistics.median(taken), 2), "max_ms": round(max(taken), 2)}


def del_routes_with_ip(ns: str) -> None:
    with netns.entered(ns):
        for step in default_route_undo(None):
            subprocess.run(["ip", *step], capture_output=True)


def del_routes_with_pyroute2(ns: str) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with netns.entered(ns), IPRoute() as ipr:
        for call in (lambda: ipr.rule("del", fwmark=TPROXY_MARK, table=TPROXY_TABLE, family=2),
                     lambda: ipr.flush_routes(table=TPROXY_TABLE, family=2),
                     lambda: ipr.addr("del", index=ipr.link_lookup(ifname="lo")[0], address="::6", prefixlen=128,
                                      family=10)):
            try:
                call()
            except NetlinkError:
                pass  # absent, as for a REDIRECT pod: the exec path ignores these failures too


def tproxy_routes_present(ns: str) -> None:
    with netns.entered(ns):
        for args in (("-f", "inet", "rule", "add", "fwmark", str(TPROXY_MARK), "lookup", str(TPROXY_TABLE)),
                     ("-f", "inet", "route", "add", "local", "default", "dev", "lo", "table", str(TPROXY_TABLE)),
                     ("-6", "addr", "add", "::6/128", "dev", "lo")):
            subprocess.run(["ip", *args], capture_output=True, check=True)


def nft_subjects(rounds: int, lab: Lab, plan: RulePlan) -> dict[str, dict]:
    """The same nft transaction through libnftables in-process (a context per pod: its netlink
    socket belongs to the netns it is made in) and through an exec'd ``nft -j -f -``; and the
    whole backend apply (its refusal check of iptables rules, then the transaction)."""
    from meshcni_backend_nftables.backend import NftablesBackend
    from meshcni_backend_nftables.library import Session
    from meshcni_backend_nftables.transaction import document, plan_commands

    commands = plan_commands(plan)
    text = json.dumps(document(commands))

    def in_process(ns: str) -> None:
        with netns.entered(ns):
            Session().run(commands)

    def exec_nft(ns: str) -> None:
        with netns.entered(ns):
            subprocess.run(["nft", "-j", "-f", "-"], input=text, text=True, check=True)

    rule_count = len([c for c in commands if "rule" in next(iter(c.values()))])

    def pyroute2_skeleton(ns: str) -> None:
        """What pyroute2's nftables module can build of it: the table, a base chain and one of
        ours, and as many rules, each only an ``accept`` verdict (it builds no other expression
        we need), in one batch: a lower bound for that path."""
        from pyroute2.nftables.expressions import verdict
        from pyroute2.nftables.main import NFTables

        with netns.entered(ns):
            nft = NFTables(nfgen_family=1)  # NFPROTO_INET
            try:
                nft.begin()
                nft.table("add", name="istio-proxy-nat")
                nft.chain("add", table="istio-proxy-nat", name="output", hook="output", type="nat",
                          priority=-100, policy=1)
                nft.chain("add", table="istio-proxy-nat", name="istio-output")
                for _ in range(rule_count):
                    nft.rule("add", table="istio-proxy-nat", chain="istio-output", expressions=(verdict(code=1),))
                nft.commit()
            finally:
                nft.close()

    backend = NftablesBackend()
    assert not backend.host_problems(), backend.host_problems()
    return {
        "nft_transaction_libnftables": timed(rounds, lab, lambda ns: None, in_process),
        "nft_transaction_nft_exec": timed(rounds, lab, lambda ns: None, exec_nft),
        "nft_skeleton_pyroute2": timed(rounds, lab, lambda ns: None, pyroute2_skeleton),
        "apply_fresh_nftables_backend": timed(rounds, lab, lambda ns: None,
                                              lambda ns: backend.apply(plan, Target(ns, "c", "eth0"))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    lab = Lab()
    results: dict[str, dict] = {}
    try:
        facts = netns.read_facts(lab.netns("facts"))
        modes = Pipeline.from_netconf({"cniVersion": "1.0.0", "name": "n", "type": "istio-cni"}, {}).modes
        plan = build_plan(RedirectSpec(mode="REDIRECT"), facts, modes)
        exec_backend = IptablesRestoreBackend()
        for flavour in ("nft", "legacy"):
            results[f"apply_fresh_exec_{flavour}"] = timed(
                args.rounds, lab, lambda ns: None,
                lambda ns, f=flavour: exec_backend.apply(plan, Target(ns, "c", "eth0", f)))  # type: ignore[misc]
        from meshcni_backend_iptc.backend import IptcBackend

        iptc_backend = IptcBackend()
        iptc_backend.ready("legacy")
        results["apply_fresh_iptc_legacy"] = timed(
            args.rounds, lab, lambda ns: None, lambda ns: iptc_backend.apply(plan, Target(ns, "c", "eth0", "legacy")))
        results.update(nft_subjects(args.rounds, lab, plan))
        results["read_facts_proc"] = timed(args.rounds, lab, lambda ns: None, netns.read_facts)
        for state, prepare in (("absent", lambda ns: None), ("present", tproxy_routes_present)):
            results[f"del_routes_ip_exec_{state}"] = timed(args.rounds, lab, prepare, del_routes_with_ip)
            results[f"del_routes_pyroute2_{state}"] = timed(args.rounds, lab, prepare, del_routes_with_pyroute2)
    finally:
        lab.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
