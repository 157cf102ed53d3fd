"""A failed ADD undoes only what it changed: the rules an earlier, successful ADD of the same
network namespace programmed stay as they were."""

from __future__ import annotations

import json

import pytest

from meshcni_testing.netlab import Lab, cni, mesh_netconf, run

pytestmark = pytest.mark.netns
MODE = "sidecar.istio.io/interceptionMode"


def rules(lab: Lab, ns: str) -> dict[int, str]:
    return {family: lab.save(ns, family) for family in (4, 6)}


def test_a_failed_repeated_add_leaves_the_earlier_adds_rules_in_place(netns_lab):
    ns = netns_lab.netns("pod")
    first = cni("ADD", ns, mesh_netconf({MODE: "TPROXY"}, agent_socket=""))
    assert first.returncode == 0, first.stdout + first.stderr
    # Somebody else's chain jumps to one of our TPROXY chains: the kernel then refuses to delete
    # that chain, so an ADD that switches the pod to REDIRECT mode fails in its IPv4 transaction.
    name = netns_lab.name_of(ns)
    run("ip", "netns", "exec", name, "iptables-nft", "-t", "mangle", "-N", "FOREIGN")
    run("ip", "netns", "exec", name, "iptables-nft", "-t", "mangle", "-A", "FOREIGN", "-j", "ISTIO_DIVERT")
    before = rules(netns_lab, ns)
    assert before[6], "the first ADD programmed IPv6 rules (the lock-down)"

    second = cni("ADD", ns, mesh_netconf({MODE: "REDIRECT"}, agent_socket=""))
    assert second.returncode == 1, second.stdout + second.stderr
    assert rules(netns_lab, ns) == before, "the failed ADD removed rules it had not added"
    error = json.loads(second.stdout)
    assert error["code"] == 105 and "rollback also failed" not in error.get("details", ""), error
