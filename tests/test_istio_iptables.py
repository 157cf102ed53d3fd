"""The istio-iptables drop-in: the plugin's rules from Istio's flags, dry-run, cleanup, validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshcni_core import netns
from meshcni_core.validation import EXIT_NOT_REDIRECTED, validate
from meshcni_testing.harness import EVERY_CORE_REDIRECT_ANNOTATION
from meshcni_testing.netlab import cni, mesh_netconf

# The golden example: every core annotation plus the first-party extensions' own.
EVERY_REDIRECT_ANNOTATION = {**EVERY_CORE_REDIRECT_ANNOTATION, "sidecar.istio.io/interceptionMode": "TPROXY",
                             "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}

pytestmark = pytest.mark.netns
TOOL = str(Path(sys.executable).with_name("istio-iptables"))
# What Istio 1.6's plugin passes for a pod with only the status annotation (reference §3.2).
PLUGIN_DEFAULT_FLAGS = ["-p", "15001", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*",
                        "-d", "15020,15021,15090", "-o", "15020", "-x", "", "-k", ""]
ANNOTATED_FLAGS = ["-p", "15001", "-u", "1337", "-m", "TPROXY", "-i", "10.0.0.0/8,fd00::/8", "-b", "8080,9090",
                   "-d", "3306,15020,15021,15090", "-o", "5432", "-x", "10.96.0.1/32", "-k", "net1"]


@pytest.fixture
def lab(netns_lab):
    return netns_lab


def tool(ns: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISTIO_", "ENVOY_"))}
    return subprocess.run(["nsenter", f"--net={ns}", TOOL, *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=60)


def plugin_add(ns: str, annotations: dict[str, str]) -> None:
    proc = cni("ADD", ns, mesh_netconf(annotations))
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(("annotations", "flags"), [({}, PLUGIN_DEFAULT_FLAGS), (EVERY_REDIRECT_ANNOTATION, ANNOTATED_FLAGS)],
                         ids=["default", "annotated"])
def test_same_rules_as_the_plugin(lab, annotations, flags):
    by_plugin, by_tool = lab.netns("plugin"), lab.netns("tool")
    plugin_add(by_plugin, annotations)
    proc = tool(by_tool, *flags)
    assert proc.returncode == 0, proc.stderr
    for family in (4, 6):
        assert lab.save(by_tool, family) == lab.save(by_plugin, family)
    assert lab.save(by_tool) != ""


def test_script_defaults_capture_nothing_but_exempt_proxy_and_root(lab):
    ns = lab.netns("pod")
    assert tool(ns).returncode == 0
    rules = lab.save(ns)
    assert "ISTIO_INBOUND" not in rules and "-j ISTIO_REDIRECT" not in rules.replace("-A ISTIO_REDIRECT", "")
    assert "--uid-owner 1337" in rules and "--uid-owner 0" in rules


def test_dry_run_changes_nothing(lab):
    ns = lab.netns("pod")
    proc = tool(ns, *PLUGIN_DEFAULT_FLAGS, "--dry-run")
    assert proc.returncode == 0
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in proc.stdout and ":ISTIO_INBOUND - [0:0]" in proc.stdout
    assert lab.save(ns) == ""


def test_cleanup_removes_everything(lab):
    ns = lab.netns("pod")
    assert tool(ns, *ANNOTATED_FLAGS).returncode == 0
    assert tool(ns, "--cleanup").returncode == 0
    assert lab.save(ns) == "" and lab.save(ns, 6) == ""
    assert "fwmark" not in subprocess.run(["ip", "-n", lab.name_of(ns), "rule"], capture_output=True, text=True).stdout


@pytest.mark.parametrize(("flag", "value"), [
    ("-b", "80,http"), ("-i", "10.0.0.0/33"), ("-m", "NONE"), ("-p", "99999"),
    ("-x", "fd00::%1 -j ACCEPT\nCOMMIT\n*filter/8"), ("-k", "eth0\n"), ("-u", "\u0661\u0663\u0663\u0667"),
    ("-g", "1337 -j ACCEPT"),
])
def test_bad_values_are_usage_errors(lab, flag, value):
    ns = lab.netns("pod")
    proc = tool(ns, flag, value)
    assert proc.returncode == 2 and f"invalid {flag} value {value!r}" in proc.stderr
    assert lab.save(ns) == "" and lab.save(ns, 6) == ""


@pytest.mark.parametrize(("name", "value"), [
    ("ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "254"),  # the pod's main table: its routes would be flushed
    ("ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "133 "),
    ("ISTIO_INBOUND_TPROXY_MARK", "0"),
    ("ISTIO_INBOUND_TPROXY_MARK", "4294967296"),
])
def test_tproxy_settings_are_numbers_in_range(lab, name, value):
    ns = lab.netns("pod")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISTIO_", "ENVOY_"))}
    proc = subprocess.run(["nsenter", f"--net={ns}", TOOL, "-m", "TPROXY", "-b", "*"], capture_output=True,
                          text=True, env={**env, name: value}, timeout=60)
    assert proc.returncode == 2 and f"invalid {name} value {value!r}" in proc.stderr
    assert lab.save(ns) == "" and lab.save(ns, 4, "nft") == ""


def _validate_as_proxy(ns: str, timeout: float) -> int:
    """Run the validator as the proxy's uid (1337) inside ``ns``, as the init container does."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with netns.entered(ns):
                os.setgid(1337)
                os.setuid(1337)
                code = validate(timeout=timeout, interval=0.2).exit_code
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_validation_passes_when_the_plugin_ran(lab):
    ns = lab.netns("pod")
    plugin_add(ns, {})
    assert _validate_as_proxy(ns, timeout=5) == 0


def test_validation_fails_with_126_when_it_did_not(lab):
    ns = lab.netns("pod")
    assert _validate_as_proxy(ns, timeout=1) == EXIT_NOT_REDIRECTED


def test_validation_cli_reports_the_timeout(lab):
    ns = lab.netns("pod")
    proc = tool(ns, "--run-validation", "--skip-rule-apply", "--probe-timeout", "0.5")
    assert proc.returncode == 126 and "validation timeout" in proc.stderr
