"""ADD latency and memory of istio-cni, measured as a runtime sees them (``make bench``).

Every sample is one execution of an ``istio-cni`` build from process start to exit, timed with a
monotonic clock; peak RSS comes from ``wait4``. Every build (``--plugin NAME=PATH``; by default
the self-contained bundle and the venv's script) is measured in the same run, round-robin.
Eligible pods are looked up from the project's HTTPS API stand-in (the runtime passes no
annotations) and their rules are applied in a fresh network namespace. Reference point measured
the same way on this machine: Debian's Go ``portmap`` plugin doing a chained ADD with one port
mapping; each build's medians are also given as a ratio to it. ``agent_stages`` breaks an
eligible ADD inside the agent into its stages.

Results are printed and written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from meshcni_core import netns
from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import PLUGIN, Lab
from meshcni_testing.processes import rss_mib, start_agent

STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
RESULTS = Path(__file__).parent / "results"
RSS_RUNS = 3  # runs per scenario and subject under GNU time, for the peak RSS
BUNDLE = Path(__file__).resolve().parents[1] / "build" / "plugin-bundle" / "istio-cni"


def run_once(binary: str, netconf: dict, env: dict[str, str], rss: bool = False) -> tuple[float, int, int, str]:
    """(milliseconds, peak RSS KiB or 0, exit status, stdout) of one execution. The peak RSS needs
    ``rss=True``, which runs it under GNU time (its timing is then not comparable): a child
    started from this Python process reports at least this process's own ~28 MiB in ``wait4``
    (exec records the peak of the address space it replaces, fork's copy or vfork's shared one)."""
    with tempfile.NamedTemporaryFile("r") as report:
        argv = ["/usr/bin/time", "-f", "%M", "-o", report.name, binary] if rss else [binary]
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        started = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, stdout_w, 1),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_CLOSE, stdin_w), (os.POSIX_SPAWN_CLOSE, stdout_r),
        ])
        os.close(stdin_r)
        os.close(stdout_w)
        try:
            with os.fdopen(stdin_w, "wb") as stdin:
                stdin.write(json.dumps(netconf).encode())
        except BrokenPipeError:
            pass  # it exited without reading all of it
        with os.fdopen(stdout_r, "rb") as stdout:
            out = stdout.read()
        _, status, _ = os.wait4(pid, 0)
        elapsed = (time.perf_counter() - started) * 1000
        peak_kib = int(report.read().split()[-1]) if rss else 0
    return elapsed, peak_kib, os.waitstatus_to_exitcode(status), out.decode()


def cni_env(command: str, netns: str, pod: str, namespace: str = "default") -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": f"bench-{pod}", "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
        f"K8S_POD_UID=uid-{namespace}-{pod}",
    }


def plugin_conf(kubeconfig: str, agent_socket: str, runtime_annotations: dict[str, str] | None = None) -> dict:
    conf = {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "agent_socket": agent_socket,
        "kubernetes": {"kubeconfig": kubeconfig, "exclude_namespaces": ["istio-system", "kube-system"]},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                       "ips": [{"address": "192.0.2.9/24", "interface": 0}]},
    }
    if runtime_annotations is not None:
        conf["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": runtime_annotations}
    return conf


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered), 1), "p90_ms": round(pick(0.9), 1),
            "p99_ms": round(pick(0.99), 1), "min_ms": round(ordered[0], 1)}


@dataclass(frozen=True)
class Subject:
    """One measured istio-cni build: a name for the tables and the executable a runtime runs."""

    name: str
    executable: str


def default_subjects() -> list[Subject]:
    subjects = [Subject("venv", PLUGIN)]
    if BUNDLE.exists():
        subjects.insert(0, Subject("bundle", str(BUNDLE)))
    return subjects


class Bench:
    """Every subject measured in the same run, round-robin inside each scenario (a machine whose
    load drifts shifts every subject alike)."""

    def __init__(self, api: FakeApiServer, lab: Lab, work: str, subjects: list[Subject]):
        self.api, self.lab, self.subjects = api, lab, subjects
        self.kubeconfig = api.write_kubeconfig(os.path.join(work, "kubeconfig"))
        self.agent_socket = os.path.join(work, "agent", "cni.sock")
        self.pods = iter(range(10**6))

    def new_pod(self) -> str:
        name = f"app-{next(self.pods)}"
        self.api.add_pod("default", name, containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                         annotations={"sidecar.istio.io/status": STATUS})
        return name

    def eligible(self, subject: Subject, socket_path: str, rss: bool = False) -> tuple[float, int]:
        pod = self.new_pod()
        ns = self.lab.netns(pod)
        ms, peak, code, out = run_once(subject.executable, plugin_conf(self.kubeconfig, socket_path),
                                       cni_env("ADD", ns, pod), rss)
        assert code == 0, f"{subject.name}: {out}"
        assert "ISTIO_OUTPUT" in self.lab.save(ns), f"{subject.name}: rules were not applied"
        self.lab.close_one(ns)
        return ms, peak

    def passed_through(self, subject: Subject, ns: str, namespace: str, annotations: dict[str, str] | None,
                       rss: bool = False) -> tuple[float, int]:
        ms, peak, code, out = run_once(subject.executable,
                                       plugin_conf(self.kubeconfig, self.agent_socket, annotations),
                                       cni_env("ADD", ns, "other", namespace), rss)
        assert code == 0, f"{subject.name}: {out}"
        return ms, peak

    def interleaved(self, rounds: int, sample: Callable[[Subject, bool], tuple[float, int]]) -> dict[str, dict]:
        """Timed samples round-robin, then the peak RSS of a few more runs under GNU time."""
        for subject in self.subjects:
            sample(subject, False)  # warm-up (the agent's first pipeline, the page cache)
        timed: dict[str, list[float]] = {s.name: [] for s in self.subjects}
        for _ in range(rounds):
            for subject in self.subjects:
                timed[subject.name].append(sample(subject, False)[0])
        peaks = {s.name: max(sample(s, True)[1] for _ in range(RSS_RUNS)) for s in self.subjects}
        return {name: {**summary(taken), "peak_rss_mib": round(peaks[name] / 1024, 1)} for name, taken in timed.items()}

    def concurrent(self, subject: Subject, count: int = 32) -> dict:
        pods = [self.new_pod() for _ in range(count)]
        namespaces = [self.lab.netns(pod) for pod in pods]

        def one(i: int) -> tuple[float, int]:
            ms, _, code, _ = run_once(subject.executable, plugin_conf(self.kubeconfig, self.agent_socket),
                                      cni_env("ADD", namespaces[i], pods[i]))
            return ms, code

        with ThreadPoolExecutor(max_workers=count) as pool:
            started = time.perf_counter()
            outcomes = list(pool.map(one, range(count)))
            wall = (time.perf_counter() - started) * 1000
        rules_ok = sum("ISTIO_OUTPUT" in self.lab.save(n) for n in namespaces)
        for ns in namespaces:
            self.lab.close_one(ns)
        return {**summary([o[0] for o in outcomes]), "succeeded": sum(o[1] == 0 for o in outcomes),
                "namespaces_with_rules": rules_ok, "wall_ms": round(wall, 1)}


def measure(rounds: int, in_process_rounds: int, subjects: list[Subject]) -> dict:
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                     "subjects": {s.name: s.executable for s in subjects}}
    work = tempfile.mkdtemp(prefix="meshcni-bench-")
    lab = Lab()
    agent = None
    with FakeApiServer() as api:
        try:
            bench = Bench(api, lab, work, subjects)
            agent = start_agent(bench.agent_socket, plugin_conf(bench.kubeconfig, bench.agent_socket))
            scenarios = results["scenarios"] = {}
            scenarios["eligible_via_agent"] = bench.interleaved(
                rounds, lambda s, rss: bench.eligible(s, bench.agent_socket, rss))
            ns = lab.netns("fixed")
            scenarios["excluded_namespace"] = bench.interleaved(
                rounds, lambda s, rss: bench.passed_through(s, ns, "kube-system", None, rss))
            scenarios["non_mesh_by_runtime_annotations"] = bench.interleaved(
                rounds, lambda s, rss: bench.passed_through(s, ns, "default", {}, rss))
            assert lab.save(ns) == ""
            if in_process_rounds:
                scenarios["eligible_in_process"] = bench.interleaved(
                    in_process_rounds, lambda s, rss: bench.eligible(s, "", rss))
            scenarios["concurrent_32_via_agent"] = {s.name: bench.concurrent(s) for s in subjects}
            results["agent_rss_mib"] = round(rss_mib(agent.pid), 1)
            results["agent_stages"] = agent_stages(bench, rounds)
            results["reference_portmap_chained_add"] = portmap_reference(lab, rounds)
            results["ratio_to_portmap"] = ratios(results)
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            lab.close()
    return results


def agent_stages(bench: Bench, rounds: int) -> dict[str, dict[str, float]]:
    """Where an eligible ADD's time goes inside the agent: the same calls its warm pipeline makes
    (pipeline.add), each timed, run in this process with the agent's configuration; plus the
    agent's whole answer as a plugin sees it (a socket round trip from an already running client)."""
    from meshcni_core.agent.client import call_agent
    from meshcni_core.pipeline import Pipeline
    from meshcni_hooks.types import Target

    pipeline = Pipeline.from_netconf(plugin_conf(bench.kubeconfig, ""), {})
    stages: dict[str, list[float]] = {s: [] for s in ("pod_lookup", "decision", "netns_facts", "rule_build", "apply",
                                                      "agent_round_trip")}
    for i in range(rounds + 1):
        pod_name = bench.new_pod()
        ns = bench.lab.netns(pod_name)
        marks = [time.perf_counter()]
        pod = pipeline.resolve_pod("default", pod_name, f"uid-default-{pod_name}", None)
        marks.append(time.perf_counter())
        decision = pipeline.decide(pod)
        marks.append(time.perf_counter())
        facts = netns.read_facts(ns)
        marks.append(time.perf_counter())
        assert decision.spec is not None
        plan = pipeline.plan(pod, decision.spec, facts)
        marks.append(time.perf_counter())
        pipeline.backend().apply(plan, Target(ns, f"stage-{i}", "eth0", pipeline.config.iptables_flavour))
        marks.append(time.perf_counter())
        bench.lab.close_one(ns)
        pod_name = bench.new_pod()
        ns = bench.lab.netns(pod_name)
        env = cni_env("ADD", ns, pod_name)
        stdin = json.dumps(plugin_conf(bench.kubeconfig, bench.agent_socket)).encode()
        started = time.perf_counter()
        answer = call_agent(bench.agent_socket, env, stdin)
        marks.append(time.perf_counter())
        assert answer is not None and answer[0] == 0, answer
        bench.lab.close_one(ns)
        if i == 0:
            continue  # warm-up
        for name, begin, end in zip(("pod_lookup", "decision", "netns_facts", "rule_build", "apply"), marks, marks[1:],
                                    strict=False):
            stages[name].append((end - begin) * 1000)
        stages["agent_round_trip"].append((marks[-1] - started) * 1000)
    return {name: {"median_ms": round(statistics.median(taken), 2), "max_ms": round(max(taken), 2)}
            for name, taken in stages.items()}


