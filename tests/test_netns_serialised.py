"""The agent serialises the commands of one network namespace: concurrent ADDs (and DELs) of the
same pod never interleave their iptables reads and writes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshcni_testing.netlab import cni, mesh_netconf
from meshcni_testing.processes import start_agent

pytestmark = pytest.mark.netns
PARALLEL = 8


@pytest.fixture
def agent_socket(tmp_path):
    sock = str(tmp_path / "run" / "cni.sock")
    agent = start_agent(sock, mesh_netconf(agent_socket=sock))
    try:
        yield sock
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_concurrent_adds_of_one_netns_all_succeed_with_one_rule_set(agent_socket, netns_lab):
    reference, ns = netns_lab.netns("reference"), netns_lab.netns("pod")
    conf = mesh_netconf(agent_socket=agent_socket)
    assert cni("ADD", reference, conf).returncode == 0
    expected = {family: netns_lab.save(reference, family) for family in (4, 6)}
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(lambda _: cni("ADD", ns, conf), range(PARALLEL)))
    failures = [json.loads(r.stdout) for r in results if r.returncode != 0]
    assert not failures, failures
    assert {family: netns_lab.save(ns, family) for family in (4, 6)} == expected
    check = cni("CHECK", ns, conf)
    assert check.returncode == 0, check.stdout


def test_an_add_and_a_del_racing_leave_all_or_nothing(agent_socket, netns_lab):
    reference, ns = netns_lab.netns("reference"), netns_lab.netns("pod")
    conf = mesh_netconf(agent_socket=agent_socket)
    assert cni("ADD", reference, conf).returncode == 0
    full = {family: netns_lab.save(reference, family) for family in (4, 6)}
    empty = {4: "", 6: ""}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(10):
            add, delete = pool.map(lambda command: cni(command, ns, conf), ("ADD", "DEL"))
            assert add.returncode == 0 and delete.returncode == 0, add.stdout + delete.stdout
            assert {family: netns_lab.save(ns, family) for family in (4, 6)} in (full, empty)
