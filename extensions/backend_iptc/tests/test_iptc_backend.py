"""The python-iptables backend produces exactly the iptables-restore backend's rules (legacy)."""

from __future__ import annotations

import json

import pytest

from meshcni_testing.netlab import cni, mesh_netconf

pytestmark = pytest.mark.netns
ANNOTATIONS = [
    {},
    {"sidecar.istio.io/interceptionMode": "TPROXY", "traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2",
     "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8", "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"},
]


def netconf(backend: str, flavour: str, annotations: dict[str, str]) -> dict:
    return mesh_netconf(annotations, extensions=["tproxy", "kubevirt", "iptc"], backend=backend,
                        iptables_flavour=flavour)


@pytest.fixture
def lab(netns_lab):
    return netns_lab


@pytest.mark.parametrize("annotations", ANNOTATIONS, ids=["default", "tproxy-kubevirt"])
def test_same_rules_as_iptables_restore(lab, annotations):
    by_iptc, by_restore = lab.netns("iptc"), lab.netns("restore")
    proc = cni("ADD", by_iptc, netconf("iptc", "legacy", annotations))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cni("ADD", by_restore, netconf("iptables-restore", "legacy", annotations)).returncode == 0
    for family in (4, 6):
        assert lab.save(by_iptc, family, "legacy") == lab.save(by_restore, family, "legacy") != ""
    # a second ADD changes nothing, CHECK agrees, DEL removes everything
    assert cni("ADD", by_iptc, netconf("iptc", "legacy", annotations)).returncode == 0
    assert lab.save(by_iptc, 4, "legacy") == lab.save(by_restore, 4, "legacy")
    assert cni("CHECK", by_iptc, netconf("iptc", "legacy", annotations)).returncode == 0
    assert cni("DEL", by_iptc, netconf("iptc", "legacy", annotations)).returncode == 0
    assert lab.save(by_iptc, 4, "legacy") == "" and lab.save(by_iptc, 6, "legacy") == ""


def test_check_notices_a_missing_rule(lab):
    ns = lab.netns("iptc")
    assert cni("ADD", ns, netconf("iptc", "legacy", {})).returncode == 0
    import subprocess

    from meshcni_core import netns

    with netns.entered(ns):
        subprocess.run(["iptables-legacy", "-t", "nat", "-D", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"], check=True)
    error = json.loads(cni("CHECK", ns, netconf("iptc", "legacy", {})).stdout)
    assert error["code"] == 106 and "ISTIO_OUTPUT" in error["details"]


@pytest.mark.parametrize("flavour", ["nft", "auto"])
def test_refuses_clearly_on_nft(lab, flavour):
    ns = lab.netns("iptc")
    proc = cni("ADD", ns, netconf("iptc", flavour, {}))
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and "only legacy iptables" in error["msg"] and "iptables-restore" in error["msg"]
    assert lab.save(ns, 4, "legacy") == "" and lab.save(ns, 4, "nft") == ""
