"""Real packets through rules the installed ``istio-cni`` programmed in a throwaway pod netns.

Topology (documentation ranges only):

    pod netns  eth0 192.0.2.2/24, 2001:db8:1::2/64   default via the peer
    peer netns eth0 192.0.2.1/24, 2001:db8:1::1/64   "remote service" 198.51.100.10, 2001:db8:2::10 on lo

In the pod: stand-in proxy listeners on 15001 (outbound) and 15006 (inbound), an app on 8080,
the agent on 15020. In the peer: the remote service on port 80.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from backends import both_backends, use_backend
from meshcni_core import netns
from meshcni_testing.netlab import Lab, cni, mesh_netconf, run

pytestmark = pytest.mark.netns

REMOTE4, REMOTE6 = "198.51.100.10", "2001:db8:2::10"
POD4, POD6 = "192.0.2.2", "2001:db8:1::2"


def netconf(annotations: dict[str, str] | None = None, mesh: bool = True, **extra) -> dict:
    return mesh_netconf(annotations, mesh=mesh, **extra)


@pytest.fixture
def lab(backend):
    lab = Lab()
    lab.backend = backend  # type: ignore[attr-defined]
    try:
        pod, peer = lab.netns("pod"), lab.netns("peer")
        lab.link(pod, [f"{POD4}/24"], peer, ["192.0.2.1/24"])
        lab.ip(pod, "route", "add", "default", "via", "192.0.2.1")
        lab.ip(peer, "addr", "add", f"{REMOTE4}/32", "dev", "lo")
        lab.pod, lab.peer = pod, peer  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab6(lab):
    lab.ip(lab.pod, "addr", "add", f"{POD6}/64", "dev", "eth0", "nodad")
    lab.ip(lab.peer, "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
    lab.ip(lab.peer, "addr", "add", f"{REMOTE6}/128", "dev", "lo")
    lab.ip(lab.pod, "-6", "route", "add", "default", "via", "2001:db8:1::1")
    return lab


def listeners(lab, family=4, transparent=False):
    any_addr = "::" if family == 6 else "0.0.0.0"
    lab.listen(lab.pod, any_addr, 15001, transparent=transparent)
    lab.listen(lab.pod, any_addr, 15006, transparent=transparent)
    lab.listen(lab.pod, any_addr, 8080)
    lab.listen(lab.pod, any_addr, 15020)
    lab.listen(lab.peer, REMOTE6 if family == 6 else REMOTE4, 80)


def add(lab, conf) -> None:
    proc = cni("ADD", lab.pod, use_backend(conf, lab.backend))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ips"] == conf["prevResult"]["ips"]


@both_backends
def test_app_outbound_lands_on_15001_with_original_destination(lab):
    listeners(lab)
    add(lab, netconf())
    got = lab.connect(lab.pod, REMOTE4, 80)
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))


@both_backends
def test_proxy_uid_1337_bypasses_capture(lab):
    listeners(lab)
    add(lab, netconf())
    got = lab.connect(lab.pod, REMOTE4, 80, uid=1337)
    assert got.listener == 80 and got.local == (REMOTE4, 80)


@both_backends
def test_inbound_lands_on_15006_and_excluded_ports_bypass(lab):
    listeners(lab)
    add(lab, netconf())
    got = lab.connect(lab.peer, POD4, 8080)
    assert (got.listener, got.original_dst) == (15006, (POD4, 8080))
    got = lab.connect(lab.peer, POD4, 15020)
    assert got.listener == 15020 and not got.nat_redirected


@both_backends
def test_loopback_is_left_alone(lab):
    listeners(lab)
    add(lab, netconf())
    got = lab.connect(lab.pod, "127.0.0.1", 8080)
    assert got.listener == 8080 and not got.nat_redirected


@both_backends
def test_proxy_calling_the_pod_through_loopback_goes_to_inbound_capture(lab):
    """Istio's rule: uid 1337 to a non-127.0.0.1 address on lo is sent to 15006."""
    listeners(lab)
    add(lab, netconf())
    got = lab.connect(lab.pod, POD4, 8080, uid=1337)
    assert (got.listener, got.original_dst) == (15006, (POD4, 8080))


@both_backends
@pytest.mark.parametrize(
    "annotations",
    [
        {"traffic.sidecar.istio.io/excludeOutboundIPRanges": "198.51.100.0/24"},
        {"traffic.sidecar.istio.io/excludeOutboundPorts": "80"},
        {"traffic.sidecar.istio.io/includeOutboundIPRanges": "203.0.113.0/24"},
    ],
)
def test_outbound_exclusions_bypass(lab, annotations):
    listeners(lab)
    add(lab, netconf(annotations))
    assert lab.connect(lab.pod, REMOTE4, 80).listener == 80


@both_backends
def test_include_inbound_ports_captures_only_those(lab):
    listeners(lab)
    add(lab, netconf({"traffic.sidecar.istio.io/includeInboundPorts": "9090"}))
    assert lab.connect(lab.peer, POD4, 8080).listener == 8080


@both_backends
def test_tproxy_inbound_lands_on_15006_keeping_the_destination_address(lab):
    """As today's Istio: TPROXY delivers inbound to the inbound capture port (Istio 1.6's CNI
    script used 15001, where today's proxies listen only for outbound)."""
    listeners(lab, transparent=True)
    add(lab, netconf({"sidecar.istio.io/interceptionMode": "TPROXY"}))
    got = lab.connect(lab.peer, POD4, 8080)
    assert got.listener == 15006 and got.local == (POD4, 8080) and not got.nat_redirected
    # outbound still uses nat REDIRECT
    got = lab.connect(lab.pod, REMOTE4, 80)
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))


