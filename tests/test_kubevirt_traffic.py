"""A VM interface's traffic (``istio.io/reroute-virtual-interfaces``, the ``kubevirt`` extension)
is captured as outbound, with real packets, under both backends. Topology: test_exclude_interfaces's;
the "VM" is the side netns behind the pod's net1, routing the remote service through the pod."""

from __future__ import annotations

import pytest

from backends import both_backends
from meshcni_testing.netlab import run
from test_exclude_interfaces import SIDE_POD, two_nics  # noqa: F401 - two_nics is a fixture
from test_redirect_traffic import REMOTE4, add, lab, netconf  # noqa: F401 - lab is a fixture

pytestmark = pytest.mark.netns

REROUTE = "istio.io/reroute-virtual-interfaces"


@both_backends
def test_the_vms_outbound_lands_on_15001_with_its_original_destination(two_nics):  # noqa: F811
    net = two_nics
    run("ip", "-n", net.name_of(net.side), "route", "add", f"{REMOTE4}/32", "via", SIDE_POD)
    add(net, netconf({REROUTE: "net1"}))
    got = net.connect(net.side, REMOTE4, 80)
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))
