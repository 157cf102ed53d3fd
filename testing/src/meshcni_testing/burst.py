"""A burst of ADDs at once, of pods the plugin knows only from a real API server (issue 12).

What a node sees when a deployment scales up: ``count`` pods bound to the node, each ADD in a
fresh network namespace, all started together, the runtime passing no annotations - so every
pod is read from the kube-apiserver (the agent's pod cache or a GET) as the generated plugin
identity. Two servers are measured: ``meshcni install-cni`` (the DaemonSet's process: its own
kubeconfig, its pod cache, the entry it writes) and the standalone ``meshcni agent``.

The plugin runs with ``PATH=/nonexistent``: it finds no iptables of its own, so only the agent
can have programmed a pod's rules. Used by ``tests/test_burst_real.py`` (every ADD succeeds with
rules) and ``bench/burst_api.py`` (the timing).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.netlab import Lab
from meshcni_testing.processes import MESHCNI, start_agent, wait_until_listening

NAMESPACE = "burst-apps"
IDENTITY = "burst-plugin"
NODE = "burst-node"
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
               "ips": [{"address": "192.0.2.9/24", "interface": 0}]}
SERVERS = ("install-cni", "agent")


@dataclass(frozen=True)
class Burst:
    durations_ms: list[float]  # each ADD from the plugin's spawn to its exit
    failures: list[str]  # the pods whose ADD failed, with the plugin's answer
    without_rules: list[str]  # the pods whose netns holds no ISTIO_OUTPUT afterwards
    wall_ms: float


def plugin_token(plane: ControlPlane) -> str:
    """A token of an identity allowed exactly what the generated plugin ClusterRole allows."""
    from meshcni_core.manifest.render import render
    from meshcni_core.manifest.values import resolve

    role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "istio-cni")
    plane.ensure_namespace(NAMESPACE)
    plane.grant(NAMESPACE, IDENTITY, role["rules"])
    token = plane.mint_token(NAMESPACE, IDENTITY)
    plane.wait_until_served(f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1", token)
    return token


def create_pods(plane: ControlPlane, tag: str, count: int) -> dict[str, str]:
    """``count`` injected pods bound to the node, as the scheduler leaves them: name -> uid."""
    return {name: plane.create_pod(NAMESPACE, name, node=NODE, containers=("app", "istio-proxy"),
                                   init_containers=("istio-validation",),
                                   annotations={"sidecar.istio.io/status": STATUS})["metadata"]["uid"]
            for name in (f"{tag}-{i}" for i in range(count))}


def entry_template(socket_path: str) -> dict[str, Any]:
    return {"type": "istio-cni", "agent_socket": socket_path,
            "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "exclude_namespaces": ["istio-system"]}}


@contextmanager
def standalone_agent(plane: ControlPlane, token: str, work: Path) -> Iterator[dict[str, Any]]:
    """``meshcni agent`` with a kubeconfig of the plugin identity; yields the runtime's netconf."""
    kubeconfig = str(plane.write_kubeconfig(work / "kubeconfig", token=token))
    socket_path = str(work / "agent" / "cni.sock")
    netconf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", **entry_template(socket_path),
               "kubernetes": {"kubeconfig": kubeconfig, "exclude_namespaces": ["istio-system"]}}
    agent = start_agent(socket_path, netconf)
    try:
        yield {**netconf, "prevResult": PREV_RESULT}
    finally:
        agent.terminate()
        agent.wait(timeout=15)


@contextmanager
def install_cni(plane: ControlPlane, token: str, work: Path, plugin: str) -> Iterator[dict[str, Any]]:
    """``meshcni install-cni`` on a throwaway host whose service-account dir holds ``token`` and
    the cluster's CA, as kubelet mounts them; yields the runtime's netconf: the entry it chained
    into the primary's conflist."""
    conf, bins, source, sa = (work / d for d in ("net.d", "bin", "plugin", "sa"))
    for directory in (conf, bins, source, sa):
        directory.mkdir(parents=True)
    (source / "istio-cni").write_text(f"#!/bin/sh\nexec {plugin} \"$@\"\n")
    (source / "istio-cni").chmod(0o755)
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(plane.ca.read_bytes())
    conflist = conf / "10-ptp.conflist"
    conflist.write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}]}))
    server = urlparse(plane.url)
    socket_path = str(work / "run" / "cni.sock")
    env = {**os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins),
           "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
           "KUBERNETES_SERVICE_HOST": str(server.hostname), "KUBERNETES_SERVICE_PORT": str(server.port),
           "KUBERNETES_NODE_NAME": NODE, "CNI_NETWORK_CONFIG": json.dumps(entry_template(socket_path))}
    log = open(work / "install-cni.log", "wb")  # closed below, after the process
    proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", socket_path, "--monitoring-port", "0",
                             "--monitoring-address", "127.0.0.1", "--log-level", "warn"], env=env, stderr=log)
    try:
        wait_until_listening(proc, socket_path, output=lambda: (work / "install-cni.log").read_text())
        deadline = time.monotonic() + 30
        while (entry := json.loads(conflist.read_text())["plugins"][-1])["type"] != "istio-cni" or \
                not os.path.exists(entry["kubernetes"]["kubeconfig"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("install-cni did not chain the plugin:\n" + (work / "install-cni.log").read_text())
            time.sleep(0.05)
        yield {**entry, "cniVersion": "1.0.0", "name": "k8s-pod-network", "prevResult": PREV_RESULT}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def fire(lab: Lab, plugin: str, netconf: dict[str, Any], uids: dict[str, str]) -> Burst:
    """One ADD per pod (name -> uid, as kubelet passes both), each into a fresh netns, all started
    at once; then every netns's rules."""
    pods = list(uids)
    namespaces = [lab.netns(pod) for pod in pods]
    stdin = json.dumps(netconf)

    def add(i: int) -> tuple[float, subprocess.CompletedProcess[str]]:
        env = {"PATH": "/nonexistent", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"ctr-{pods[i]}",
               "CNI_NETNS": namespaces[i], "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pods[i]};"
                           f"K8S_POD_UID={uids[pods[i]]}"}
        started = time.perf_counter()
        result = subprocess.run([plugin], input=stdin, env=env, capture_output=True, text=True, timeout=120)
        return (time.perf_counter() - started) * 1000, result

    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        started = time.perf_counter()
        outcomes = list(pool.map(add, range(len(pods))))
        wall = (time.perf_counter() - started) * 1000
    failures = [f"{pod}: exit {r.returncode} {r.stdout.strip()} {r.stderr.strip()[-300:]}"
                for pod, (_, r) in zip(pods, outcomes, strict=True) if r.returncode != 0]
    without = [pod for pod, ns in zip(pods, namespaces, strict=True) if "-A ISTIO_OUTPUT" not in lab.save(ns)]
    for ns in namespaces:
        lab.close_one(ns)
    return Burst([ms for ms, _ in outcomes], failures, without, wall)


def p99(durations_ms: list[float]) -> float:
    ordered = sorted(durations_ms)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
