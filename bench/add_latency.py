"""ADD latency and memory of istio-cni builds, today's Istio plugin and Debian's portmap, measured
as a runtime sees them, in one run (``make bench``).

Every sample is one execution from process start to exit, timed with a monotonic clock. Subjects:
meshcni's builds (``--plugin NAME=PATH``; by default the self-contained bundle and the venv's
script), today's Istio ``istio-cni`` (``make istio-cni``, sidecar mode, the entry its install-cni
writes) and Debian's Go ``portmap`` (a chained ADD with one port mapping, the reference each median
is also given as a ratio to). Within every scenario the subjects take turns sample by sample, and
which goes first rotates every round, so a machine whose load drifts shifts them alike. Each round
creates its pod once in a real kube-apiserver (``make control-plane``) and every plugin ADDs that
same pod, read as the same plugin identity, into a fresh network namespace of the same shape.
Peak RSS is read with GNU time from a few extra runs per subject and scenario; a subject whose
peak was not measured is an error, never a 0. ``agent_stages`` breaks an eligible ADD inside the
agent into its stages. ``eligible_via_agent_by_backend`` is the whole eligible ADD through the
agent with each apply backend (``iptables-restore``, ``nftables``), interleaved in one run.

Results are printed and written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcni_core import netns
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing import istiocni
from meshcni_testing.controlplane import ControlPlane, start_control_plane
from meshcni_testing.netlab import PLUGIN, Lab
from meshcni_testing.processes import rss_mib, start_agent

ROOT = Path(__file__).resolve().parents[1]
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
RESULTS = Path(__file__).parent / "results"
RSS_RUNS = 3  # runs per scenario and subject under GNU time, for the peak RSS
BUNDLE = ROOT / "build" / "plugin-bundle" / "istio-cni"
PORTMAP = "/usr/lib/cni/portmap"
APPS, INSTALL_NAMESPACE, IDENTITY = "bench", "istio-system", "istio-cni"
EXCLUDED_NAMESPACES = [INSTALL_NAMESPACE, "kube-system"]
POD_ADDRESS = "192.0.2.9/24"
PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
               "ips": [{"address": POD_ADDRESS, "interface": 0}]}
# The netconf keys selecting each apply backend (the nftables one is an extension's).
BACKENDS = {"iptables-restore": {}, "nftables": {"backend": "nftables", "extensions": ["nftables"]}}


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Run:
    """One execution: wall milliseconds, peak RSS in KiB (``None`` unless measured), exit status, stdout."""

    ms: float
    peak_kib: int | None
    code: int
    out: str


def run_once(binary: str, netconf: dict, env: dict[str, str], rss: bool = False) -> Run:
    """One execution of ``binary`` with ``netconf`` on stdin. The peak RSS needs ``rss=True``, which
    runs it under GNU time (its timing is then not comparable): a child started from this Python
    process reports at least this process's own ~28 MiB in ``wait4`` (exec records the peak of the
    address space it replaces, fork's copy or vfork's shared one)."""
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
        peak_kib = gnu_time_peak_kib(report.read(), binary) if rss else None
    return Run(elapsed, peak_kib, os.waitstatus_to_exitcode(status), out.decode())


def gnu_time_peak_kib(report: str, binary: str) -> int:
    """GNU time's ``%M`` (the last line; a failed command adds a line before it), never 0."""
    lines = report.strip().splitlines()
    if not lines or not lines[-1].isdigit() or int(lines[-1]) <= 0:
        raise BenchError(f"GNU time reported no peak RSS for {binary}: {report!r}")
    return int(lines[-1])


def peak_rss_mib(runs: list[Run]) -> float:
    """The largest peak of ``runs``, each of which must have been measured (``rss=True``): an
    unmeasured peak is an error here, so no table can show a silent 0."""
    if not runs or any(run.peak_kib is None for run in runs):
        raise BenchError("peak RSS asked of runs that were not measured with rss=True")
    return round(max(run.peak_kib for run in runs if run.peak_kib is not None) / 1024, 1)


