"""The backend uses the host's iptables flavour - nft or legacy - and never both in one netns."""

from __future__ import annotations

import json

import pytest

from meshcni_core.backends import iptables_restore
from meshcni_testing.netlab import cni, mesh_netconf


def netconf(flavour: str, annotations: dict[str, str] | None = None) -> dict:
    return mesh_netconf(annotations, iptables_flavour=flavour)


@pytest.fixture
def lab(netns_lab):
    return netns_lab


@pytest.mark.netns
@pytest.mark.parametrize("annotations", [{}, {"sidecar.istio.io/interceptionMode": "TPROXY",
                                              "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}])
def test_legacy_gives_the_same_rules_and_leaves_nft_empty(lab, annotations):
    legacy, nft = lab.netns("legacy"), lab.netns("nft")
    assert cni("ADD", legacy, netconf("legacy", annotations)).returncode == 0
    assert cni("ADD", nft, netconf("nft", annotations)).returncode == 0
    for family in (4, 6):
        assert lab.save(legacy, family, flavour="legacy") == lab.save(nft, family, flavour="nft") != ""
        assert lab.save(legacy, family, flavour="nft") == ""
        assert lab.save(nft, family, flavour="legacy") == ""
    assert cni("ADD", legacy, netconf("legacy", annotations)).returncode == 0  # idempotent under legacy too
    assert lab.save(legacy, flavour="legacy") == lab.save(nft, flavour="nft")
    assert cni("CHECK", legacy, netconf("legacy", annotations)).returncode == 0
    assert cni("DEL", legacy, netconf("legacy", annotations)).returncode == 0
    assert lab.save(legacy, flavour="legacy") == "" and lab.save(legacy, 6, flavour="legacy") == ""


def test_auto_detects_legacy_when_the_host_has_legacy_tables(tmp_path, monkeypatch):
    tables = tmp_path / "ip_tables_names"
    monkeypatch.setattr(iptables_restore, "LEGACY_TABLES_FILE", str(tables))
    tables.write_text("nat\nfilter\n")
    assert iptables_restore.detect_flavour("auto") == "legacy"
    tables.write_text("")
    assert iptables_restore.detect_flavour("auto") == "nft"
    tables.unlink()
    assert iptables_restore.detect_flavour("auto") == "nft"
    assert iptables_restore.detect_flavour("legacy") == "legacy"


def test_bad_flavour_in_netconf_is_a_config_error(lab):
    ns = lab.netns("pod")
    error = json.loads(cni("ADD", ns, netconf("iptables-classic")).stdout)
    assert error["code"] == 7 and "iptables_flavour" in error["msg"]
