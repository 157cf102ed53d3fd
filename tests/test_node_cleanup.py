"""The clean-up DaemonSet's containers on a node: issue 9 item 13 (the node it leaves clean).

Its init container, as rendered (command and environment), runs against a host layout where
install-cni installed the plugin: it waits while an agent still serves the socket, then
uninstalls; its idle container exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

from meshcni_core.manifest.node_cleanup import uninstall_daemon_set
from meshcni_core.manifest.values import resolve
from meshcni_testing.hostlayout import PRIMARY, make_host
from meshcni_testing.processes import MESHCNI

REMOVAL = ["components.cni.enabled=false"]


def rendered_pod_spec() -> dict:
    return uninstall_daemon_set(resolve(sets=REMOVAL))["spec"]["template"]["spec"]


def test_the_init_container_waits_for_the_agent_then_uninstalls(tmp_path):
    host = tmp_path / "host"
    env = make_host(host)
    installed = subprocess.run([MESHCNI, "install-cni", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    assert os.listdir(host / "bin") == ["istio-cni"]

    init = rendered_pod_spec()["initContainers"][0]
    socket_path = str(tmp_path / "cni.sock")
    command = [MESHCNI if word == "meshcni" else word for word in init["command"]]
    command[command.index("--wait-for-agent") + 1] = socket_path  # the node's socket, in this layout
    node_env = {**{v["name"]: v["value"] for v in init["env"]}, "CNI_NET_DIR": str(host / "net.d")}
    cleanup_env = {k: v for k, v in env.items() if k != "CNI_NETWORK_CONFIG"} | node_env  # no template needed
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(socket_path)
    agent.listen(8)
    proc = subprocess.Popen(command, env=cleanup_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert proc.poll() is None  # install-cni still serves the node: nothing is removed under it
        assert os.listdir(host / "bin") == ["istio-cni"]
        agent.close()  # install-cni exited (it removes its socket; a leftover file is refused connections too)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "waiting for the agent serving" in err
    assert json.loads((host / "net.d" / "10-ptp.conflist").read_text()) == PRIMARY
    assert sorted(os.listdir(host / "net.d")) == ["10-ptp.conflist"] and os.listdir(host / "bin") == []


def test_the_idle_container_stops_on_sigterm():
    idle = rendered_pod_spec()["containers"][0]
    proc = subprocess.Popen([MESHCNI if word == "meshcni" else word for word in idle["command"]])
    try:
        time.sleep(1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
