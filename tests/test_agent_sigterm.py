"""SIGTERM (a DaemonSet rollout replacing install-cni) fails no ADD: the agent answers the requests
it already holds before it stops, and a plugin starting meanwhile finds no socket and serves the
pod in its own process. Cutting a held request off would fail its pod (the plugin never runs a
request a second time once the agent has it: test_agent_deadline.py)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from subprocess import CompletedProcess

import pytest

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import MESH_STATUS, cni, mesh_netconf
from meshcni_testing.processes import start_agent

pytestmark = pytest.mark.netns
POD_PATH = "/api/v1/namespaces/default/pods/app-1"


def api_only_netconf(kubeconfig: str, sock: str) -> dict:
    """No runtime annotations: the agent must read the pod from the (slow) API server."""
    conf = mesh_netconf(agent_socket=sock, agent_timeout=30)
    del conf["runtimeConfig"]
    conf["kubernetes"] = {**conf["kubernetes"], "kubeconfig": kubeconfig, "pod_lookup_timeout": 10}
    return conf


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sigterm_answers_the_request_in_flight_and_hands_new_pods_to_the_plugin(tmp_path, netns_lab):
    with FakeApiServer() as api:
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                    annotations={"sidecar.istio.io/status": MESH_STATUS})
        sock = str(tmp_path / "run" / "cni.sock")
        conf = api_only_netconf(api.write_kubeconfig(str(tmp_path / "kubeconfig")), sock)
        agent = start_agent(sock, conf)
        try:
            in_flight, later = netns_lab.netns("inflight"), netns_lab.netns("later")
            api.faults.delay_seconds = 1.5  # the agent is inside the pod lookup when SIGTERM comes
            results: dict[str, CompletedProcess[str]] = {}
            plugin = threading.Thread(target=lambda: results.setdefault("held", cni("ADD", in_flight, conf)))
            plugin.start()
            wait_for(lambda: any(path.startswith(POD_PATH) for _, path, _ in api.requests))
            agent.send_signal(signal.SIGTERM)
            wait_for(lambda: not os.path.exists(sock), timeout=1.0)
            assert agent.poll() is None, "the agent stopped while it still held a request"
            started_meanwhile = cni("ADD", later, conf, container_id="later")
            plugin.join(timeout=30)
            assert agent.wait(timeout=10) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    held = results["held"]
    assert held.returncode == 0, held.stdout + held.stderr
    assert json.loads(held.stdout)["cniVersion"] == "1.0.0"
    assert "ISTIO_OUTPUT" in netns_lab.save(in_flight)
    assert started_meanwhile.returncode == 0, started_meanwhile.stdout + started_meanwhile.stderr
    assert "ISTIO_OUTPUT" in netns_lab.save(later)
