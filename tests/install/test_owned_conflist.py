"""ISTIO_OWNED_CNI_CONFIG: install-cni writes its own conf file (the primary's plugins, then ours)
under a name the runtime loads first, keeps it in step with the primary's file, never edits the
primary's file, and uninstall removes only its own. A primary that keeps rewriting is named."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time

import pytest
from test_install_cni import MESHCNI, PRIMARY, Running, env_for, write_like_a_primary

OWNED = "02-istio-cni.conflist"


class Drained(Running):
    """install-cni with its stderr read as it comes (so a chatty log never blocks it)."""

    def __init__(self, host, **extra_env: str):
        super().__init__(host, **extra_env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()

    def wait_line(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no log line with {text!r}"
            time.sleep(0.02)


@pytest.fixture
def owned(host):
    agent = Drained(host, ISTIO_OWNED_CNI_CONFIG="true")
    try:
        yield agent
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def wait_for(predicate, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def owned_plugins(host) -> list[str] | None:
    try:
        return [p["type"] for p in json.loads((host.conf_dir / OWNED).read_text())["plugins"]]
    except (FileNotFoundError, ValueError):
        return None


def test_our_own_file_follows_the_primary_which_is_never_edited_and_uninstall_removes_only_ours(host, owned):
    primary = host.conf_dir / "10-ptp.conflist"
    write_like_a_primary(primary, PRIMARY)
    primary_bytes = primary.read_bytes()
    ready = owned.wait_ready(True)
    assert ready["problems"] == []
    assert owned_plugins(host) == ["ptp", "portmap", "istio-cni"]
    doc = json.loads((host.conf_dir / OWNED).read_text())
    assert doc["name"] == PRIMARY["name"] and doc["cniVersion"] == PRIMARY["cniVersion"]  # the runtime's cache key
    assert primary.read_bytes() == primary_bytes

    changed = {**PRIMARY, "plugins": [*PRIMARY["plugins"], {"type": "bandwidth"}]}
    write_like_a_primary(primary, changed)
    wait_for(lambda: owned_plugins(host) == ["ptp", "portmap", "bandwidth", "istio-cni"])
    assert json.loads(primary.read_text()) == changed

    (host.conf_dir / OWNED).unlink()  # someone removes ours: back at once
    wait_for(lambda: owned_plugins(host) == ["ptp", "portmap", "bandwidth", "istio-cni"])

    assert owned.stop() == 0
    assert owned_plugins(host) is not None  # SIGTERM is not uninstall
    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(host.root / "run" / "cni.sock")], env=env_for(host), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(host.conf_dir)) == ["10-ptp.conflist"]
    assert json.loads(primary.read_text()) == changed


def test_a_name_that_would_not_be_loaded_first_is_refused(host):
    write_like_a_primary(host.conf_dir / "01-early.conflist", PRIMARY)
    proc = subprocess.run([MESHCNI, "install-cni", "--once"], env={**env_for(host), "ISTIO_OWNED_CNI_CONFIG": "true"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "does not sort before the primary's 01-early.conflist" in proc.stdout
    assert sorted(os.listdir(host.conf_dir)) == ["01-early.conflist", "ZZZ-istio-cni-kubeconfig"]


WRITER = """#!/bin/sh
# A primary agent that holds its lock file in the conf dir and keeps rewriting its list.
exec 3>"$1/.lock"
i=0
while [ $i -lt 40 ]; do
  printf '{"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp", "generation": %d}]}' $i > "$1/.10-calico.tmp"
  mv "$1/.10-calico.tmp" "$1/10-calico.conflist"
  i=$((i+1))
  sleep 0.1
done
"""


def test_an_edit_war_names_the_file_its_component_and_the_writer(host, owned, tmp_path):
    write_like_a_primary(host.conf_dir / "10-calico.conflist", PRIMARY)
    owned.wait_ready(True)
    writer = tmp_path / "calico-node"  # its process name, as /proc/<pid>/comm shows it
    writer.write_text(WRITER)
    writer.chmod(writer.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.Popen([str(writer), str(host.conf_dir)])
    try:
        owned.wait_problem("edit war over 02-istio-cni.conflist")
        line = owned.wait_line("edit war: ")
        assert "10-calico.conflist changed 5 times in 30s (component: calico" in line
        assert f"writer seen: pid {proc.pid} (calico-node)" in line
        metrics = owned.get("/metrics")[1]
        assert 'meshcni_install_edit_war_files_total{component="calico",file="10-calico.conflist"} 1.0' in metrics
    finally:
        proc.kill()
        proc.wait()
