"""The node agent serves istio-cni's requests; the plugin falls back to in-process work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshcni_testing.netlab import PLUGIN, mesh_netconf
from meshcni_testing.processes import wait_until_listening

pytestmark = pytest.mark.netns
MESHCNI = str(Path(sys.executable).with_name("meshcni"))


def netconf(socket_path: str) -> dict:
    return mesh_netconf(agent_socket=socket_path)


def run_plugin(command: str, ns: str, conf: dict, path: str | None = None, pod: str = "app-1",
               prefix: tuple[str, ...] = ()):
    env = {
        **os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": f"c-{pod}", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
    }
    if path is not None:
        env["PATH"] = path
    return subprocess.run([*prefix, PLUGIN], input=json.dumps(conf), env=env, capture_output=True, text=True,
                          timeout=60)


def agent_config(tmp_path: Path, sock: str) -> str:
    """The agent's own configuration: the same istio-cni entry the plugin's netconf holds."""
    path = tmp_path / "agent-netconf.json"
    path.write_text(json.dumps(netconf(sock)))
    return str(path)


def start_agent(sock: str, config: str, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([MESHCNI, "agent", "--socket", sock, "--config", config, "--log-level", "debug", *extra],
                            stderr=subprocess.PIPE, text=True)
    wait_until_listening(proc, sock, output=lambda: proc.stderr.read() if proc.poll() is not None else "")
    return proc


@pytest.fixture
def agent(tmp_path):
    sock = str(tmp_path / "run" / "cni.sock")
    proc = start_agent(sock, agent_config(tmp_path, sock))
    try:
        yield sock, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def lab(netns_lab):
    return netns_lab


def test_requests_are_served_by_the_agent(agent, lab):
    sock, _proc = agent
    ns = lab.netns("pod")
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    # Without iptables on the plugin's PATH only the agent can program the rules.
    result = run_plugin("ADD", ns, netconf(sock), path="/nonexistent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in lab.save(ns)
    assert run_plugin("CHECK", ns, netconf(sock), path="/nonexistent").returncode == 0
    assert run_plugin("DEL", ns, netconf(sock), path="/nonexistent").returncode == 0
    assert lab.save(ns) == ""


def test_agent_errors_reach_the_runtime(agent, lab):
    sock, _ = agent
    ns = lab.netns("pod")
    conf = netconf(sock)
    conf["runtimeConfig"]["io.kubernetes.cri.pod-annotations"]["traffic.sidecar.istio.io/includeInboundPorts"] = "http"
    result = run_plugin("ADD", ns, conf)
    assert result.returncode == 1 and json.loads(result.stdout)["code"] == 103


def test_the_agents_configuration_decides_which_pods_pass_through(agent, lab):
    """Pass-through is decided in one place, the agent, with its own configuration: a plugin
    whose netconf (stale, or edited on the node) excludes the pod's namespace does not let the
    pod start unredirected."""
    sock, _ = agent
    ns = lab.netns("pod")
    stale = {**netconf(sock), "kubernetes": {"exclude_namespaces": ["istio-system", "default"]}}
    result = run_plugin("ADD", ns, stale, path="/nonexistent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in lab.save(ns)


def test_a_pod_the_agent_passes_through_never_has_its_netns_opened(agent, tmp_path):
    """Not injected (runtime annotations without sidecar.istio.io/status): answered before the
    netns is checked or entered, so even a path the agent would refuse to enter is no error."""
    sock, _ = agent
    conf = mesh_netconf(mesh=False, agent_socket=sock)
    result = run_plugin("ADD", str(tmp_path / "not-a-netns"), conf, path="/nonexistent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ips"] == conf["prevResult"]["ips"]


def test_plugin_works_without_an_agent(lab, tmp_path):
    ns = lab.netns("pod")
    result = run_plugin("ADD", ns, netconf(str(tmp_path / "absent.sock")))
    assert result.returncode == 0 and "ISTIO_OUTPUT" in lab.save(ns)


def test_stale_socket_falls_back_and_a_new_agent_replaces_it(lab, tmp_path):
    stale = str(tmp_path / "cni.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(stale)
    listener.close()  # the file stays, nobody listens: a crashed agent
    ns = lab.netns("pod")
    assert run_plugin("ADD", ns, netconf(stale)).returncode == 0
    proc = subprocess.Popen([MESHCNI, "agent", "--socket", stale, "--config", agent_config(tmp_path, stale)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while run_plugin("ADD", ns, netconf(stale), path="/nonexistent").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_second_agent_refuses_to_start(agent):
    sock, _ = agent
    second = subprocess.run([MESHCNI, "agent", "--socket", sock, "--config", agent_config(Path(sock).parent, sock)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "already serving" in second.stderr


@pytest.mark.parametrize("through_agent", [True, False], ids=["agent", "in-process"])
def test_32_concurrent_adds_each_get_their_own_rules(through_agent, lab, tmp_path, request):
    sock = request.getfixturevalue("agent")[0] if through_agent else str(tmp_path / "none.sock")
    namespaces = [lab.netns(f"p{i}") for i in range(32)]
    conf = netconf(sock)
    # Through the agent, no plugin may fall back to in-process work (no iptables on its PATH):
    # a listen backlog of 5 once made a third of them do exactly that.
    path = "/nonexistent" if through_agent else None
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda i: run_plugin("ADD", namespaces[i], conf, path=path, pod=f"app-{i}"),
                                range(32)))
    assert [r.returncode for r in results] == [0] * 32, [r.stdout for r in results if r.returncode]
    expected = lab.save(namespaces[0])
    assert expected.count("\n") == 18
    assert all(lab.save(ns) == expected for ns in namespaces)
