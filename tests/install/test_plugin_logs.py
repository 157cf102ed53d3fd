"""Every istio-cni run's outcome is in install-cni's stderr (``kubectl logs`` of the DaemonSet):
served by the agent, or - while no agent listens - by the plugin itself, spooled on the node and
replayed by the next agent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest
from node_agent import MESHCNI, PRIMARY, InstallCni
from test_install_cni import env_for

from meshcni_core.cni import spool
from meshcni_testing.netlab import cni, mesh_netconf
from meshcni_testing.processes import wait_until_listening

pytestmark = pytest.mark.netns
BAD = {"traffic.sidecar.istio.io/includeOutboundIPRanges": "not-a-cidr"}


@pytest.fixture
def node(host):
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(PRIMARY))
    started: list[InstallCni] = []

    def start(log_level: str = "info") -> InstallCni:
        agent = InstallCni(host, str(host.root / "run" / "cni.sock"), log_level)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def three_adds(lab, socket: str, tag: str) -> dict[str, tuple[int, str]]:
    """An eligible pod, a passed-through pod (no sidecar status) and a refused one (bad annotation)."""
    results = {}
    for pod, netconf in ((f"eligible-{tag}", mesh_netconf(agent_socket=socket)),
                         (f"plain-{tag}", mesh_netconf(mesh=False, agent_socket=socket)),
                         (f"refused-{tag}", mesh_netconf(BAD, agent_socket=socket))):
        ns = lab.netns(pod)
        result = cni("ADD", ns, netconf, pod=pod, container_id=f"ctr-{pod}")
        results[pod] = (result.returncode, lab.save(ns))
    return results


def check_lines(agent: InstallCni, tag: str, served_by: str) -> None:
    eligible = agent.record_of(f"default/eligible-{tag}")
    assert eligible["command"] == "ADD" and eligible["redirected"] is True
    assert eligible["verdict"].startswith("redirected: "), "with the deciding rule's reason"
    assert eligible["container"] == f"ctr-eligible-{tag}" and eligible["served_by"] == served_by
    assert 0 < eligible["duration_ms"] < 60_000
    plain = agent.record_of(f"default/plain-{tag}")
    assert plain["verdict"].startswith("passed through: annotation sidecar.istio.io/status is absent"), plain
    # A pass-through decided from the request alone is the plugin's fast path while an agent listens
    # too: its line reaches the agent through the spool within a second.
    assert plain["redirected"] is False and plain["served_by"] in {served_by, "plugin"}
    refused = agent.record_of(f"default/refused-{tag}")
    assert refused["verdict"] == "failed" and refused["served_by"] == served_by
    assert "includeOutboundIPRanges" in refused["error"] and "not-a-cidr" in refused["error"]
    assert refused["code"] != 0 and "redirected" not in refused


def test_runs_served_by_the_agent_and_by_the_plugin_alone_all_reach_install_cni_s_log(host, node, netns_lab):
    socket = str(host.root / "run" / "cni.sock")
    first = node()
    served = three_adds(netns_lab, socket, "agent")
    assert served["eligible-agent"][0] == 0 and "ISTIO_OUTPUT" in served["eligible-agent"][1]
    assert served["plain-agent"] == (0, "")
    assert served["refused-agent"][0] != 0
    check_lines(first, "agent", "agent")
    error_line = next(line for line in first.lines if "refused-agent" in line)
    assert " ERROR meshcni.plugin: istio-cni {" in error_line

    first.stop()  # the upgrade's gap: nobody listens, the plugin serves in-process
    assert not os.path.exists(socket)
    alone = three_adds(netns_lab, socket, "alone")
    assert alone["eligible-alone"][0] == 0 and "ISTIO_OUTPUT" in alone["eligible-alone"][1]
    assert alone["refused-alone"][0] != 0
    spooled = host.root / "run" / spool.SPOOL_NAME
    mode = os.lstat(spooled).st_mode
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600
    assert len(spooled.read_text().splitlines()) == 3

    second = node()  # the next install-cni replays what the plugin spooled
    check_lines(second, "alone", "plugin")
    assert not any("-agent" in r["pod"] for r in second.records()), "the first agent's lines are not repeated"
    second.wait_for(lambda: spooled.stat().st_size == 0, "the spool was not emptied")


def test_plugin_lines_follow_the_entry_s_log_level_not_the_agent_s(host, node, netns_lab):
    """LOG_LEVEL=warn: a success is not logged, a failure is (the agent's --log-level stays info)."""
    socket = str(host.root / "run" / "cni.sock")
    agent = node(log_level="warn")
    assert cni("ADD", netns_lab.netns("ok"), mesh_netconf(agent_socket=socket), pod="ok-pod").returncode == 0
    assert cni("ADD", netns_lab.netns("bad"), mesh_netconf(BAD, agent_socket=socket), pod="bad-pod").returncode
    assert agent.record_of("default/bad-pod")["verdict"] == "failed"
    assert not any(r["pod"] == "default/ok-pod" for r in agent.records())
    assert 'meshcni_cni_requests_total{code="",command="ADD",result="redirected",served_by="agent"} 1.0' \
        in agent.metrics(), "counted whatever the level"


def test_the_standalone_agent_logs_the_runs_it_served(tmp_path, netns_lab):
    socket = str(tmp_path / "run" / "cni.sock")
    config = tmp_path / "netconf.json"
    config.write_text(json.dumps(mesh_netconf(agent_socket=socket, log_level="info")))
    log = tmp_path / "agent.log"
    with open(log, "w") as stderr:
        agent = subprocess.Popen([MESHCNI, "agent", "--socket", socket, "--config", str(config), "--log-level", "warn"],
                                 stderr=stderr)
    try:
        wait_until_listening(agent, socket, output=log.read_text)
        deadline = time.monotonic() + 30
        ns = netns_lab.netns("solo")
        assert cni("ADD", ns, mesh_netconf(agent_socket=socket), pod="solo", container_id="ctr-solo").returncode == 0
        while '"pod": "default/solo"' not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        line = next(line for line in log.read_text().splitlines() if '"pod": "default/solo"' in line)
        record = json.loads(line.partition(" istio-cni ")[2])
        assert record["served_by"] == "agent" and record["verdict"].startswith("redirected: ")
        assert record["container"] == "ctr-solo"
    finally:
        agent.terminate()
        agent.wait(timeout=15)


def test_uninstall_logs_the_records_no_agent_replayed_then_removes_the_spool(host, node, netns_lab):
    """uninstall-cni removes what install-cni created beside the socket - the spool (its rotated
    file too), the state directory - and loses no line: the unreplayed records go to its stderr
    (the clean-up pod's log)."""
    run = host.root / "run"
    socket = str(run / "cni.sock")
    node().stop()
    spooled = run / spool.SPOOL_NAME
    rotated = run / (spool.SPOOL_NAME + spool.ROTATED_SUFFIX)
    first = cni("ADD", netns_lab.netns("before-rotation"), mesh_netconf(agent_socket=socket), pod="rotated-away")
    assert first.returncode == 0
    os.rename(spooled, rotated)  # as a plugin finding the spool full does
    alone = three_adds(netns_lab, socket, "unreplayed")
    assert alone["eligible-unreplayed"][0] == 0
    assert len(spooled.read_text().splitlines()) == 3 and rotated.exists()

    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", socket], env=env_for(host),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"removed {spooled} after logging its 4 unreplayed plugin records" in proc.stdout.splitlines()
    for pod in ("rotated-away", "eligible-unreplayed", "plain-unreplayed", "refused-unreplayed"):
        assert f'"pod": "default/{pod}"' in proc.stderr, f"{pod}'s line was lost:\n{proc.stderr}"
    assert not run.exists(), sorted(os.listdir(run))
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text()) == PRIMARY
