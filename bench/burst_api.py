"""32 ADDs at once of pods known only from a real kube-apiserver, served by install-cni and by the
standalone ``meshcni agent`` (issue 12; ``make bench``).

Each round creates 32 injected pods bound to the node in a real API server (the project's
control plane, ``make control-plane``), then starts their 32 ADDs together, a fresh netns each,
with no runtime annotations: the agent reads every pod from the API (install-cni: its pod cache
or a GET; the standalone agent: a GET), as the generated plugin identity. Each ADD is timed from
the plugin's spawn to its exit; a round counts only when every ADD succeeded and every netns
holds its rules. Every istio-cni build (the self-contained bundle when built, the venv's script)
and both servers are measured in the same run. Goal: p99 <= 1 s on the project's 2-core machine.
``one_at_a_time``: then 40 single eligible ADDs in a row, each of a pod bound a second earlier
(install-cni answers from its watched cache, as on a node; the standalone agent GETs the pod).

Results are printed and written to bench/results/burst_api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from add_latency import RESULTS, Subject, default_subjects

from meshcni_testing import burst
from meshcni_testing.controlplane import start_control_plane
from meshcni_testing.netlab import Lab

CONTROL_PLANE_BIN = Path(__file__).resolve().parents[1] / "build" / "control-plane" / "bin"
COUNT = 32
ONE_BY_ONE = 40  # single ADDs, one after another, of pods created a second before (as kubelet's
BOUND_BEFORE_ADD_S = 1.0  # ADD comes well after the scheduler bound the pod: the watch has it)


def measure(rounds: int, subjects: list[Subject]) -> dict:
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                     "subjects": {s.name: s.executable for s in subjects}, "count": COUNT, "rounds": rounds}
    lab = Lab()
    work = Path(tempfile.mkdtemp(prefix="meshcni-burst-"))
    try:
        with start_control_plane(CONTROL_PLANE_BIN, work / "control-plane") as plane:
            token = burst.plugin_token(plane)
            for server in burst.SERVERS:
                for s in subjects:
                    results.setdefault(server, {})[s.name] = rounds_of(plane, token, lab, work / f"{server}-{s.name}",
                                                                       server, s, rounds)
    finally:
        lab.close()
    return results


def rounds_of(plane, token: str, lab: Lab, work: Path, server: str, s: Subject, rounds: int) -> dict:
    work.mkdir()
    serve = burst.install_cni(plane, token, work, s.executable) if server == "install-cni" \
        else burst.standalone_agent(plane, token, work)
    taken: list[list[float]] = []
    with serve as netconf:
        burst.fire(lab, s.executable, netconf, burst.create_pods(plane, f"warm-{lab.token}-{work.name}", 2))
        for i in range(rounds):
            pods = burst.create_pods(plane, f"b{i}-{lab.token}-{work.name}", COUNT)
            result = burst.fire(lab, s.executable, netconf, pods)
            assert not result.failures and not result.without_rules, (result.failures, result.without_rules)
            taken.append(result.durations_ms)
        single = one_at_a_time(plane, lab, s, netconf, f"s-{lab.token}-{work.name}")
    every = [ms for one in taken for ms in one]
    return {"p99_ms_per_round": [round(burst.p99(one), 1) for one in taken],
            "median_ms": round(statistics.median(every), 1), "p99_ms": round(burst.p99(every), 1),
            "max_ms": round(max(every), 1), "all_succeeded_with_rules": True, "one_at_a_time": single}


def one_at_a_time(plane, lab: Lab, s: Subject, netconf: dict, tag: str) -> dict:
    """Eligible ADDs one after another, each of a pod bound BOUND_BEFORE_ADD_S earlier: install-cni
    answers from its watched pod cache, the standalone agent (no cache) with a GET."""
    pods = burst.create_pods(plane, tag, ONE_BY_ONE)
    time.sleep(BOUND_BEFORE_ADD_S)
    taken: list[float] = []
    for name, uid in pods.items():
        result = burst.fire(lab, s.executable, netconf, {name: uid})
        assert not result.failures and not result.without_rules, (result.failures, result.without_rules)
        taken.extend(result.durations_ms)
    ordered = sorted(taken)
    return {"median_ms": round(statistics.median(taken), 1), "p90_ms": round(ordered[int(0.9 * len(ordered))], 1),
            "p99_ms": round(burst.p99(taken), 1), "samples": len(taken)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="bursts per server and build (default 3)")
    results = measure(parser.parse_args().rounds, default_subjects())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "burst_api.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
