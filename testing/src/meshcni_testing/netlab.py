"""Throwaway network namespaces, veth pairs and TCP listeners for tests and the demo.

Only namespaces this module created are touched, only documentation ranges are used
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), and everything is deleted on
``close()`` even when a test failed half-way.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcni_core import netns

SO_ORIGINAL_DST = 80  # netfilter's getsockopt, same number for IPv4 (SOL_IP) and IPv6 (SOL_IPV6)
IP_TRANSPARENT = 19
# The istio-cni under test: the venv's entry point, or another build of it named by
# MESHCNI_TEST_PLUGIN (make test runs the agent suites again against the self-contained bundle).
PLUGIN = os.environ.get("MESHCNI_TEST_PLUGIN") or str(Path(sys.executable).with_name("istio-cni"))


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


@dataclass
class Accepted:
    listener: int  # the port the listener was bound to
    original_dst: tuple[str, int] | None  # conntrack's original destination (SO_ORIGINAL_DST)
    local: tuple[str, int]  # the accepted socket's own address (a transparent proxy keeps the original one)
    peer: tuple[str, int]

    @property
    def nat_redirected(self) -> bool:
        return self.original_dst is not None and self.original_dst != self.local


def _connect_as(ns: str, address: str, port: int, uid: int, timeout: float) -> None:
    """Connect from a forked child that entered ``ns`` and dropped to ``uid`` (the proxy's)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, report through the exit status only
        code = 1
        try:
            with netns.entered(ns):
                os.setuid(uid)
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect((address, port))
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConnectionError(f"connect to {address}:{port} as uid {uid} failed")


@dataclass
class Listener:
    sock: socket.socket
    port: int
    events: queue.Queue[Accepted]
    thread: threading.Thread | None = None

    def serve(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.events.put(
                Accepted(self.port, original_dst(conn), conn.getsockname()[:2], peer[:2])
            )
            conn.close()


def original_dst(conn: socket.socket) -> tuple[str, int] | None:
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, packed = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntop(socket.AF_INET, packed), port
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port, packed = struct.unpack_from("!2xH4x16s", raw)
        return socket.inet_ntop(socket.AF_INET6, packed), port
    except OSError:
        return None  # not NATed


@dataclass
class Lab:
    """A set of namespaces named ``mc<token>-<role>`` and the listeners opened in them."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)
    events: queue.Queue[Accepted] = field(default_factory=queue.Queue)
    links: int = 0

    def netns(self, role: str) -> str:
        name = f"mc{self.token}-{role}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    @staticmethod
    def name_of(path: str) -> str:
        return os.path.basename(path)

    def link(self, a: str, a_addrs: list[str], b: str, b_addrs: list[str], *, a_device: str = "eth0",
             b_device: str = "eth0") -> None:
        """A veth pair ``a_device`` in ``a`` <-> ``b_device`` in ``b`` with the given addresses."""
        self.links += 1
        left, right = f"v{self.token}a{self.links}", f"v{self.token}b{self.links}"
        run("ip", "link", "add", left, "type", "veth", "peer", "name", right)
        run("ip", "link", "set", left, "netns", self.name_of(a))
        run("ip", "link", "set", right, "netns", self.name_of(b))
        for ns, dev, name, addrs in ((a, left, a_device, a_addrs), (b, right, b_device, b_addrs)):
            n = self.name_of(ns)
            run("ip", "-n", n, "link", "set", dev, "name", name)
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                run("ip", "-n", n, "addr", "add", addr, "dev", name, *extra)
            run("ip", "-n", n, "link", "set", name, "up")

    def ip(self, ns: str, *args: str) -> None:
        run("ip", "-n", self.name_of(ns), *args)

    def listen(self, ns: str, address: str, port: int, transparent: bool = False) -> Listener:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with netns.entered(ns):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if transparent:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind((address, port))
            sock.listen(16)
        listener = Listener(sock, port, self.events)
        listener.serve()
        self.listeners.append(listener)
        return listener

    def connect(self, ns: str, address: str, port: int, uid: int | None = None, timeout: float = 3.0) -> Accepted:
        """Connect from inside ``ns`` (as ``uid`` when given) and return which listener accepted."""
        if uid is None:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with netns.entered(ns):
                sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect((address, port))
            finally:
                sock.close()
        else:
            _connect_as(ns, address, port, uid, timeout)
        return self.events.get(timeout=timeout)

    def save(self, ns: str, family: int = 4, flavour: str = "nft") -> str:
        tool = f"{'ip6' if family == 6 else 'ip'}tables-{flavour}-save"
        with netns.entered(ns):
            out = run(tool).stdout
        return "\n".join(line for line in out.splitlines() if line.startswith("-A "))

    def close_one(self, path: str) -> None:
        name = self.name_of(path)
        run("ip", "netns", "del", name, check=False)
        self.namespaces.remove(name)

    def close(self) -> None:
        for listener in self.listeners:
            listener.sock.close()
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


MESH_STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})


@functools.cache
def _installed_redirect_extensions() -> tuple[str, ...]:
    from meshcni_core.extensions import installed_redirect_extensions

    return tuple(installed_redirect_extensions())


def redirect_extensions() -> list[str]:
    return list(_installed_redirect_extensions())


def mesh_netconf(annotations: dict[str, str] | None = None, *, mesh: bool = True, **extra: Any) -> dict[str, Any]:
    """A chained istio-cni netconf as containerd sends it for an injected pod: the pod's
    annotations in runtimeConfig (plus ``sidecar.istio.io/status`` when ``mesh``), a prevResult,
    every installed extension that changes capture enabled. ``extra`` adds or overrides top-level keys."""
    pod_annotations = {"sidecar.istio.io/status": MESH_STATUS} if mesh else {}
    pod_annotations.update(annotations or {})
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "istio-cni",
        "extensions": redirect_extensions(),
        "kubernetes": {"exclude_namespaces": ["istio-system"]},
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": pod_annotations},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "192.0.2.2/24", "interface": 0}],
        },
    }
    conf.update(extra)
    return conf


def cni(command: str, netns_path: str, netconf: dict[str, Any], pod: str = "app-1", namespace: str = "default",
        container_id: str = "c0ffee", uid: str = "", plugin: str = PLUGIN) -> subprocess.CompletedProcess[str]:
    """Run the installed ``istio-cni`` executable (or another CNI plugin) as a runtime would."""
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"K8S_POD_INFRA_CONTAINER_ID={container_id};IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};"
        f"K8S_POD_NAME={pod};K8S_POD_UID={uid or f'uid-{namespace}-{pod}'}",
    }
    return subprocess.run([plugin], input=json.dumps(netconf), env=env, capture_output=True, text=True, timeout=60)
