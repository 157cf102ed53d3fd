"""The istio-iptables drop-in's flags from today's istio-iptables: ``-c``/``--istio-exclude-interfaces``,
``--redirect-dns``, ``--capture-all-dns``. The dry-run output is compared with our own expected
files (tests/data/istio-iptables), written from the facts of today's Istio's golden files
(``cni/pkg/plugin/testdata/dns.txt.golden``, ``tools/istio-iptables/pkg/capture/testdata/basic-exclude-nic.golden``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from meshcni_core.cli.istio_iptables import nameservers
from test_istio_iptables import PLUGIN_DEFAULT_FLAGS, lab, plugin_add, tool  # noqa: F401 - lab is a fixture

pytestmark = pytest.mark.netns
EXPECTED = Path(__file__).parent / "data" / "istio-iptables"
DNS_ON = 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n'
TODAY_FLAGS = ["--redirect-dns", "--capture-all-dns", "-c", "not-istio-nic"]


def test_same_rules_as_the_plugin_for_dns_capture_and_excluded_interfaces(lab):  # noqa: F811
    by_plugin, by_tool = lab.netns("plugin"), lab.netns("tool")
    plugin_add(by_plugin, {"proxy.istio.io/config": DNS_ON, "traffic.sidecar.istio.io/excludeInterfaces": "not-istio-nic"})
    proc = tool(by_tool, *PLUGIN_DEFAULT_FLAGS, *TODAY_FLAGS)
    assert proc.returncode == 0, proc.stderr
    for family in (4, 6):
        assert lab.save(by_tool, family) == lab.save(by_plugin, family)
    assert "-A OUTPUT -o not-istio-nic -j RETURN" in lab.save(by_tool)
    assert "-j CT --zone 2" in lab.save(by_tool)


@pytest.mark.parametrize(("case", "flags"), [
    ("dns-capture-all", ["--redirect-dns", "--capture-all-dns"]),
    ("dns-capture-all-env", []),  # ISTIO_META_DNS_CAPTURE and CAPTURE_ALL_DNS from the environment
    ("exclude-nic", ["-c", "not-istio-nic"]),
])
def test_dry_run_matches_the_expected_file(lab, request, case, flags):  # noqa: F811
    ns = lab.netns("pod")
    env = {"ISTIO_META_DNS_CAPTURE": "true", "CAPTURE_ALL_DNS": "true"} if case.endswith("-env") else {}
    proc = tool(ns, *PLUGIN_DEFAULT_FLAGS, *flags, "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    path = EXPECTED / f"{case.removesuffix('-env')}.dryrun"
    if request.config.getoption("--update-golden") and not case.endswith("-env"):
        path.write_text(proc.stdout)
    assert proc.stdout == path.read_text()
    assert lab.save(ns) == ""


def test_redirect_dns_false_and_unset_program_no_dns_rules(lab):  # noqa: F811
    ns = lab.netns("pod")
    for flags in ([], ["--redirect-dns=false", "--capture-all-dns"]):
        proc = tool(ns, *PLUGIN_DEFAULT_FLAGS, *flags, "--dry-run")
        assert proc.returncode == 0 and "15053" not in proc.stdout and "*raw" not in proc.stdout


@pytest.mark.parametrize(("args", "flag", "value"), [
    (["--redirect-dns=maybe"], "--redirect-dns", "maybe"),
    (["--redirect-dns", "--capture-all-dns=2"], "--capture-all-dns", "2"),
    (["-c", "eth0 -j ACCEPT"], "-c", "eth0 -j ACCEPT"),
    (["--istio-exclude-interfaces", "eth0,"], "-c", "eth0,"),
])
def test_bad_values_are_usage_errors(lab, args, flag, value):  # noqa: F811
    ns = lab.netns("pod")
    proc = tool(ns, *args)
    assert proc.returncode == 2 and f"invalid {flag} value {value!r}" in proc.stderr
    assert lab.save(ns) == "" and lab.save(ns, 6) == ""


def test_nameservers_are_read_from_resolv_conf(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
                      "nameserver not-an-address\nnameserver 127.0.0.53\noptions edns0\n")
    assert nameservers(str(resolv)) == (ipaddress.ip_network("127.0.0.53/32"), ipaddress.ip_network("fe80::1/128"))
