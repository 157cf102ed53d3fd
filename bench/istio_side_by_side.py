"""Whole ADD of meshcni (through its node agent) and of today's Istio plugin, interleaved in one run
(``make bench``).

Both read the same pods from the same real kube-apiserver (``make control-plane``) as the same
plugin identity, and program a fresh network namespace per sample. A sample is one execution of
the plugin from process start to exit, as a runtime sees it; the two plugins alternate, and which
goes first alternates every round, so load on the machine falls on both alike. Istio's
``istio-cni`` is the one ``make istio-cni`` builds (istio.io/istio release-1.30), run in sidecar
mode with the entry its install-cni writes.

Results are printed and written to bench/results/istio-side-by-side.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from add_latency import cni_env, run_once, summary

from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_testing import istiocni
from meshcni_testing.controlplane import start_control_plane
from meshcni_testing.netlab import PLUGIN, Lab
from meshcni_testing.processes import start_agent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
APPS, INSTALL_NAMESPACE, IDENTITY = "bench", "istio-system", "istio-cni"
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
               "ips": [{"address": "192.0.2.9/24", "interface": 0}]}


def measure(rounds: int, plugin: str) -> dict:
    istio = istiocni.binary()
    work = Path(tempfile.mkdtemp(prefix="meshcni-bench-istio-"))
    lab = Lab()
    agent = None
    with start_control_plane(ROOT / "build" / "control-plane" / "bin", work / "control-plane") as plane:
        try:
            plugin_role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole"
                               and d["metadata"]["name"] == "istio-cni")
            plane.ensure_namespace(INSTALL_NAMESPACE)
            plane.ensure_namespace(APPS)
            plane.grant(INSTALL_NAMESPACE, IDENTITY, plugin_role["rules"])
            token = plane.mint_token(INSTALL_NAMESPACE, IDENTITY)
            plane.wait_until_served(f"/api/v1/namespaces/{APPS}/pods?limit=1", token)
            uids = [plane.create_pod(APPS, f"app-{i}", node="bench-node", containers=("app", "istio-proxy"),
                                     init_containers=("istio-validation",),
                                     annotations={"sidecar.istio.io/status": STATUS})["metadata"]["uid"]
                    for i in range(rounds + 1)]
            socket_path = str(work / "agent" / "cni.sock")
            ours = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
                    "agent_socket": socket_path, "extensions": ["tproxy", "kubevirt"],
                    "kubernetes": {"kubeconfig": str(plane.write_kubeconfig(work / "kubeconfig", token=token)),
                                   "exclude_namespaces": [INSTALL_NAMESPACE, "kube-system"]},
                    "prevResult": PREV_RESULT}
            agent = start_agent(socket_path, ours)
            run_dir = istiocni.prepare_run_dir(work / "istio-run", plane.url, plane.ca, token)
            theirs = {**istiocni.sidecar_entry(run_dir, exclude_namespaces=[INSTALL_NAMESPACE, "kube-system"]),
                      "cniVersion": "1.0.0", "name": "k8s-pod-network", "prevResult": PREV_RESULT}
            runs = {"meshcni_via_agent": (plugin, ours), "istio_cni": (istio, theirs)}

            def add(which: str, i: int) -> tuple[float, int]:
                binary, netconf = runs[which]
                ns = lab.netns(f"{which[:5]}{i}")
                # a pod's interface and address (Istio's plugin takes the pod's IP family from it)
                lab.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
                lab.ip(ns, "addr", "add", "192.0.2.9/24", "dev", "eth0")
                lab.ip(ns, "link", "set", "eth0", "up")
                env = cni_env("ADD", ns, f"app-{i}", APPS)
                env["CNI_ARGS"] = env["CNI_ARGS"].replace(f"uid-{APPS}-app-{i}", uids[i])
                ms, rss, code, out = run_once(binary, netconf, env)
                assert code == 0, f"{which}: {out}"
                assert "ISTIO_OUTPUT" in lab.save(ns), f"{which} applied no rules"
                lab.close_one(ns)
                return ms, rss

            for which in runs:  # warm-up: the agent's first pipeline, the page cache
                add(which, rounds)
            samples: dict[str, list[tuple[float, int]]] = {which: [] for which in runs}
            for i in range(rounds):
                order = list(runs) if i % 2 == 0 else list(reversed(runs))
                for which in order:
                    samples[which].append(add(which, i))
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            lab.close()
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                     "istio_cni_version": istiocni.version(), "meshcni_plugin": plugin}
    for which, taken in samples.items():
        results[which] = {**summary([ms for ms, _ in taken]),
                          "peak_rss_mib": round(max(rss for _, rss in taken) / 1024, 1)}
    ratio = results["istio_cni"]["median_ms"] / results["meshcni_via_agent"]["median_ms"]
    results["istio_median_over_meshcni_median"] = round(ratio, 2)
    return results


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per plugin (default 40)")
    parser.add_argument("--plugin", default=PLUGIN, help="meshcni's istio-cni executable (default the venv's "
                        "script; build/plugin-bundle/istio-cni is the self-contained one hosts get)")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    results = measure(args.rounds, os.path.abspath(args.plugin))
    text = json.dumps(results, indent=2) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "istio-side-by-side.json").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
