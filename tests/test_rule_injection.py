"""Values from a pod, a netconf or CNI_ARGS can never write netfilter rules of their own.

Every case runs the installed ``istio-cni`` against a real dual-stack netns and reads the tables
back with ``iptables-save``/``ip6tables-save``: an invalid value fails the ADD with one error
object naming the key and the value, and leaves nothing of ours in either family.
"""

from __future__ import annotations

import json

import pytest

from meshcni_core.devtools.netlab import cni, mesh_netconf

pytestmark = pytest.mark.netns

EXCLUDE_OUTBOUND = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
# issue 9 item 1, verbatim: an IPv6 "zone" that closes our nat transaction and opens a filter one
SCOPE_ID_INJECTION = (
    "fd00::%1 -j RETURN\n-I ISTIO_OUTPUT 1 -j RETURN\nCOMMIT\n*filter\n-I INPUT 1 -p tcp --dport 4444 "
    "-j ACCEPT\nCOMMIT\n*nat\n-A ISTIO_OUTPUT -d fd00::/128"
)


@pytest.fixture
def pod(netns_lab):
    """A dual-stack pod netns (eth0 192.0.2.2/24 and 2001:db8:1::2/64), as a primary CNI leaves it."""
    ns, peer = netns_lab.netns("pod"), netns_lab.netns("peer")
    netns_lab.link(ns, ["192.0.2.2/24", "2001:db8:1::2/64"], peer, ["192.0.2.1/24", "2001:db8:1::1/64"])
    return ns


def dual_stack_netconf(annotations: dict[str, str]) -> dict:
    conf = mesh_netconf(annotations)
    conf["prevResult"]["ips"].append({"address": "2001:db8:1::2/64", "interface": 0})
    return conf


def assert_refused_and_untouched(lab, ns: str, proc, key: str, value: str) -> dict:
    assert proc.returncode != 0, f"ADD accepted {value!r}: {proc.stdout}"
    error = json.loads(proc.stdout)  # exactly one JSON document
    assert error["code"] not in (0, 9, 10) and key in error["msg"] and repr(value) in error["msg"], error
    assert lab.save(ns, 4) == "" and lab.save(ns, 6) == "", "a refused ADD left rules behind"
    return error


def test_ipv6_scope_id_cannot_inject_rules(netns_lab, pod):
    proc = cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: SCOPE_ID_INJECTION}))
    error = assert_refused_and_untouched(netns_lab, pod, proc, EXCLUDE_OUTBOUND, SCOPE_ID_INJECTION)
    assert "zone" in error["msg"]
    assert "4444" not in netns_lab.save(pod, 6) + netns_lab.save(pod, 4)


def test_a_plain_scope_id_is_refused_as_go_refuses_it(netns_lab, pod):
    proc = cni("ADD", pod, dual_stack_netconf({EXCLUDE_OUTBOUND: "fd00::%eth0/64"}))
    assert_refused_and_untouched(netns_lab, pod, proc, EXCLUDE_OUTBOUND, "fd00::%eth0/64")


@pytest.mark.parametrize("value", ["eth0\n", "net1,eth0\n", "eth0\x00", "eth0 -j ACCEPT"])
def test_kubevirt_interface_must_be_a_whole_interface_name(netns_lab, pod, value):
    proc = cni("ADD", pod, dual_stack_netconf({KUBEVIRT: value}))
    assert_refused_and_untouched(netns_lab, pod, proc, KUBEVIRT, value)
