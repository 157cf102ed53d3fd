"""``/healthz``, ``/readyz`` and ``/metrics`` for the node agent.

Served on the address kubelet probes (the node's IP under hostNetwork, which pods can reach too),
with bounded connections and a read deadline (install/bounded_http.py).

Ready only while the plugin binary, our conf entry and the kubeconfig are all in place (the
installer's last reconcile found no problem). Metrics: the installer's counters, and - for the
requests the agent served - counts by command, failures by CNI error code and an ADD latency
histogram.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meshcni_core.install.bounded_http import BoundedHTTPServer, DeadlineHandler
from meshcni_core.install.installer import Installer

ADD_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Metric label values come from a client's request: only these are kept as they are.
COMMANDS = frozenset({"ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"})
SERVED_BY = frozenset({"agent", "plugin"})
READ_TIMEOUT = 5.0  # seconds, for each read and for the whole request


class RequestMetrics:
    """Every istio-cni run's record (cni/outcome.py): those the agent served as they finish, those a
    plugin served in-process when the agent replays the spool (agent/plugin_log.py)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "meshcni_cni_requests", "istio-cni runs, by command, result, CNI error code and who served them",
            ["command", "result", "code", "served_by"], registry=registry)
        self.add_seconds = Histogram(
            "meshcni_cni_add_seconds", "ADD duration from the plugin process's start to its answer",
            ["served_by"], buckets=ADD_BUCKETS, registry=registry)

    def observe(self, record: Mapping[str, Any]) -> None:
        command = record.get("command") if record.get("command") in COMMANDS else "other"
        served_by = record.get("served_by") if record.get("served_by") in SERVED_BY else "other"
        code = record.get("code")
        self.requests.labels(command, result_of(record),
                             str(code) if isinstance(code, int) and 0 < code < 1000 else "",
                             served_by).inc()
        duration = record.get("duration_ms")
        if command == "ADD" and isinstance(duration, int | float) and 0 <= duration < 3_600_000:
            self.add_seconds.labels(served_by).observe(duration / 1000)


def result_of(record: Mapping[str, Any]) -> str:
    """failed, redirected, passed_through (an ADD that programmed nothing) or ok."""
    if record.get("verdict") == "failed":
        return "failed"
    if record.get("command") == "ADD":
        return "redirected" if record.get("redirected") is True else "passed_through"
    return "ok"


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
        by_file = CounterMetricFamily("meshcni_install_edit_war_files", "edit wars by the conf file that kept "
                                      "changing and the component its name names", labels=["file", "component"])
        for (file, component), wars in sorted(c.edit_wars_by_file.items()):
            by_file.add_metric([file, component], wars)
        yield by_file
        ready = 1.0 if self.installer.status.ready else 0.0
        yield GaugeMetricFamily("meshcni_ready", "1 while binary, conf entry and kubeconfig are in place", value=ready)
        yield GaugeMetricFamily("istio_cni_install_ready", "Whether the CNI plugin installation is ready or not",
                                value=ready)
        installs = CounterMetricFamily("istio_cni_installs", "installs (and re-installs) by result, as Istio's "
                                       "install-cni counts them", labels=["result"])
        for result, count in sorted(c.install_results.items()):
            installs.add_metric([result], count)
        yield installs
        yield GaugeMetricFamily("meshcni_edit_war", "1 while backing off from an edit war",
                                value=1.0 if self.installer.edit_war else 0.0)


def serve(installer: Installer, registry: CollectorRegistry, address: str, port: int,
          extra_problems: Callable[[], list[str]] = list) -> BoundedHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (``shutdown()`` to stop)."""
    registry.register(InstallerCollector(installer))

    class Handler(DeadlineHandler):
        timeout = READ_TIMEOUT  # each read; HTTP/1.0: one request per connection

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

    server = BoundedHTTPServer((address, port), Handler, read_deadline=READ_TIMEOUT)
    threading.Thread(target=server.serve_forever, daemon=True, name="meshcni-monitoring").start()
    return server
