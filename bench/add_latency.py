"""ADD latency and memory of istio-cni, measured as a runtime sees them (``make bench``).

Every sample is one execution of the installed ``istio-cni`` from process start to exit, timed
with a monotonic clock; peak RSS comes from ``wait4``. Eligible pods are looked up from the
project's HTTPS API stand-in (the runtime passes no annotations) and their rules are applied in a
fresh network namespace. Reference point measured the same way on this machine: Debian's Go
``portmap`` plugin doing a chained ADD with one port mapping.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from meshcni_core.devtools.apiserver import FakeApiServer
from meshcni_core.devtools.netlab import PLUGIN, Lab
from meshcni_core.devtools.processes import rss_mib, start_agent

STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
RESULTS = Path(__file__).parent / "results"


def run_once(binary: str, netconf: dict, env: dict[str, str]) -> tuple[float, int, int, str]:
    """(milliseconds, peak RSS KiB, exit status, stdout) of one execution."""
    started = time.perf_counter()
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(netconf).encode())
    proc.stdin.close()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode, out.decode()


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


def with_rss(samples: list[tuple[float, int]]) -> dict[str, float]:
    return {**summary([ms for ms, _ in samples]), "peak_rss_mib": round(max(rss for _, rss in samples) / 1024, 1)}


def measure(rounds: int, plugin: str) -> dict:
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}, "plugin": plugin}
    work = tempfile.mkdtemp(prefix="meshcni-bench-")
    lab = Lab()
    agent = None
    with FakeApiServer() as api:
        try:
            kubeconfig = api.write_kubeconfig(os.path.join(work, "kubeconfig"))
            agent_socket = os.path.join(work, "agent", "cni.sock")
            for i in range(rounds * 3 + 64):
                api.add_pod("default", f"app-{i}", containers=["app", "istio-proxy"],
                            init_containers=["istio-validation"], annotations={"sidecar.istio.io/status": STATUS})
            agent = start_agent(agent_socket, plugin_conf(kubeconfig, agent_socket))
            counter = iter(range(10**6))

            def eligible(socket_path: str) -> tuple[float, int]:
                i = next(counter)
                ns = lab.netns(f"e{i}")
                conf = plugin_conf(kubeconfig, socket_path)
                ms, rss, code, out = run_once(plugin, conf, cni_env("ADD", ns, f"app-{i}"))
                assert code == 0, out
                assert "ISTIO_OUTPUT" in lab.save(ns), "rules were not applied"
                lab.close_one(ns)
                return ms, rss

            for name, socket_path in (("eligible_via_agent", agent_socket), ("eligible_in_process", "")):
                eligible(socket_path)  # warm-up (first pipeline in the agent, page cache)
                samples = [eligible(socket_path) for _ in range(rounds)]
                results[name] = with_rss(samples)

            ns = lab.netns("fixed")
            for name, namespace, annotations in (
                ("excluded_namespace", "kube-system", None),
                ("non_mesh_by_runtime_annotations", "default", {}),
            ):
                samples = []
                for _ in range(rounds):
                    ms, rss, code, _ = run_once(plugin, plugin_conf(kubeconfig, agent_socket, annotations),
                                                cni_env("ADD", ns, "other", namespace))
                    assert code == 0
                    samples.append((ms, rss))
                results[name] = with_rss(samples)
            assert lab.save(ns) == ""

            namespaces = [lab.netns(f"c{i}") for i in range(32)]
            base = next(counter)

            def concurrent(i: int) -> tuple[float, int]:
                ms, _, code, _ = run_once(plugin, plugin_conf(kubeconfig, agent_socket),
                                            cni_env("ADD", namespaces[i], f"app-{base + 1 + i}"))
                return ms, code

            with ThreadPoolExecutor(max_workers=32) as pool:
                started = time.perf_counter()
                outcomes = list(pool.map(concurrent, range(32)))
                wall = (time.perf_counter() - started) * 1000
            rules_ok = sum("ISTIO_OUTPUT" in lab.save(n) for n in namespaces)
            results["concurrent_32_via_agent"] = {
                **summary([o[0] for o in outcomes]), "succeeded": sum(o[1] == 0 for o in outcomes),
                "namespaces_with_rules": rules_ok, "wall_ms": round(wall, 1),
            }
            results["agent_rss_mib"] = round(rss_mib(agent.pid), 1)
            results["reference_portmap_chained_add"] = portmap_reference(lab, rounds)
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            lab.close()
    return results


def portmap_reference(lab: Lab, rounds: int) -> dict:
    """Debian's Go portmap plugin, chained ADD with one mapping, run inside a throwaway node netns."""
    node, pod = lab.netns("pmnode"), lab.netns("pmpod")
    conf = {
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "portmap", "snat": False,
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                       "ips": [{"address": "192.0.2.9/24", "interface": 0}]},
    }
    samples = []
    for i in range(rounds):
        env = cni_env("ADD", pod, f"pm-{i}")
        env["CNI_CONTAINERID"] = f"pm{i}"
        ms, _, code, out = _portmap_once(node, conf, env)
        assert code == 0, out
        samples.append(ms)
    return summary(samples)


def _portmap_once(node: str, conf: dict, env: dict[str, str]) -> tuple[float, int, int, str]:
    from meshcni_core import netns

    with netns.entered(node):  # the plugin process starts inside the node namespace
        return run_once("/usr/lib/cni/portmap", conf, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per scenario (default 40)")
    parser.add_argument("--plugin", default=PLUGIN, help="the istio-cni executable to time (default the venv's "
                        "script; build/plugin-bundle/istio-cni is the self-contained one hosts get)")
    args = parser.parse_args()
    results = measure(args.rounds, os.path.abspath(args.plugin))
    RESULTS.mkdir(exist_ok=True)
    name = "latest.json" if args.plugin == PLUGIN else "latest-bundle.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