def cni_env(command: str, netns: str, pod: str, namespace: str = APPS, uid: str = "",
            container_id: str = "") -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container_id or f"bench-{pod}",
        "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
        f"K8S_POD_UID={uid or f'uid-{namespace}-{pod}'}",
    }


def plugin_conf(kubeconfig: str, agent_socket: str, runtime_annotations: dict[str, str] | None = None) -> dict:
    conf = {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "agent_socket": agent_socket,
        "kubernetes": {"kubeconfig": kubeconfig, "exclude_namespaces": EXCLUDED_NAMESPACES},
        "prevResult": PREV_RESULT,
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
    """One measured plugin: a name for the tables, the executable a runtime runs, and what it is:
    ``meshcni`` (a build of ours, given meshcni's netconf), ``istio`` (today's Istio plugin, given
    ``entry``: the keys its install-cni writes) or ``portmap`` (the reference)."""

    name: str
    executable: str
    kind: str = "meshcni"
    entry: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    annotations: Mapping[str, str]


def default_subjects() -> list[Subject]:
    """The shipped self-contained bundle (what hosts run) and the venv's script."""
    if not os.access(BUNDLE, os.X_OK):
        raise BenchError(f"{BUNDLE} is missing: run `make plugin-bundle` (or name builds with --plugin)")
    return [Subject("bundle", str(BUNDLE)), Subject("venv", PLUGIN)]


class Bench:
    """Every subject measured in the same run, in turns inside each scenario."""

    def __init__(self, plane: ControlPlane, token: str, lab: Lab, work: Path, subjects: list[Subject]):
        self.plane, self.lab, self.subjects = plane, lab, subjects
        self.kubeconfig = str(plane.write_kubeconfig(work / "kubeconfig", token=token))
        self.agent_socket = str(work / "agent" / "cni.sock")
        self.pods = iter(range(10**6))
        self.portmap_node, self.portmap_pod = lab.netns("pmnode"), lab.netns("pmpod")

    def new_pod(self, injected: bool = True) -> Pod:
        name = f"app-{next(self.pods)}"
        annotations = {"sidecar.istio.io/status": STATUS} if injected else {}
        created = self.plane.create_pod(APPS, name, node="bench-node", annotations=annotations,
                                        containers=("app", "istio-proxy") if injected else ("app",),
                                        init_containers=("istio-validation",) if injected else ())
        return Pod(APPS, name, created["metadata"]["uid"], annotations)

    def netconf(self, subject: Subject, agent_socket: str, runtime_annotations: dict[str, str] | None) -> dict:
        if subject.entry is None:
            return plugin_conf(self.kubeconfig, agent_socket, runtime_annotations)
        conf = {**subject.entry, "cniVersion": "1.0.0", "name": "k8s-pod-network", "prevResult": PREV_RESULT}
        if runtime_annotations is not None:
            conf["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": runtime_annotations}
        return conf

    def pod_netns(self, label: str) -> str:
        """A fresh pod network namespace: eth0 up with the pod's address (Istio's plugin takes the
        pod's IP family from it)."""
        ns = self.lab.netns(label)
        self.lab.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        self.lab.ip(ns, "addr", "add", POD_ADDRESS, "dev", "eth0")
        self.lab.ip(ns, "link", "set", "eth0", "up")
        return ns

    def add(self, subject: Subject, ns: str, pod: Pod, agent_socket: str, runtime_annotations: dict[str, str] | None,
            rss: bool) -> Run:
        run = run_once(subject.executable, self.netconf(subject, agent_socket, runtime_annotations),
                       cni_env("ADD", ns, pod.name, pod.namespace, pod.uid, f"bench-{subject.name}-{pod.name}"), rss)
        if run.code != 0:
            raise BenchError(f"{subject.name} ADD of {pod.namespace}/{pod.name} failed: {run.out}")
        return run

    def eligible(self, subject: Subject, pod: Pod, agent_socket: str, rss: bool) -> Run:
        ns = self.pod_netns(f"{subject.name[:6]}{pod.name}")
        run = self.add(subject, ns, pod, agent_socket, None, rss)
        if "ISTIO_OUTPUT" not in self.lab.save(ns):
            raise BenchError(f"{subject.name}: rules were not applied")
        self.lab.close_one(ns)
        return run

    def portmap(self, rss: bool) -> Run:
        """Debian's portmap, chained ADD with one mapping, started inside a throwaway node netns;
        DEL (untimed) after each, so every ADD finds the same node."""
        conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "portmap", "snat": False,
                "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]},
                "prevResult": PREV_RESULT}
        env = cni_env("ADD", self.portmap_pod, "portmap", container_id=f"pm{next(self.pods)}")
        with netns.entered(self.portmap_node):
            run = run_once(PORTMAP, conf, env, rss)
            removed = run_once(PORTMAP, conf, {**env, "CNI_COMMAND": "DEL"})
        if run.code != 0 or removed.code != 0:
            raise BenchError(f"portmap failed: {run.out} {removed.out}")
        return run

    def interleaved(self, rounds: int, next_pod: Callable[[], Pod],
                    sample: Callable[[Subject, Pod, bool], Run], subjects: list[Subject] | None = None) -> dict:
        """``rounds`` rounds, each on a pod from ``next_pod`` that every subject ADDs in turn (the
        first rotates every round); then the peak RSS of a few more runs under GNU time."""
        chosen = subjects or self.subjects

        def one(subject: Subject, pod: Pod, rss: bool) -> Run:
            return self.portmap(rss) if subject.kind == "portmap" else sample(subject, pod, rss)

        warm_pod = next_pod()
        for subject in chosen:
            one(subject, warm_pod, False)  # warm-up (the agent's first pipeline, the page cache)
        timed: dict[str, list[float]] = {s.name: [] for s in chosen}
        for i in range(rounds):
            pod = next_pod()
            for subject in chosen[i % len(chosen):] + chosen[:i % len(chosen)]:
                timed[subject.name].append(one(subject, pod, False).ms)
        measured: dict[str, list[Run]] = {s.name: [] for s in chosen}
        for _ in range(RSS_RUNS):
            pod = next_pod()
            for subject in chosen:
                measured[subject.name].append(one(subject, pod, True))
        return {s.name: {**summary(timed[s.name]), "peak_rss_mib": peak_rss_mib(measured[s.name])} for s in chosen}

    def backend_conf(self, backend: str) -> dict:
        """The netconf of the agent (one per backend: an agent serves its own configuration)
        whose apply backend is ``backend``."""
        socket_path = self.agent_socket if backend == "iptables-restore" else self.agent_socket + f".{backend}"
        return {**plugin_conf(self.kubeconfig, socket_path), **BACKENDS[backend]}

    def eligible_with_backend(self, backend: Subject, pod: Pod, rss: bool) -> Run:
        """An eligible ADD through the agent whose apply backend is ``backend.name``."""
        ns = self.pod_netns(f"{backend.name[:6]}{pod.name}")
        run = run_once(backend.executable, self.backend_conf(backend.name),
                       cni_env("ADD", ns, pod.name, pod.namespace, pod.uid, f"bench-{backend.name}-{pod.name}"), rss)
        if run.code != 0:
            raise BenchError(f"{backend.name} ADD of {pod.namespace}/{pod.name} failed: {run.out}")
        if backend.name == "nftables":
            with netns.entered(ns):
                rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
            if "istio-output" not in rules or "ISTIO" in self.lab.save(ns):
                raise BenchError("nftables: the pod did not get (only) our nftables tables")
        elif "ISTIO_OUTPUT" not in self.lab.save(ns):
            raise BenchError(f"{backend.name}: rules were not applied")
        self.lab.close_one(ns)
        return run

    def concurrent(self, subject: Subject, count: int = 32) -> dict:
        pods = [self.new_pod() for _ in range(count)]
        namespaces = [self.pod_netns(pod.name) for pod in pods]

        def one(i: int) -> tuple[float, int]:
            run = run_once(subject.executable, self.netconf(subject, self.agent_socket, None),
                           cni_env("ADD", namespaces[i], pods[i].name, APPS, pods[i].uid))
            return run.ms, run.code

        with ThreadPoolExecutor(max_workers=count) as pool:
            started = time.perf_counter()
            outcomes = list(pool.map(one, range(count)))
            wall = (time.perf_counter() - started) * 1000
        rules_ok = sum("ISTIO_OUTPUT" in self.lab.save(n) for n in namespaces)
        for ns in namespaces:
            self.lab.close_one(ns)
        return {**summary([o[0] for o in outcomes]), "succeeded": sum(o[1] == 0 for o in outcomes),
                "namespaces_with_rules": rules_ok, "wall_ms": round(wall, 1)}