@both_backends
def test_ipv6_pod_outbound_and_inbound(lab6):
    lab = lab6
    listeners(lab, family=6)
    add(lab, netconf())
    got = lab.connect(lab.pod, REMOTE6, 80)
    assert (got.listener, got.original_dst) == (15001, (REMOTE6, 80))
    got = lab.connect(lab.peer, POD6, 8080)
    assert (got.listener, got.original_dst) == (15006, (POD6, 8080))
    assert lab.connect(lab.pod, REMOTE6, 80, uid=1337).listener == 80


def test_pod_without_sidecar_is_untouched(lab):
    listeners(lab)
    add(lab, netconf(mesh=False))
    assert lab.save(lab.pod) == ""
    assert lab.connect(lab.pod, REMOTE4, 80).listener == 80


def test_invalid_annotation_fails_the_add_and_leaves_nothing(lab):
    proc = cni("ADD", lab.pod, netconf({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/8, 10.1.0.0/16"}))
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 103
    assert "traffic.sidecar.istio.io/excludeOutboundIPRanges" in error["msg"] and "10.1.0.0/16" in error["msg"]
    assert lab.save(lab.pod) == "" and lab.save(lab.pod, 6) == ""


def test_second_add_leaves_the_same_rules_and_del_removes_them(lab):
    conf = netconf({"traffic.sidecar.istio.io/kubevirtInterfaces": "net1"})
    add(lab, conf)
    first = (lab.save(lab.pod), lab.save(lab.pod, 6))
    add(lab, conf)
    assert (lab.save(lab.pod), lab.save(lab.pod, 6)) == first
    assert cni("CHECK", lab.pod, conf).returncode == 0
    proc = cni("DEL", lab.pod, conf)
    assert proc.returncode == 0 and proc.stdout == ""
    assert lab.save(lab.pod) == "" and lab.save(lab.pod, 6) == ""
    assert cni("DEL", lab.pod, conf).returncode == 0


def test_del_keeps_rules_that_are_not_ours(lab):
    foreign = ["-t", "nat", "-A", "PREROUTING", "-s", "203.0.113.7/32", "-j", "RETURN"]
    with netns.entered(lab.pod):
        subprocess.run(["iptables", *foreign], check=True)
    add(lab, netconf())
    assert cni("DEL", lab.pod, netconf()).returncode == 0
    assert lab.save(lab.pod) == "-A PREROUTING -s 203.0.113.7/32 -j RETURN"


def test_check_fails_when_rules_are_removed(lab):
    conf = netconf()
    add(lab, conf)
    with netns.entered(lab.pod):
        subprocess.run(["iptables", "-t", "nat", "-D", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"], check=True)
    proc = cni("CHECK", lab.pod, conf)
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 106 and "ISTIO_OUTPUT" in error["details"]


def test_tproxy_routes_are_installed_and_removed(lab):
    conf = netconf({"sidecar.istio.io/interceptionMode": "TPROXY"})
    add(lab, conf)
    name = lab.name_of(lab.pod)
    assert "fwmark 0x539 lookup 133" in run("ip", "-n", name, "rule", "show").stdout
    assert "local default dev lo" in run("ip", "-n", name, "route", "show", "table", "133").stdout
    add(lab, conf)  # idempotent: still exactly one policy rule
    assert run("ip", "-n", name, "rule", "show").stdout.count("fwmark 0x539") == 1
    assert cni("DEL", lab.pod, conf).returncode == 0
    assert "fwmark" not in run("ip", "-n", name, "rule", "show").stdout


def test_del_without_annotations_still_removes_tproxy_routes(lab):
    """The API-lookup path: DEL carries no annotations, yet the pod's policy routes go."""
    conf = netconf({"sidecar.istio.io/interceptionMode": "TPROXY"})
    add(lab, conf)
    bare = {k: v for k, v in conf.items() if k != "runtimeConfig"}
    assert cni("DEL", lab.pod, bare).returncode == 0
    name = lab.name_of(lab.pod)
    assert "fwmark" not in run("ip", "-n", name, "rule", "show").stdout
    assert run("ip", "-n", name, "route", "show", "table", "133").stdout == ""
    assert lab.save(lab.pod) == "" and lab.save(lab.pod, 6) == ""


def test_del_without_annotations_removes_routes_of_the_configured_tproxy_settings(lab):
    """The mark and table are the extension's settings, not the core's: DEL without pod metadata
    still removes exactly the policy routes ADD installed with them."""
    settings = {"extension_settings": {"tproxy": {"mark": 1536, "route_table": 200}}}
    conf = netconf({"sidecar.istio.io/interceptionMode": "TPROXY"}, **settings)
    add(lab, conf)
    name = lab.name_of(lab.pod)
    assert "fwmark 0x600 lookup 200" in run("ip", "-n", name, "rule", "show").stdout
    assert "local default dev lo" in run("ip", "-n", name, "route", "show", "table", "200").stdout
    bare = {k: v for k, v in conf.items() if k != "runtimeConfig"}
    assert cni("DEL", lab.pod, bare).returncode == 0
    assert "fwmark" not in run("ip", "-n", name, "rule", "show").stdout
    assert run("ip", "-n", name, "route", "show", "table", "200").stdout == ""
