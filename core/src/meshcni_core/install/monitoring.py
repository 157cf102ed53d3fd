"""``/healthz``, ``/readyz`` and ``/metrics`` for the node agent.

Served on the address kubelet probes (the node's IP under hostNetwork, reachable from pods too),
so a connection gets a thread only while there is one free (``MAX_CONNECTIONS``, at most
``MAX_PER_SOURCE`` per client address) and must send its request within ``READ_TIMEOUT``; beyond
those limits it is closed at once.

Ready only while the plugin binary, our conf entry and the kubeconfig are all in place (the
installer's last reconcile found no problem). Metrics: the installer's counters, and - for the
requests the agent served - counts by command, failures by CNI error code and an ADD latency
histogram.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meshcni_core.install.installer import Installer

ADD_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Metric label values come from a client's request: only these are kept as they are.
COMMANDS = frozenset({"ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"})
MAX_CONNECTIONS = 32
MAX_PER_SOURCE = 4
READ_TIMEOUT = 5.0


class RequestMetrics:
    """What the agent records about the CNI requests it served."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("meshcni_cni_requests", "CNI requests served by the agent", ["command"],
                                registry=registry)
        self.failures = Counter("meshcni_cni_failures", "failed CNI requests, by CNI error code",
                                ["command", "code"], registry=registry)
        self.add_seconds = Histogram("meshcni_cni_add_seconds", "time the agent spent on one ADD",
                                     buckets=ADD_BUCKETS, registry=registry)

    def record(self, command: str, exit_code: int, stdout: str, seconds: float) -> None:
        command = command if command in COMMANDS else "other"
        self.requests.labels(command).inc()
        if command == "ADD":
            self.add_seconds.observe(seconds)
        if exit_code != 0:
            self.failures.labels(command, _error_code(stdout)).inc()


def _error_code(stdout: str) -> str:
    """The CNI error code of an error object, as a bounded label: 1-999 or "unknown"."""
    try:
        code = json.loads(stdout).get("code")
    except (ValueError, AttributeError):
        return "unknown"
    return str(code) if isinstance(code, int) and 0 < code < 1000 else "unknown"


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but only ``MAX_CONNECTIONS`` of them, ``MAX_PER_SOURCE`` per
    client address; a connection beyond either is closed unread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self._slots = threading.Lock()
        self._per_source: Tally[str] = Tally()

    def process_request(self, request: Any, client_address: Any) -> None:
        source = client_address[0] if isinstance(client_address, tuple) else ""
        with self._slots:
            full = self._per_source.total() >= MAX_CONNECTIONS or self._per_source[source] >= MAX_PER_SOURCE
            if not full:
                self._per_source[source] += 1
        if full:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0] if isinstance(client_address, tuple) else "")

    def _release(self, source: str) -> None:
        with self._slots:
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]


class InstallerCollector(Collector):
    def __init__(self, installer: Installer):
        self.installer = installer

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.installer.counters
        for name, value, text in (
            ("meshcni_install_config_writes", c.installs, "our entry written into a conf file"),
            ("meshcni_install_config_repairs", c.config_repairs, "our entry re-written after someone changed it"),
            ("meshcni_install_binary_copies", c.binary_copies, "plugin binaries copied to the host"),
            ("meshcni_install_kubeconfig_writes", c.kubeconfig_writes, "kubeconfig (re)written"),
            ("meshcni_install_edit_wars", c.edit_wars, "times another agent kept undoing our entry"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily("meshcni_ready", "1 while binary, conf entry and kubeconfig are in place",
                                value=1.0 if self.installer.status.ready else 0.0)
        yield GaugeMetricFamily("meshcni_edit_war", "1 while backing off from an edit war",
                                value=1.0 if self.installer.edit_war else 0.0)


def serve(installer: Installer, registry: CollectorRegistry, address: str, port: int,
          extra_problems: Callable[[], list[str]] = list) -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` to stop)."""
    registry.register(InstallerCollector(installer))

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT  # each read of the request; HTTP/1.0: one request per connection

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            elif self.path == "/readyz":
                problems = installer.status.problems + extra_problems()
                body = json.dumps({"ready": not problems, "problems": problems}).encode() + b"\n"
                self._send(503 if problems else 200, "application/json", body)
            elif self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", generate_latest(registry))
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = BoundedHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="meshcni-monitoring").start()
    return server
