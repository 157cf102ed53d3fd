"""Install-time platform checks: a misconfigured node is reported with its fix and left untouched."""

from __future__ import annotations

import json
import shutil
import subprocess

from test_install_cni import MESHCNI, Running, env_for

from meshcni_core import extensions
from meshcni_core.platforms import checks_of, node_checker
from meshcni_hooks import hookimpl
from meshcni_hooks.types import NodeFacts, Platform

GKE_CONFLIST = "gke-10-gke-ptp.rendered.conflist"
GKE_PLUGINS = ("ptp", "host-local", "portmap", "bandwidth")
OPENSHIFT_TEMPLATE = json.dumps({"cniVersion": "0.3.1", "name": "istio-cni", "type": "istio-cni",
                                 "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})


def gke_installer(host, **overrides):
    return host.installer(node_checker("gke"), platform="gke", **overrides)


def test_gke_refuses_to_chain_when_the_bin_dir_is_not_the_runtimes(host, reference):
    primary = host.conf_dir / "10-gke-ptp.conflist"
    shutil.copy(reference / GKE_CONFLIST, primary)
    before = primary.read_bytes()

    status = gke_installer(host).reconcile()

    assert not status.ready
    [problem] = [p for p in status.problems if p.startswith("gke: ")]
    assert "10-gke-ptp.conflist runs ptp, host-local, portmap, bandwidth" in problem
    assert "values.cni.cniBinDir=/home/kubernetes/bin" in problem
    assert primary.read_bytes() == before  # every pod on the node would fail with istio-cni chained here

    for name in GKE_PLUGINS:  # the runtime's bin dir: GKE's plugins live there
        (host.bin_dir / name).write_text("#!/bin/sh\n")
    status = gke_installer(host).reconcile()
    assert status.ready, status.problems
    assert json.loads(primary.read_text())["plugins"][-1]["type"] == "istio-cni"


def test_gke_names_its_prerequisite_while_no_primary_is_configured(host):
    status = gke_installer(host).reconcile()
    assert any(p.startswith("waiting for the primary CNI") for p in status.problems)
    assert any(p.startswith("gke: no CNI configuration") and "--enable-network-policy" in p for p in status.problems)


def test_without_a_platform_the_core_does_not_second_guess_the_bin_dir(host, reference):
    # CRI-O may search several bin dirs, so a primary's plugins elsewhere are no evidence there.
    shutil.copy(reference / GKE_CONFLIST, host.conf_dir / "10-gke-ptp.conflist")
    assert host.installer().reconcile().ready


def test_openshift_accepts_the_rendered_multus_network(host):
    installer = host.installer(node_checker("openshift"), platform="openshift", chained=False,
                                cni_conf_name="istio-cni.conf", network_config=OPENSHIFT_TEMPLATE)
    status = installer.reconcile()
    assert status.ready, status.problems
    assert json.loads((host.conf_dir / "istio-cni.conf").read_text())["name"] == "istio-cni"


def test_openshift_refuses_a_chained_install_and_leaves_the_primary_alone(host, reference):
    primary = host.conf_dir / "10-gke-ptp.conflist"
    shutil.copy(reference / GKE_CONFLIST, primary)
    before = primary.read_bytes()
    status = host.installer(node_checker("openshift"), platform="openshift").reconcile()
    assert [p for p in status.problems if p.startswith("openshift: ")] == [
        "openshift: Multus runs istio-cni as its own network 'istio-cni', not chained into the default one: "
        "set values.cni.chained=false (CHAINED_CNI_PLUGIN=false)"]
    assert primary.read_bytes() == before


def test_openshift_refuses_a_network_multus_would_not_find(host):
    template = json.dumps({**json.loads(OPENSHIFT_TEMPLATE), "name": "mesh"})
    status = host.installer(node_checker("openshift"), platform="openshift", chained=False,
                             cni_conf_name="istio-cni.conf", network_config=template).reconcile()
    assert any("the netconf template names it 'mesh'" in p for p in status.problems)
    assert not (host.conf_dir / "istio-cni.conf").exists()


class Broken:
    @hookimpl
    def meshcni_install_check(self, node: NodeFacts) -> list[str]:
        raise KeyError("bin_dir")


def test_a_failing_check_keeps_the_node_unconfigured_and_names_the_extension(host, reference):
    primary = host.conf_dir / "10-gke-ptp.conflist"
    shutil.copy(reference / GKE_CONFLIST, primary)
    before = primary.read_bytes()
    pm = extensions.new_manager([])
    pm.register(Broken(), name="acme-platform")
    check = checks_of(pm, Platform(name="acme", defaults={}, provider="acme-platform 1.0"))
    status = host.installer(check, platform="acme").reconcile()
    assert status.problems == ["acme: the install check of acme-platform 1.0 failed: KeyError: 'bin_dir'"]
    assert primary.read_bytes() == before


def test_install_cni_refuses_a_platform_whose_extension_is_missing_but_uninstall_works(host):
    env = {**env_for(host), "MESHCNI_PLATFORM": "aks"}
    proc = subprocess.run([MESHCNI, "install-cni", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "MESHCNI_PLATFORM: 'aks' needs the extension 'platform-aks', which is not installed" in proc.stderr
    assert proc.stdout == ""
    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(host.root / "run" / "cni.sock")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_running_install_cni_reports_gkes_fix_and_recovers_once_the_bin_dir_is_right(host, reference):
    primary = host.conf_dir / "10-gke-ptp.conflist"
    shutil.copy(reference / GKE_CONFLIST, primary)
    agent = Running(host, MESHCNI_PLATFORM="gke")
    try:
        agent.wait_problem("set values.cni.cniBinDir=/home/kubernetes/bin")
        assert "istio-cni" not in primary.read_text()
        for name in GKE_PLUGINS:  # what pointing cniBinDir at GKE's bin dir amounts to on this node
            (host.bin_dir / name).write_text("#!/bin/sh\n")
        agent.wait_ready(True)
        assert json.loads(primary.read_text())["plugins"][-1]["type"] == "istio-cni"
    finally:
        agent.stop()
