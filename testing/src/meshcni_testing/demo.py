"""``make demo``: istio-cni chained after Debian's real ptp + host-local, on a throwaway node.

No cluster is involved. A "node" network namespace runs the CNI chain (as containerd would), a
"remote" namespace plays a service outside the pod (198.51.100.10:80). Each example pod from
``examples/pods/`` gets its own namespace; its annotations reach istio-cni the way containerd
passes them (``runtimeConfig["io.kubernetes.cri.pod-annotations"]``). Stand-in proxy listeners
(15001 outbound, 15006 inbound) and app listeners (8080, 9080) run in each pod; real TCP
connections then show where traffic went. Everything is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshcni_testing.chain import Attachment, ChainError, CniChain
from meshcni_testing.netlab import PLUGIN, Accepted, Lab, redirect_extensions
from meshcni_testing.processes import start_agent

REMOTE = "198.51.100.10"
DEBIAN_CNI_DIR = "/usr/lib/cni"
LISTEN_PORTS = (15001, 15006, 8080, 9080)


@dataclass
class PodRun:
    name: str
    namespace: str
    annotations: dict[str, str]
    comment: str
    outcome: str = ""
    add_ms: float = 0.0
    cells: tuple[str, ...] = ()


def load_pods(directory: Path) -> list[PodRun]:
    pods = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        doc = yaml.safe_load(text)
        comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
        meta = doc["metadata"]
        pods.append(PodRun(meta["name"], meta.get("namespace", "default"), dict(meta.get("annotations") or {}),
                           comment))
    return pods


def conflist(ipam_dir: str, agent_socket: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "demo-pod-network",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "192.0.2.0/24", "gateway": "192.0.2.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {
                "type": "istio-cni",
                "log_level": "warn",
                "extensions": redirect_extensions(),
                "kubernetes": {"exclude_namespaces": ["istio-system"]},
                "capabilities": {"io.kubernetes.cri.pod-annotations": True},
                "agent_socket": agent_socket,
            },
        ],
    }


def describe(got: Accepted | str, pod_ip: str, mode: str = "") -> str:
    """Where a connection went; ``mode`` is the pod's interception mode annotation, named when the
    proxy got the connection with its destination kept (not NAT-redirected)."""
    if isinstance(got, str):
        return got
    if got.listener in (15001, 15006) and got.nat_redirected:
        return f"proxy :{got.listener} (orig {got.original_dst[0]}:{got.original_dst[1]})"  # type: ignore[index]
    if got.listener in (15001, 15006):
        return f"proxy :{got.listener} {mode} (dst kept {got.local[0]}:{got.local[1]})".replace("  ", " ")
    if got.listener == 80:
        return "service, direct"
    return f"app :{got.listener}, direct"


def probe(lab: Lab, source: str, address: str, port: int, uid: int | None = None) -> Accepted | str:
    try:
        return lab.connect(source, address, port, uid=uid, timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - any failure is a cell in the table
        return f"no connection ({type(exc).__name__})"


def run_demo(pods_dir: Path, use_agent: bool = True) -> int:
    pods = load_pods(pods_dir)
    if not pods:
        print(f"no pods in {pods_dir}", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="meshcni-demo-")
    lab = Lab()
    attachments: list[Attachment] = []
    chain: CniChain | None = None
    agent: subprocess.Popen[bytes] | None = None
    try:
        agent_socket = os.path.join(work, "agent", "cni.sock")
        if use_agent:
            agent = start_agent(agent_socket, conflist(os.path.join(work, "ipam"), agent_socket))
        bin_dir = os.path.join(work, "bin")
        os.makedirs(bin_dir)
        for name in ("ptp", "host-local", "loopback"):
            os.symlink(os.path.join(DEBIAN_CNI_DIR, name), os.path.join(bin_dir, name))
        os.symlink(PLUGIN, os.path.join(bin_dir, "istio-cni"))
        node, remote = lab.netns("node"), lab.netns("remote")
        lab.link(node, ["203.0.113.1/24"], remote, ["203.0.113.2/24"])
        lab.ip(remote, "addr", "add", f"{REMOTE}/32", "dev", "lo")
        lab.ip(remote, "route", "add", "default", "via", "203.0.113.1")
        lab.ip(node, "route", "add", f"{REMOTE}/32", "via", "203.0.113.2")
        from meshcni_core import netns

        with netns.entered(node):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")  # the node namespace's own sysctl
        lab.listen(remote, REMOTE, 80)
        chain = CniChain(conflist(os.path.join(work, "ipam"), agent_socket), bin_dir, node_netns=node)
        print("meshcni demo: istio-cni chained after Debian's ptp + host-local on a throwaway node")
        print("served by the node agent (meshcni agent)\n" if use_agent else "in-process (no node agent)\n")
        print("conflist:", json.dumps(chain.conflist["plugins"][1]), "\n")
        for index, pod in enumerate(pods):
            pod_ns = lab.netns(f"pod{index}")
            attachment = Attachment(
                container_id=f"demo{index:02d}{lab.token}", netns=pod_ns, ifname="eth0",
                args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": pod.namespace, "K8S_POD_NAME": pod.name,
                      "K8S_POD_INFRA_CONTAINER_ID": f"demo{index:02d}", "K8S_POD_UID": f"uid-{pod.name}"},
                runtime={"io.kubernetes.cri.pod-annotations": pod.annotations},
            )
            try:
                result = chain.add(attachment)
            except ChainError as exc:
                pod.outcome = f"ADD failed: {exc.error.get('msg', exc)}"
                pod.cells = ("(pod not started)",) * 4
                continue
            attachments.append(attachment)
            pod.add_ms = [ms for plugin, cmd, ms in chain.timings if plugin == "istio-cni" and cmd == "ADD"][-1]
            pod_ip = result["ips"][0]["address"].split("/")[0]
            saved = lab.save(pod_ns)
            pod.outcome = "redirected" if "ISTIO_OUTPUT" in saved else "passed through"
            for port in LISTEN_PORTS:
                lab.listen(pod_ns, "0.0.0.0", port, transparent=port in (15001, 15006))
            mode = pod.annotations.get("sidecar.istio.io/interceptionMode", "")
            pod.cells = (
                describe(probe(lab, pod_ns, REMOTE, 80), pod_ip, mode),
                describe(probe(lab, pod_ns, REMOTE, 80, uid=1337), pod_ip, mode),
                describe(probe(lab, remote, pod_ip, 8080), pod_ip, mode),
                describe(probe(lab, remote, pod_ip, 9080), pod_ip, mode),
            )
        print_table(pods)
        return 0
    finally:
        for attachment in attachments:
            try:
                assert chain is not None
                chain.delete(attachment)
            except ChainError as exc:
                print(f"warning: DEL failed: {exc}", file=sys.stderr)
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        created = " ".join(lab.name_of(ns) for ns in lab.namespaces)
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
        print("\ncleaned up: pod sandboxes deleted (CNI DEL), scratch files removed, "
              f"network namespaces removed: {created}")


def print_table(pods: list[PodRun]) -> None:
    headers = ("POD", "ISTIO-CNI", "ADD ms", "app -> 198.51.100.10:80", "uid 1337 -> 198.51.100.10:80",
               "remote -> pod:8080", "remote -> pod:9080")
    rows = [
        (f"{p.namespace}/{p.name}", p.outcome if not p.outcome.startswith("ADD failed") else "ADD failed",
         f"{p.add_ms:.0f}" if p.add_ms else "-", *p.cells)
        for p in pods
    ]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    print()
    for pod in pods:
        detail = pod.outcome if pod.outcome.startswith("ADD failed") else ""
        print(f"* {pod.namespace}/{pod.name}: {pod.comment}" + (f"\n    -> {detail}" if detail else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshcni_testing.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=Path, default=Path("examples/pods"), help="directory of pod manifests")
    parser.add_argument("--no-agent", action="store_true", help="run istio-cni in-process, without the node agent")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo creates network namespaces: run it as root", file=sys.stderr)
        return 1
    return run_demo(args.pods, use_agent=not args.no_agent)


if __name__ == "__main__":
    sys.exit(main())
