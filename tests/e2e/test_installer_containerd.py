"""install-cni and containerd's CRI plugin on one node: the runtime picks up every write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from containerd_node import ContainerdNode

from meshcni_testing.netlab import MESH_STATUS, PLUGIN

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
MESHCNI = str(Path(sys.executable).with_name("meshcni"))
TEMPLATE = json.dumps({
    "type": "istio-cni", "log_level": "debug", "extensions": ["tproxy", "kubevirt"],
    "capabilities": {"io.kubernetes.cri.pod-annotations": True},
    "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "exclude_namespaces": ["istio-system"]},
})


def rules_in(netns_path: str) -> str:
    out = subprocess.run(["nsenter", f"--net={netns_path}", "iptables-save"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line.startswith("-A"))


def primary_writes(path: Path, doc: dict) -> None:
    """As a primary CNI agent does: temp file in the same folder, then rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(doc, indent=2))
    os.rename(temp, path)


def installer_env(node, tmp_path: Path, **extra: str) -> dict[str, str]:
    """install-cni's environment on this node, its plugin source and service account in ``tmp_path``."""
    source, sa = tmp_path / "plugin", tmp_path / "sa"
    source.mkdir()
    sa.mkdir()
    (source / "istio-cni").write_bytes(Path(PLUGIN).read_bytes())
    (sa / "token").write_text("t0k3n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    os.unlink(Path(node.bin_dir) / "istio-cni")  # the installer puts the plugin there
    return {**os.environ, "CNI_NET_DIR": node.conf_dir, "MOUNTED_CNI_NET_DIR": node.conf_dir,
            "MOUNTED_CNI_BIN_DIR": node.bin_dir, "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source),
            "SERVICE_ACCOUNT_DIR": str(sa), "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
            "CNI_NETWORK_CONFIG": TEMPLATE, **extra}


def start_installer(env: dict[str, str], tmp_path: Path, runtime: ContainerdNode) -> subprocess.Popen[bytes]:
    return subprocess.Popen([MESHCNI, "install-cni", "--socket", str(tmp_path / "run" / "cni.sock"),
                             "--monitoring-port", "0", "--monitoring-address", "127.0.0.1",
                             "--netns-dir", runtime.netns_dir], env=env, stderr=subprocess.DEVNULL)


def test_installer_under_containerd(node, tmp_path):
    conflist = Path(node.conf_dir) / "10-e2e.conflist"
    primary = node.primary_conflist()
    primary_writes(conflist, primary)
    env = installer_env(node, tmp_path)
    work = tmp_path / "containerd"
    work.mkdir()
    runtime = ContainerdNode(work, node.netns, node.bin_dir, node.conf_dir)
    installer = None
    try:
        runtime.start()
        before = runtime.run_pod("early", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert rules_in(runtime.netns_of(before)) == ""  # no istio-cni in the chain yet
        installer = start_installer(env, tmp_path, runtime)
        wait_for(lambda: json.loads(conflist.read_text())["plugins"][-1]["type"] == "istio-cni")
        time.sleep(0.5)  # containerd reloads asynchronously on the rename event
        first = runtime.run_pod("app-1", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert runtime.netns_of(first).startswith(runtime.netns_dir + "/")
        assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime.netns_of(first))
        # the primary CNI rewrites its configuration without us; the installer puts us back
        primary_writes(conflist, primary)
        wait_for(lambda: json.loads(conflist.read_text())["plugins"][-1]["type"] == "istio-cni")
        time.sleep(0.5)
        second = runtime.run_pod("app-2", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime.netns_of(second))
        # uninstall: the next pod starts fine without us, and the earlier ones still tear down
        installer.send_signal(signal.SIGTERM)
        installer.wait(timeout=15)
        subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(tmp_path / "run" / "cni.sock")], env=env, check=True, capture_output=True, timeout=30)
        assert json.loads(conflist.read_text()) == primary
        time.sleep(0.5)
        third = runtime.run_pod("app-3", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert rules_in(runtime.netns_of(third)) == ""
        runtime.stop_and_remove(third)
    finally:
        if installer is not None and installer.poll() is None:
            installer.kill()
            installer.wait()
        runtime.close()


def test_owned_conflist_under_containerd(node, tmp_path):
    """containerd loads our own 02-istio-cni.conflist before the primary's file, which stays
    byte for byte as the primary wrote it; after uninstall it loads the primary's again."""
    conflist = Path(node.conf_dir) / "10-e2e.conflist"
    owned = Path(node.conf_dir) / "02-istio-cni.conflist"
    primary = node.primary_conflist()
    primary_writes(conflist, primary)
    primary_bytes = conflist.read_bytes()
    env = installer_env(node, tmp_path, ISTIO_OWNED_CNI_CONFIG="true")
    work = tmp_path / "containerd"
    work.mkdir()
    runtime = ContainerdNode(work, node.netns, node.bin_dir, node.conf_dir)
    installer = None
    try:
        runtime.start()
        installer = start_installer(env, tmp_path, runtime)
        wait_for(lambda: json.loads(owned.read_text())["plugins"][-1]["type"] == "istio-cni")
        time.sleep(0.5)  # containerd reloads asynchronously on the rename event
        first = runtime.run_pod("owned-1", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime.netns_of(first))
        assert conflist.read_bytes() == primary_bytes
        # the primary rewrites its file with one plugin more: ours follows, and the runtime with it
        changed = {**primary, "plugins": [*primary["plugins"], {"type": "portmap", "capabilities": {"portMappings": True}}]}
        primary_writes(conflist, changed)
        wait_for(lambda: [p["type"] for p in json.loads(owned.read_text())["plugins"]][-2:] == ["portmap", "istio-cni"])
        time.sleep(0.5)
        second = runtime.run_pod("owned-2", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime.netns_of(second))
        installer.send_signal(signal.SIGTERM)
        installer.wait(timeout=15)
        subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(tmp_path / "run" / "cni.sock")], env=env, check=True, capture_output=True, timeout=30)
        assert not owned.exists() and json.loads(conflist.read_text()) == changed
        time.sleep(0.5)
        third = runtime.run_pod("owned-3", "default", {"sidecar.istio.io/status": MESH_STATUS})
        assert rules_in(runtime.netns_of(third)) == ""
        runtime.stop_and_remove(third)
    finally:
        if installer is not None and installer.poll() is None:
            installer.kill()
            installer.wait()
        runtime.close()


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (ValueError, FileNotFoundError, KeyError, IndexError):
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
