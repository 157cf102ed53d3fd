"""What a plan's route steps cost in the node agent (warm process, a fresh pod netns each sample):
``ip`` execs against netlink through pyroute2 (meshcni_core.backends.ip_steps: one socket per plan, what the agent
uses since it calls ``use_netlink()``). Subjects: a TPROXY pod's ADD (the tproxy mode's rule and route,
the rule's idempotence ``pre``, the core's ``::6``), and DEL's clean-up of the same with the routes
present and absent. Both ways run interleaved, sample by sample. Prints medians, p90 and max in ms
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from meshcni_core import netns
from meshcni_core.backends import ip_steps
from meshcni_testing.netlab import Lab

MARK, TABLE = "1337", "133"
ADD = (
    ("-f", "inet", "rule", "del", "fwmark", MARK, "lookup", TABLE),
    ("-f", "inet", "rule", "add", "fwmark", MARK, "lookup", TABLE),
    ("-f", "inet", "route", "replace", "local", "default", "dev", "lo", "table", TABLE),
    ("-6", "addr", "replace", "::6/128", "dev", "lo"),
)
DEL = (
    ("-f", "inet", "rule", "del", "fwmark", MARK, "lookup", TABLE),
    ("-f", "inet", "route", "flush", "table", TABLE),
    ("-6", "addr", "del", "::6/128", "dev", "lo"),
)


def run_steps(ns: str, steps: tuple[tuple[str, ...], ...]) -> float:
    started = time.perf_counter()
    with netns.entered(ns), ip_steps.session():  # as the backend runs a plan's steps
        for step in steps:
            ip_steps.run_ip(step)
    return (time.perf_counter() - started) * 1000


def summary(taken: list[float]) -> dict[str, float]:
    ordered = sorted(taken)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    subjects = ("add", "del_present", "del_absent")
    taken: dict[str, list[float]] = {f"{s}_{way}": [] for s in subjects for way in ("exec", "netlink")}
    ip_steps.use_netlink()  # the import is paid here, as the agent pays it at start
    ip_steps.use_netlink(False)
    lab = Lab()
    try:
        for index in range(args.rounds + 1):  # the first round warms both ways up and is dropped
            for way in ("exec", "netlink"):
                ip_steps.use_netlink(way == "netlink")
                ns = lab.netns(f"rs{index}{way[0]}")
                add = run_steps(ns, ADD)
                del_present = run_steps(ns, DEL)
                del_absent = run_steps(ns, DEL)
                lab.close_one(ns)
                if index:
                    for subject, ms in zip(subjects, (add, del_present, del_absent), strict=True):
                        taken[f"{subject}_{way}"].append(ms)
    finally:
        ip_steps.use_netlink(False)
        lab.close()
    print(json.dumps({name: summary(values) for name, values in taken.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
