"""The python-iptables backend programs today's Istio's additions (DNS capture with its raw-table
conntrack zones, excluded interfaces) exactly as the iptables-restore backend does (legacy)."""

import pytest
from test_iptc_backend import lab, netconf  # noqa: F401 - lab is a fixture

from meshcni_testing.netlab import cni

pytestmark = pytest.mark.netns
TODAY = {"proxy.istio.io/config": '{"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}}',
         "traffic.sidecar.istio.io/excludeInterfaces": "net1"}


def test_dns_capture_and_excluded_interfaces_same_as_iptables_restore(lab):  # noqa: F811
    by_iptc, by_restore = lab.netns("iptc"), lab.netns("restore")
    proc = cni("ADD", by_iptc, netconf("iptc", "legacy", TODAY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cni("ADD", by_restore, netconf("iptables-restore", "legacy", TODAY)).returncode == 0
    saved = lab.save(by_iptc, 4, "legacy")
    assert saved == lab.save(by_restore, 4, "legacy")
    assert "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j CT --zone 2" in saved
    assert "-A OUTPUT -o net1 -j RETURN" in saved
    assert cni("ADD", by_iptc, netconf("iptc", "legacy", TODAY)).returncode == 0
    assert lab.save(by_iptc, 4, "legacy") == saved
    assert cni("CHECK", by_iptc, netconf("iptc", "legacy", TODAY)).returncode == 0
    assert cni("DEL", by_iptc, netconf("iptc", "legacy", TODAY)).returncode == 0
    assert lab.save(by_iptc, 4, "legacy") == "" and lab.save(by_iptc, 6, "legacy") == ""
