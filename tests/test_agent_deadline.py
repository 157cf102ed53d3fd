"""Once the node agent has a request, istio-cni never runs it a second time in-process: an agent
that does not answer in time fails the command (the runtime retries) instead of the plugin telling
the runtime "ok" while the agent may still act on the request later."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from meshcni_testing.netlab import cni, mesh_netconf
from meshcni_testing.processes import start_agent

pytestmark = pytest.mark.netns
MESHCNI = str(Path(sys.executable).with_name("meshcni"))


@pytest.fixture
def agent(tmp_path):
    sock = str(tmp_path / "run" / "cni.sock")
    proc = start_agent(sock, stopped_agent_netconf(sock))
    try:
        yield sock, proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


def stopped_agent_netconf(sock: str) -> dict:
    """The agent serves with its own configuration: the test's and the agent's are one."""
    return mesh_netconf(agent_socket=sock, agent_timeout=2, kubernetes={"pod_lookup_timeout": 1})


def test_a_stopped_agent_holding_the_request_fails_the_add_without_an_in_process_run(agent, netns_lab):
    sock, proc = agent
    ns = netns_lab.netns("pod")
    conf = stopped_agent_netconf(sock)
    os.kill(proc.pid, signal.SIGSTOP)  # the socket still accepts: the request waits in the agent's queue
    started = time.monotonic()
    result = cni("ADD", ns, conf)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    error = json.loads(result.stdout)
    assert error["msg"] == f"node agent at {sock} did not answer within 2s", error
    assert error["code"] == 50
    assert 2 <= elapsed < 10
    assert netns_lab.save(ns) == "", "the ADD was run a second time in the plugin's own process"
    # Resumed, the agent judges the queued connection: its peer has exited (the plugin gave up), so
    # it cannot be shown to be a host process and nothing is applied late; the agent still serves.
    os.kill(proc.pid, signal.SIGCONT)
    time.sleep(1)
    assert netns_lab.save(ns) == "", "the agent applied a request whose plugin had already failed the ADD"
    again = cni("ADD", ns, conf)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ISTIO_OUTPUT" in netns_lab.save(ns)


def test_without_anybody_listening_the_plugin_still_serves_in_process(tmp_path, netns_lab):
    stale = tmp_path / "cni.sock"
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()  # the file stays, nobody listens: the request never reached an agent
    ns = netns_lab.netns("pod")
    result = cni("ADD", ns, mesh_netconf(agent_socket=str(stale), agent_timeout=2,
                                         kubernetes={"pod_lookup_timeout": 1}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in netns_lab.save(ns)


@pytest.mark.parametrize(("agent_timeout", "lookup_timeout", "expected"), [
    (0, 1, "netconf key agent_timeout must be seconds in (0, 220], got 0"),
    ("5", 1, "netconf key agent_timeout must be seconds in (0, 220], got '5'"),
    (30, 30, "netconf key kubernetes.pod_lookup_timeout (30s) must be shorter than agent_timeout (30s"),
])
def test_deadlines_that_do_not_nest_are_configuration_errors(agent_timeout, lookup_timeout, expected, tmp_path,
                                                             netns_lab):
    ns = netns_lab.netns("pod")
    conf = mesh_netconf(agent_socket=str(tmp_path / "absent.sock"), agent_timeout=agent_timeout,
                        kubernetes={"pod_lookup_timeout": lookup_timeout})
    result = cni("ADD", ns, conf)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["code"] == 7 and error["msg"].startswith(expected), error
    assert netns_lab.save(ns) == ""
