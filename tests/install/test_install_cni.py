"""`meshcni install-cni` running: readiness, healing, STATUS, SIGTERM, uninstall."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ISTIO_TEST_TEMPLATE

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
PLUGIN = str(Path(sys.executable).with_name("istio-cni"))
PRIMARY = {"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}


def env_for(host) -> dict[str, str]:
    s = host.settings
    return {
        **os.environ, "MOUNTED_CNI_NET_DIR": s.mounted_cni_net_dir, "MOUNTED_CNI_BIN_DIR": s.mounted_cni_bin_dir,
        "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": s.plugin_source_dir,
        "SERVICE_ACCOUNT_DIR": s.service_account_dir, "KUBERNETES_SERVICE_HOST": "10.110.0.1",
        "KUBERNETES_SERVICE_PORT": "443", "CNI_NETWORK_CONFIG": ISTIO_TEST_TEMPLATE,
    }


class Running:
    def __init__(self, host, address: str | None = "127.0.0.1", **extra_env: str):
        """``address`` None: install-cni's default monitoring address."""
        self.host = host
        self.socket = str(host.root / "run" / "cni.sock")
        self.address = address or extra_env.get("POD_IP", "127.0.0.1")
        self.proc = subprocess.Popen(
            [MESHCNI, "install-cni", "--socket", self.socket, *(["--monitoring-address", address] if address else []),
             "--monitoring-port", "0", "--log-level", "debug"],
            env={**env_for(host), **extra_env}, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stderr.readline()
        while "monitoring on " not in line:
            assert line, "install-cni exited"
            line = self.proc.stderr.readline()
        self.port = int(line.rsplit(" ", 1)[1])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, ready: bool = True, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.get("/readyz")
            if (code == 200) == ready:
                return json.loads(body)
            assert time.monotonic() < deadline, body
            time.sleep(0.02)

    def wait_problem(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.get("/readyz")
            if code == 503 and any(text in p for p in json.loads(body)["problems"]):
                return
            assert time.monotonic() < deadline, body
            time.sleep(0.02)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@pytest.fixture
def running(host):
    agent = Running(host)
    try:
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def ours_last(path: Path) -> bool:
    try:
        plugins = json.loads(path.read_text())["plugins"]
    except (ValueError, FileNotFoundError):
        return False
    return plugins[-1]["type"] == "istio-cni"


def write_like_a_primary(path: Path, doc: dict) -> None:
    temp = path.with_name(f".{path.name}.primary")
    temp.write_text(json.dumps(doc))
    os.rename(temp, path)


def status_call(host, socket: str) -> subprocess.CompletedProcess[str]:
    conf = {"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "istio-cni", "require_agent": True,
            "agent_socket": socket}
    env = {**os.environ, "CNI_COMMAND": "STATUS", "CNI_PATH": str(host.bin_dir)}
    return subprocess.run([PLUGIN], input=json.dumps(conf), env=env, capture_output=True, text=True, timeout=30)


def test_waits_for_the_primary_then_chains_heals_and_stays_on_sigterm(host, running):
    running.wait_problem("waiting for the primary CNI")
    assert json.loads(status_call(host, running.socket).stdout)["code"] == 50  # node not ready: no new pods
    conflist = host.conf_dir / "10-ptp.conflist"
    write_like_a_primary(conflist, PRIMARY)
    running.wait_ready(True)
    assert ours_last(conflist) and (host.bin_dir / "istio-cni").exists()
    assert oct((host.conf_dir / "ZZZ-istio-cni-kubeconfig").stat().st_mode & 0o777) == "0o600"
    assert status_call(host, running.socket).returncode == 0
    # the primary CNI rewrites its file without us: healed
    heal_times = []
    for _ in range(4):  # fewer than an edit war (5 rewrites in 30 s)
        started = time.monotonic()
        write_like_a_primary(conflist, PRIMARY)
        while not ours_last(conflist):
            assert time.monotonic() - started < 5, "not healed"
            time.sleep(0.001)
        heal_times.append(time.monotonic() - started)
        time.sleep(0.5)  # slower than an edit war
    assert max(heal_times) < 1.0, heal_times
    status, metrics = running.get("/metrics")
    assert status == 200
    assert "meshcni_install_config_repairs_total 4.0" in metrics and "meshcni_ready 1.0" in metrics
    # SIGTERM (rolling update): the entry, the binary and the kubeconfig stay
    assert running.stop() == 0
    assert ours_last(conflist) and (host.bin_dir / "istio-cni").exists()
    assert (host.conf_dir / "ZZZ-istio-cni-kubeconfig").exists()
    assert json.loads(status_call(host, running.socket).stdout)["code"] == 50  # agent gone: not ready


def test_lost_binary_kubeconfig_and_rotated_token_are_restored(host, running):
    write_like_a_primary(host.conf_dir / "10-ptp.conflist", PRIMARY)
    running.wait_ready(True)
    (host.bin_dir / "istio-cni").unlink()
    (host.conf_dir / "ZZZ-istio-cni-kubeconfig").unlink()
    deadline = time.monotonic() + 5
    while not ((host.bin_dir / "istio-cni").exists() and (host.conf_dir / "ZZZ-istio-cni-kubeconfig").exists()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    token = Path(host.settings.token_file)
    token.write_text("rotated-456\n")
    deadline = time.monotonic() + 5
    while "rotated-456" not in (host.conf_dir / "ZZZ-istio-cni-kubeconfig").read_text():
        assert time.monotonic() < deadline, "kubeconfig not rewritten after the token changed"
        time.sleep(0.01)


def test_edit_war_is_detected_and_reported(host, running):
    conflist = host.conf_dir / "10-ptp.conflist"
    write_like_a_primary(conflist, PRIMARY)
    running.wait_ready(True)
    for _ in range(12):  # another agent insisting on its version
        write_like_a_primary(conflist, PRIMARY)
        time.sleep(0.05)
    running.wait_problem("edit war")
    assert "meshcni_install_edit_wars_total 1.0" in running.get("/metrics")[1]


def test_uninstall_restores_the_node(host, running):
    write_like_a_primary(host.conf_dir / "10-ptp.conflist", PRIMARY)
    running.wait_ready(True)
    running.stop()
    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(host.root / "run" / "cni.sock")], env=env_for(host), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text()) == PRIMARY
    assert sorted(os.listdir(host.conf_dir)) == ["10-ptp.conflist"] and os.listdir(host.bin_dir) == []


def test_bad_setting_is_a_clear_error(host):
    proc = subprocess.run([MESHCNI, "install-cni", "--once"], env={**env_for(host), "CHAINED_CNI_PLUGIN": "ture"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "CHAINED_CNI_PLUGIN: expected true or false, got 'ture'" in proc.stderr
