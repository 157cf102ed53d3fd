"""A DaemonSet rollout never drops a pod: while one install-cni is replaced by the next, pods keep
being added (fresh netns each) and deleted through the plugin the runtime finds in the bin dir."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from node_agent import PRIMARY, InstallCni

from meshcni_testing.netlab import PLUGIN, cni, mesh_netconf

pytestmark = pytest.mark.netns


def plugin_version(source: Path, version: str) -> bytes:
    """What the image ships as the plugin: a new version has other bytes."""
    script = f"#!/bin/sh\n# meshcni plugin {version}\nexec {PLUGIN} \"$@\"\n".encode()
    (source / "istio-cni").write_bytes(script)
    (source / "istio-cni").chmod(0o755)
    return script


class Runtime:
    """Adds pods one after another, as kubelet starting pods would, with the entry the runtime reads
    from the conf dir and the plugin binary from the bin dir; keeps the first ``keep`` pods and
    deletes every later one two pods after its ADD."""

    def __init__(self, host, lab, keep: int = 3):
        self.host, self.lab, self.keep = host, lab, keep
        self.failures: list[str] = []
        self.kept: list[tuple[str, str]] = []  # (pod, netns): the first pods, deleted by the test
        self.recent: list[tuple[str, str]] = []
        self.adds = self.deletes = 0
        self.stop = threading.Event()

    def entry(self) -> dict:
        conflist = json.loads((self.host.conf_dir / "10-ptp.conflist").read_text())
        entry = conflist["plugins"][-1]
        assert entry["type"] == "istio-cni", "our entry is gone from the conf file"
        return {**mesh_netconf(), **entry, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}

    def run_plugin(self, command: str, ns: str, pod: str):
        return cni(command, ns, self.entry(), pod=pod, container_id=f"ctr-{pod}",
                   plugin=str(self.host.bin_dir / "istio-cni"))

    def loop(self) -> None:
        while not self.stop.is_set():
            pod = f"roll-{self.adds}"
            ns = self.lab.netns(pod)
            try:
                result = self.run_plugin("ADD", ns, pod)
                if result.returncode != 0 or "ISTIO_OUTPUT" not in self.lab.save(ns):
                    self.failures.append(f"ADD {pod}: {result.returncode} {result.stdout} {result.stderr[-500:]}")
                (self.kept if len(self.kept) < self.keep else self.recent).append((pod, ns))
                if len(self.recent) > 2:
                    old_pod, old_ns = self.recent.pop(0)
                    result = self.run_plugin("DEL", old_ns, old_pod)
                    if result.returncode != 0 or self.lab.save(old_ns) != "":
                        self.failures.append(f"DEL {old_pod}: {result.returncode} {result.stdout}")
                    self.deletes += 1
            except Exception as exc:  # noqa: BLE001 - recorded, the test fails on it
                self.failures.append(f"{pod}: {type(exc).__name__}: {exc}")
            self.adds += 1


def test_an_install_cni_replaced_by_the_next_drops_no_pod(host, netns_lab):
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(PRIMARY))
    source, plugin = Path(host.settings.plugin_source_dir), host.bin_dir / "istio-cni"
    v1 = plugin_version(source, "v1")
    socket = str(host.root / "run" / "cni.sock")
    old = InstallCni(host, socket)
    new = None
    runtime = Runtime(host, netns_lab)
    seen_binaries: set[bytes] = set()
    watching = threading.Event()

    def watch_binary() -> None:  # what an exec of the plugin would find, as often as it can look
        while not watching.is_set():
            try:
                seen_binaries.add(plugin.read_bytes())
            except OSError as exc:
                seen_binaries.add(f"unreadable: {exc}".encode())

    try:
        old.wait_for(lambda: plugin.exists() and "istio-cni" in (host.conf_dir / "10-ptp.conflist").read_text(),
                     "install-cni did not install the plugin")
        adder = threading.Thread(target=runtime.loop)
        watcher = threading.Thread(target=watch_binary)
        adder.start()
        watcher.start()
        old.wait_for(lambda: runtime.adds >= 5, "no pods added by the first install-cni", timeout=60)

        v2 = plugin_version(source, "v2")  # the new image
        old.stop()  # the rollout: SIGTERM to the old pod ...
        assert old.proc.returncode == 0
        assert plugin.read_bytes() == v1, "SIGTERM is not uninstall: the plugin stays"
        assert "istio-cni" in (host.conf_dir / "10-ptp.conflist").read_text(), "and its conf entry"
        assert (host.conf_dir / "ZZZ-istio-cni-kubeconfig").exists(), "and its kubeconfig"
        gap_started = runtime.adds
        deadline = time.monotonic() + 60
        while runtime.adds < gap_started + 2:  # ... pods keep starting while none runs ...
            assert time.monotonic() < deadline and adder.is_alive()
            time.sleep(0.05)
        new = InstallCni(host, socket)  # ... then the new pod starts
        new.wait_for(lambda: plugin.read_bytes() == v2, "the new install-cni did not replace the plugin")
        served_by_new = runtime.adds
        new.wait_for(lambda: runtime.adds >= served_by_new + 3, "no pods added after the new install-cni",
                     timeout=60)
    finally:
        runtime.stop.set()
        watching.set()
        adder.join(timeout=120)
        watcher.join(timeout=10)
        if new is None:
            old.stop()

    try:
        assert runtime.failures == [], runtime.failures
        assert seen_binaries == {v1, v2}, "the bin dir only ever held a whole v1 or a whole v2"
        present = runtime.kept + runtime.recent
        assert all("ISTIO_OUTPUT" in netns_lab.save(ns) for _, ns in present), "a pod left without rules"
        for pod, ns in runtime.kept:  # created under the previous version, deleted under the new one
            result = runtime.run_plugin("DEL", ns, pod)
            assert result.returncode == 0 and netns_lab.save(ns) == "", result.stdout
        assert runtime.deletes >= 3
        records = new.records()
        gap = [r for r in records if r["served_by"] == "plugin" and r["command"] == "ADD"]
        assert gap and all(r["verdict"].startswith("redirected: ") for r in gap), "the gap's ADDs were served in-process"
        assert any(r["served_by"] == "agent" and r["command"] == "ADD" for r in records)
        assert os.path.exists(socket)
    finally:
        new.stop()
