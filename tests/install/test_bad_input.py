"""Bad input to the installer: a clear problem, nothing broken on the node."""

from __future__ import annotations

import json
import subprocess

import pytest

PRIMARY = {"cniVersion": "0.4.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}]}


def write_primary(host):
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(PRIMARY))


@pytest.mark.parametrize(("template", "message"), [
    ('{"type": "istio-cni", "log_level": __LOG_LEVEL__}', "not valid JSON after substitution"),
    ('{"type": "calico"}', 'must be a JSON object with "type": "istio-cni"'),
    ('{"type": "istio-cni", "token": "__SERVICEACCOUNT_TOKEN__"}', "world-readable"),
])
def test_malformed_template(host, template, message):
    write_primary(host)
    status = host.installer(network_config=template).reconcile()
    assert not status.ready and any(message in p for p in status.problems), status.problems
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text()) == PRIMARY


def test_no_template(host):
    write_primary(host)
    status = host.installer(network_config="").reconcile()
    assert any("no netconf template" in p for p in status.problems)


def test_missing_ca(host):
    write_primary(host)
    status = host.installer(kube_ca_file=str(host.root / "nope.crt")).reconcile()
    assert any("CA file" in p and "SKIP_TLS_VERIFY" in p for p in status.problems)
    ok = host.installer(kube_ca_file=str(host.root / "nope.crt"), skip_tls_verify=True).reconcile()
    assert ok.ready, ok.problems
    assert json.loads((host.conf_dir / "ZZZ-istio-cni-kubeconfig").read_text())["clusters"][0]["cluster"][
        "insecure-skip-tls-verify"] is True


def test_read_only_bin_dir(host):
    write_primary(host)
    subprocess.run(["mount", "--bind", "-o", "ro", str(host.bin_dir), str(host.bin_dir)], check=True)
    try:
        status = host.installer().reconcile()
    finally:
        subprocess.run(["umount", str(host.bin_dir)], check=True)
    assert any("not writable" in p for p in status.problems)
    # the plugin is not there, so no configuration may name it
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text()) == PRIMARY


def test_skip_and_update_binaries(host):
    write_primary(host)
    (host.bin_dir / "istio-cni").write_text("older\n")
    host.installer(update_binaries=False).reconcile()
    assert (host.bin_dir / "istio-cni").read_text() == "older\n"
    host.installer(skip_binaries=("istio-cni",)).reconcile()
    assert (host.bin_dir / "istio-cni").read_text() == "older\n"
    host.installer().reconcile()
    assert (host.bin_dir / "istio-cni").read_text().startswith("#!/bin/sh")