def istio_subject(plane: ControlPlane, token: str, work: Path) -> Subject:
    run_dir = istiocni.prepare_run_dir(work / "istio-run", plane.url, plane.ca, token)
    return Subject("istio", istiocni.binary(), kind="istio",
                   entry=istiocni.sidecar_entry(run_dir, exclude_namespaces=EXCLUDED_NAMESPACES))


def plugin_identity(plane: ControlPlane) -> str:
    """A token of the plugin identity ``manifest apply`` installs, holding its ClusterRole."""
    role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole" and d["metadata"]["name"] == IDENTITY)
    plane.ensure_namespace(INSTALL_NAMESPACE)
    plane.ensure_namespace(APPS)
    plane.grant(INSTALL_NAMESPACE, IDENTITY, role["rules"])
    token = plane.mint_token(INSTALL_NAMESPACE, IDENTITY)
    plane.wait_until_served(f"/api/v1/namespaces/{APPS}/pods?limit=1", token)
    return token


def measure(rounds: int, in_process_rounds: int, builds: list[Subject], with_istio: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="meshcni-bench-"))
    lab = Lab()
    agent = nft_agent = None
    with start_control_plane(ROOT / "build" / "control-plane" / "bin", work / "control-plane") as plane:
        try:
            token = plugin_identity(plane)
            others = [istio_subject(plane, token, work)] if with_istio else []
            subjects = [*builds, *others, Subject("portmap", PORTMAP, kind="portmap")]
            results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                                         "load_average_at_start": os.getloadavg()},
                             "subjects": {s.name: s.executable for s in subjects}}
            if with_istio:
                results["istio_cni_version"] = istiocni.version()
            bench = Bench(plane, token, lab, work, subjects)
            agent = start_agent(bench.agent_socket, plugin_conf(bench.kubeconfig, bench.agent_socket))
            nft_conf = bench.backend_conf("nftables")
            nft_agent = start_agent(nft_conf["agent_socket"], nft_conf)
            scenarios = results["scenarios"] = {}
            scenarios["eligible_via_agent"] = bench.interleaved(
                rounds, bench.new_pod, lambda s, pod, rss: bench.eligible(s, pod, bench.agent_socket, rss))
            by_backend = [Subject(name, builds[0].executable) for name in BACKENDS]
            scenarios["eligible_via_agent_by_backend"] = bench.interleaved(
                rounds, bench.new_pod, lambda s, pod, rss: bench.eligible_with_backend(s, pod, rss), by_backend)
            ns = bench.pod_netns("fixed")
            excluded = Pod("kube-system", "other", "uid-kube-system-other", {})
            scenarios["excluded_namespace"] = bench.interleaved(
                rounds, lambda: excluded, lambda s, pod, rss: bench.add(s, ns, pod, bench.agent_socket, None, rss))
            # a pod without the sidecar status: meshcni decides from the runtime's annotations,
            # Istio's plugin reads the pod from the API
            plain = bench.new_pod(injected=False)
            scenarios["non_mesh_by_runtime_annotations"] = bench.interleaved(
                rounds, lambda: plain,
                lambda s, pod, rss: bench.add(s, ns, pod, bench.agent_socket, dict(pod.annotations), rss))
            if "ISTIO_OUTPUT" in lab.save(ns):
                raise BenchError("a pod that needs no redirection got rules")
            if in_process_rounds:
                scenarios["eligible_in_process"] = bench.interleaved(
                    in_process_rounds, bench.new_pod, lambda s, pod, rss: bench.eligible(s, pod, "", rss), builds)
            scenarios["concurrent_32_via_agent"] = {s.name: bench.concurrent(s) for s in builds}
            results["agent_rss_mib"] = round(rss_mib(agent.pid), 1)
            results["agent_stages"] = agent_stages(bench, rounds)
            results["ratio_to_portmap"] = ratios(results)
        finally:
            for started in (agent, nft_agent):
                if started is not None:
                    started.terminate()
                    started.wait(timeout=10)
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
        pod = bench.new_pod()
        ns = bench.pod_netns(pod.name)
        marks = [time.perf_counter()]
        resolved = pipeline.resolve_pod(APPS, pod.name, pod.uid, None)
        marks.append(time.perf_counter())
        decision = pipeline.decide(resolved)
        marks.append(time.perf_counter())
        facts = netns.read_facts(ns)
        marks.append(time.perf_counter())
        assert decision.spec is not None
        plan = pipeline.plan(resolved, decision.spec, facts)
        marks.append(time.perf_counter())
        pipeline.backend().apply(plan, Target(ns, f"stage-{i}", "eth0", pipeline.config.iptables_flavour))
        marks.append(time.perf_counter())
        bench.lab.close_one(ns)
        pod = bench.new_pod()
        ns = bench.pod_netns(pod.name)
        env = cni_env("ADD", ns, pod.name, APPS, pod.uid)
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
    """Each subject's median over portmap's median in the same scenario's rounds (the issue's
    goals: eligible via the agent <= 0.5, excluded and non-mesh <= 0.25)."""
    wanted = ("eligible_via_agent", "excluded_namespace", "non_mesh_by_runtime_annotations")
    return {scenario: {name: round(measured["median_ms"] / results["scenarios"][scenario]["portmap"]["median_ms"], 2)
                       for name, measured in results["scenarios"][scenario].items()}
            for scenario in wanted}


