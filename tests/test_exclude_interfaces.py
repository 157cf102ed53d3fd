"""``traffic.sidecar.istio.io/excludeInterfaces`` (today's Istio) through the installed ``istio-cni``.

Topology: test_redirect_traffic's, plus a second pod interface:

    pod netns  net1 203.0.113.2/24   <->   side netns net1 203.0.113.1/24, a service on :80

Traffic leaving or entering through ``net1`` is never captured; ``eth0``'s still is.
"""

from __future__ import annotations

import json

import pytest

from backends import both_backends
from meshcni_testing.netlab import cni, run
from test_redirect_traffic import POD4, REMOTE4, add, lab, listeners, netconf  # noqa: F401 - lab is a fixture

pytestmark = pytest.mark.netns

EXCLUDE_INTERFACES = "traffic.sidecar.istio.io/excludeInterfaces"
SIDE_POD, SIDE_PEER = "203.0.113.2", "203.0.113.1"


@pytest.fixture
def two_nics(lab):  # noqa: F811
    """The pod gets net1 to a third netns; listeners as test_redirect_traffic's, plus the side
    service on 203.0.113.1:80."""
    side = lab.netns("side")
    left, right = f"v{lab.token}n1", f"v{lab.token}n2"
    run("ip", "link", "add", left, "type", "veth", "peer", "name", right)
    for dev, ns, address in ((left, lab.pod, SIDE_POD), (right, side, SIDE_PEER)):
        name = lab.name_of(ns)
        run("ip", "link", "set", dev, "netns", name)
        run("ip", "-n", name, "link", "set", dev, "name", "net1")
        run("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "net1")
        run("ip", "-n", name, "link", "set", "net1", "up")
    lab.side = side
    listeners(lab)
    lab.listen(side, SIDE_PEER, 80)
    return lab


@both_backends
def test_traffic_through_an_excluded_interface_is_not_captured_while_eth0s_is(two_nics):
    net = two_nics
    add(net, netconf({EXCLUDE_INTERFACES: "net1"}))
    got = net.connect(net.pod, SIDE_PEER, 80)  # out through net1: straight to the service
    assert got.listener == 80 and got.local == (SIDE_PEER, 80)
    got = net.connect(net.side, SIDE_POD, 8080)  # in through net1: straight to the app
    assert got.listener == 8080 and got.original_dst in (None, (SIDE_POD, 8080))
    got = net.connect(net.pod, REMOTE4, 80)  # out through eth0: captured
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))
    got = net.connect(net.peer, POD4, 8080)  # in through eth0: captured
    assert (got.listener, got.original_dst) == (15006, (POD4, 8080))


@both_backends
def test_without_the_annotation_both_interfaces_are_captured(two_nics):
    net = two_nics
    add(net, netconf())
    got = net.connect(net.pod, SIDE_PEER, 80)
    assert (got.listener, got.original_dst) == (15001, (SIDE_PEER, 80))
    got = net.connect(net.side, SIDE_POD, 8080)
    assert (got.listener, got.original_dst) == (15006, (SIDE_POD, 8080))


def test_del_removes_the_exclusions_and_leaves_others_rules(two_nics):
    net = two_nics
    foreign = ("-A", "OUTPUT", "-o", "net1", "-p", "udp", "-j", "RETURN")
    run("ip", "netns", "exec", net.name_of(net.pod), "iptables-nft", "-t", "nat", *foreign)
    conf = netconf({EXCLUDE_INTERFACES: "net1"})
    add(net, conf)
    add(net, conf)
    assert cni("CHECK", net.pod, conf).returncode == 0
    assert cni("DEL", net.pod, conf).returncode == 0
    assert net.save(net.pod) == "-A OUTPUT -o net1 -p udp -j RETURN"
    # without the pod's annotations (no hints), the pair is still recognised as ours
    add(net, conf)
    assert cni("DEL", net.pod, netconf(mesh=False)).returncode == 0
    assert net.save(net.pod) == "-A OUTPUT -o net1 -p udp -j RETURN"


@pytest.mark.parametrize("value", ["net1,", "net 1", "net1\n", "eth0+", "averyveryverylongname", ","])
def test_invalid_interface_names_fail_the_add_naming_the_annotation(lab, value):  # noqa: F811
    proc = cni("ADD", lab.pod, netconf({EXCLUDE_INTERFACES: value}))
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 103
    assert error["msg"].startswith(f"invalid annotation {EXCLUDE_INTERFACES}={value!r}")
    assert lab.save(lab.pod) == ""
