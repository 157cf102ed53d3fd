"""Operations on pods the nftables backend programmed: the istio-validation check, the repair
controller's reprogram policy, and istio-iptables --cleanup (which leaves their tables alone)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshcni_core.pipeline import Pipeline
from meshcni_core.repair.reprogram import Reprogrammer
from meshcni_hooks.errors import ApplyError
from meshcni_testing.netlab import cni, mesh_netconf
from test_istio_iptables import _validate_as_proxy, tool
from test_repair import STATUS

pytestmark = pytest.mark.netns


def nftables_netconf() -> dict:
    netconf = mesh_netconf(native_nftables=True)
    netconf["extensions"] = [*netconf["extensions"], "nftables"]
    return netconf


def ruleset(lab, ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", lab.name_of(ns), "nft", "list", "ruleset"], capture_output=True,
                          text=True, check=True).stdout


def no_iptables_rules(lab, ns: str) -> bool:
    return all(lab.save(ns, family, flavour) == "" for family in (4, 6) for flavour in ("nft", "legacy"))


def test_validation_passes_in_an_nftables_pod_and_fails_once_its_tables_are_gone(netns_lab):
    ns = netns_lab.netns("pod")
    assert cni("ADD", ns, nftables_netconf()).returncode == 0
    assert "table inet istio-proxy-nat" in ruleset(netns_lab, ns) and no_iptables_rules(netns_lab, ns)
    assert _validate_as_proxy(ns, timeout=5) == 0
    assert cni("DEL", ns, nftables_netconf()).returncode == 0
    assert _validate_as_proxy(ns, timeout=1) == 126


def test_istio_iptables_cleanup_leaves_an_nftables_pod_alone(netns_lab):
    ns = netns_lab.netns("pod")
    assert cni("ADD", ns, nftables_netconf()).returncode == 0
    before = ruleset(netns_lab, ns)
    proc = tool(ns, "--cleanup")
    assert proc.returncode == 0, proc.stderr
    assert ruleset(netns_lab, ns) == before
    assert "left the nftables tables inet istio-proxy-nat" in proc.stderr
    assert _validate_as_proxy(ns, timeout=5) == 0  # still redirected


def test_istio_iptables_cleanup_leaves_a_hand_made_istio_table_alone(netns_lab):
    ns = netns_lab.netns("pod")
    name = netns_lab.name_of(ns)
    subprocess.run(["ip", "netns", "exec", name, "nft", "add table inet istio-proxy-nat; "
                    "add chain inet istio-proxy-nat output { type nat hook output priority -100; }"], check=True)
    before = ruleset(netns_lab, ns)
    assert tool(ns, "--cleanup").returncode == 0
    assert ruleset(netns_lab, ns) == before


def meshed_pod(ip: str) -> dict:
    return {"metadata": {"namespace": "default", "name": "victim", "uid": "uid-victim", "annotations": STATUS},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def test_reprogram_gives_a_pod_that_missed_its_rules_the_nftables_tables(netns_lab, tmp_path):
    victim, peer = netns_lab.netns("victim"), netns_lab.netns("peer")
    netns_lab.link(victim, ["192.0.2.40/24"], peer, ["192.0.2.1/24"])
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for path in (victim, peer):
        (netns_dir / Path(path).name).symlink_to(path)
    assert _validate_as_proxy(victim, timeout=1) == 126
    reprogram = Reprogrammer(lambda: Pipeline.from_netconf(nftables_netconf(), {}), str(netns_dir))
    assert reprogram(meshed_pod("192.0.2.40")) == "reprogrammed"
    assert "table inet istio-proxy-nat" in ruleset(netns_lab, victim) and no_iptables_rules(netns_lab, victim)
    assert ruleset(netns_lab, peer) == ""
    assert _validate_as_proxy(victim, timeout=5) == 0
    # A node whose netconf went back to iptables does not add the other flavour beside them.
    back_to_iptables = Reprogrammer(lambda: Pipeline.from_netconf(mesh_netconf(), {}), str(netns_dir))
    with pytest.raises(ApplyError, match="already holds the nftables redirect tables"):
        back_to_iptables(meshed_pod("192.0.2.40"))
    assert no_iptables_rules(netns_lab, victim)
