"""``meshcni install-cni`` as a DaemonSet's container runs it, for the operator-facing tests:
its stderr collected line by line (what ``kubectl logs`` shows), its monitoring port known."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
# The entry install-cni writes: the runtime's annotations decide eligibility, no API server needed.
TEMPLATE = {"type": "istio-cni", "log_level": "__LOG_LEVEL__", "extensions": ["tproxy", "kubevirt"],
            "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "exclude_namespaces": ["istio-system"]}}
PRIMARY = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}]}


class InstallCni:
    def __init__(self, host, socket_path: str, log_level: str = "info"):
        """``log_level`` is the plugin's (LOG_LEVEL, the entry's log_level)."""
        s = host.settings
        env = {**os.environ, "MOUNTED_CNI_NET_DIR": s.mounted_cni_net_dir, "CNI_NET_DIR": s.mounted_cni_net_dir,
               "MOUNTED_CNI_BIN_DIR": s.mounted_cni_bin_dir, "SECONDARY_BIN_DIR": "",
               "MESHCNI_PLUGIN_SOURCE_DIR": s.plugin_source_dir, "SERVICE_ACCOUNT_DIR": s.service_account_dir,
               "KUBERNETES_SERVICE_HOST": "10.110.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "CNI_NETWORK_CONFIG": json.dumps({**TEMPLATE, "agent_socket": socket_path}), "LOG_LEVEL": log_level}
        self.socket = socket_path
        self.lines: list[str] = []
        self.proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", socket_path, "--monitoring-port", "0",
                                      "--monitoring-address", "127.0.0.1"],
                                     env=env, stderr=subprocess.PIPE, text=True)
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda: self.port and os.path.exists(socket_path), "install-cni did not start serving")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("monitoring on "):
                self.port = int(line.rsplit(" ", 1)[1])

    def wait_for(self, condition, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, "install-cni exited:\n" + "\n".join(self.lines[-20:])
            assert time.monotonic() < deadline, what + ":\n" + "\n".join(self.lines[-20:])
            time.sleep(0.05)

    def records(self) -> list[dict]:
        """The plugin lines of its log, parsed: ``istio-cni {...}``."""
        out = []
        for line in list(self.lines):
            _, marker, payload = line.partition(" istio-cni {")
            if marker:
                out.append(json.loads("{" + payload))
        return out

    def record_of(self, pod: str, timeout: float = 10) -> dict:
        found: list[dict] = []
        self.wait_for(lambda: found.extend(r for r in self.records() if r["pod"] == pod) or found,
                      f"no log line for {pod}", timeout)
        return found[-1]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
