"""install-cni's /healthz, /readyz and /metrics: bound to the probe address, idle connections
hold no thread for long and cannot starve the probes."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

import pytest
from test_install_cni import Running


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("pod_ip", ["127.0.0.2", None], ids=["POD_IP", "no-POD_IP"])
def test_served_only_on_the_probe_address(host, pod_ip):
    """The DaemonSet sets POD_IP (the node's IP under hostNetwork), which kubelet probes;
    without it, loopback only - never every address of the node."""
    served = Running(host, address=None, **({"POD_IP": pod_ip} if pod_ip else {}))
    try:
        assert served.get("/healthz")[0] == 200 and served.address == (pod_ip or "127.0.0.1")
        assert not connects("127.0.0.3", served.port)
    finally:
        served.proc.kill()
        served.proc.wait()


def probe(port: int, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2, source_address=(source, 0))
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def running(host):
    served = Running(host)
    try:
        yield served
    finally:
        served.proc.kill()
        served.proc.wait()


def test_200_idle_connections_neither_hold_threads_nor_starve_the_probe(running):
    """Pods on 50 addresses open 4 idle connections each; kubelet probes from the node's own."""
    assert running.get("/healthz")[0] == 200
    before = threads_of(running.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", running.port), timeout=30, source_address=(f"127.0.1.{i % 50 + 1}", 0))
            for i in range(200)]
    try:
        time.sleep(1)
        assert threads_of(running.proc.pid) <= before + 33, (before, threads_of(running.proc.pid))
        started = time.monotonic()
        assert probe(running.port, "127.0.0.1") == 200  # kubelet: from the bound address
        assert time.monotonic() - started < 2
        # idle connections are closed after the read deadline (5 s), unanswered
        for s in (idle[0], idle[-1]):
            s.settimeout(10)
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()


def test_a_request_dripping_in_is_cut_off_at_the_deadline(running):
    """One byte every 2 s never trips a per-read timeout; the whole request has 5 s."""
    s = socket.create_connection(("127.0.0.1", running.port), timeout=10, source_address=("127.0.0.5", 0))
    started = time.monotonic()
    try:
        for byte in b"GET /healthz HTTP/1.0\r\n":
            s.sendall(bytes([byte]))
            time.sleep(2)
            if time.monotonic() - started > 15:
                break
    except OSError:
        pass  # shut down by the server while we were still sending
    finally:
        s.close()
    assert time.monotonic() - started < 9


def test_metric_labels_stay_bounded_whatever_clients_send(running):
    """A client's CNI_COMMAND must not become a new time series per value."""
    deadline = time.monotonic() + 10
    while not os.path.exists(running.socket):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for i in range(50):
        request = json.dumps({"env": {"CNI_COMMAND": f"BOGUS{i}"}, "stdin": "{}"}).encode()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(running.socket)
            s.sendall(len(request).to_bytes(4, "big") + request)
            assert s.recv(4)  # answered (an error object)
    metrics = running.get("/metrics")[1]
    assert "BOGUS" not in metrics
    assert 'meshcni_cni_requests_total{code="4",command="other",result="failed",served_by="agent"} 50.0' in metrics