def ratios(results: dict) -> dict[str, dict[str, float]]:
    """Each subject's median over portmap's median of the same run (the issue's goals: eligible via
    the agent <= 0.5, excluded and non-mesh <= 0.25)."""
    reference = results["reference_portmap_chained_add"]["median_ms"]
    wanted = ("eligible_via_agent", "excluded_namespace", "non_mesh_by_runtime_annotations")
    return {scenario: {name: round(measured["median_ms"] / reference, 2)
                       for name, measured in results["scenarios"][scenario].items()}
            for scenario in wanted}


def portmap_reference(lab: Lab, rounds: int) -> dict:
    """Debian's Go portmap plugin, chained ADD with one mapping, run inside a throwaway node netns."""
    node, pod = lab.netns("pmnode"), lab.netns("pmpod")
    conf = {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "portmap", "snat": False,
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                       "ips": [{"address": "192.0.2.9/24", "interface": 0}]},
    }
    samples, peak = [], 0
    for i in range(rounds + RSS_RUNS):
        env = cni_env("ADD", pod, f"pm-{i}")
        env["CNI_CONTAINERID"] = f"pm{i}"
        ms, rss, code, out = _portmap_once(node, conf, env, rss=i >= rounds)
        assert code == 0, out
        if i < rounds:
            samples.append(ms)
        peak = max(peak, rss)
    return {**summary(samples), "peak_rss_mib": round(peak / 1024, 1)}


def _portmap_once(node: str, conf: dict, env: dict[str, str], rss: bool) -> tuple[float, int, int, str]:
    with netns.entered(node):  # the plugin process starts inside the node namespace
        return run_once("/usr/lib/cni/portmap", conf, env, rss)


def subject(text: str) -> Subject:
    name, sep, executable = text.partition("=")
    if not sep or not name or not executable:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return Subject(name, os.path.abspath(executable))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per scenario and subject (default 40)")
    parser.add_argument("--in-process-rounds", type=int, default=10,
                        help="samples of the no-agent fallback, ~1 s each (default 10; 0 skips it)")
    parser.add_argument("--plugin", dest="subjects", type=subject, action="append", metavar="NAME=PATH",
                        help="an istio-cni executable to time, repeatable (default: the self-contained bundle "
                        "build/plugin-bundle/istio-cni when built, and the venv's script)")
    args = parser.parse_args()
    results = measure(args.rounds, args.in_process_rounds, args.subjects or default_subjects())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