def table(results: dict) -> str:
    """The scenarios as a Markdown table: median / p90 / p99, peak RSS, ratio to portmap."""
    lines = ["| scenario | subject | median | p90 | p99 | peak RSS | / portmap |", "|---|---|---|---|---|---|---|"]
    for scenario, subjects in results["scenarios"].items():
        for name, m in subjects.items():
            rss = f"{m['peak_rss_mib']} MiB" if "peak_rss_mib" in m else ""
            ratio = results["ratio_to_portmap"].get(scenario, {}).get(name, "")
            lines.append(f"| {scenario} | {name} | {m['median_ms']} ms | {m['p90_ms']} ms | {m['p99_ms']} ms | "
                         f"{rss} | {ratio} |")
    return "\n".join(lines)


def subject(text: str) -> Subject:
    name, sep, executable = text.partition("=")
    if not sep or not name or not executable:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if name in ("istio", "portmap"):
        raise argparse.ArgumentTypeError(f"{name!r} names a reference subject; choose another name")
    return Subject(name, os.path.abspath(executable))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per scenario and subject (default 40)")
    parser.add_argument("--in-process-rounds", type=int, default=10,
                        help="samples of the no-agent fallback, ~1 s each (default 10; 0 skips it)")
    parser.add_argument("--plugin", dest="subjects", type=subject, action="append", metavar="NAME=PATH",
                        help="a meshcni istio-cni executable to time, repeatable (default: the self-contained "
                        "bundle build/plugin-bundle/istio-cni, which must be built, and the venv's script)")
    parser.add_argument("--without-istio", action="store_true",
                        help="leave today's Istio plugin out (by default it is measured and must be built: "
                        "make istio-cni)")
    args = parser.parse_args()
    results = measure(args.rounds, args.in_process_rounds, args.subjects or default_subjects(), not args.without_istio)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
