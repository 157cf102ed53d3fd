"""Every real-world conflist in tests/data/conflists, chained and unchained."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from tests_install_helpers import CANDIDATES

from meshcni_core.install import chaining, confdir

EXPECTED_ENTRY = {
    "type": "istio-cni", "log_level": "info",
    "kubernetes": {"kubeconfig": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig", "cni_bin_dir": "/opt/cni/bin",
                   "exclude_namespaces": ["istio-system"]},
}


# Reference files that are not primary configurations: refusing them, clearly, is correct.
REFUSED = {
    "cilium-chained-plugin-entry.rendered.json": "has no 'name'",
    "multus-nad-macvlan-conf.config.conf": "has no 'name'",  # the config inside a NetworkAttachmentDefinition
    "istio-cni-plugin-entry-default.conf": "standalone istio-cni file",
    "istio-cni-plugin-entry-default.rendered.conf": "standalone istio-cni file",
    "istio-fixture-plugin-entry.conf": "standalone istio-cni file",
    "istio-fixture-plugin-entry.rendered.conf": "standalone istio-cni file",
}


def without_marker(entry):
    """Our entry minus what meshcni adds to Istio's template (the uninstall marker, require_agent)."""
    return {k: v for k, v in entry.items() if k not in (chaining.MARKER, "require_agent")}


@pytest.mark.parametrize("name", CANDIDATES)
def test_chain_then_uninstall(host, reference, name):
    shutil.copy(reference / name, host.conf_dir / name)
    before = host.files()
    original = confdir.read_conf(str(host.conf_dir), name)
    status = host.installer().reconcile()
    if not original.valid or name in REFUSED:
        reason = REFUSED.get(name) or original.problem
        assert not status.ready and any(reason in p and name in p for p in status.problems), status.problems
        after = {k: v for k, v in host.files().items() if k != "ZZZ-istio-cni-kubeconfig"}
        assert after == before, "no conf file may be written next to one we cannot chain into"
        return
    assert status.ready, status.problems
    result_name = name if name.endswith(".conflist") else name.rsplit(".", 1)[0] + ".conflist"
    files = host.files()
    assert set(files) == {result_name, "ZZZ-istio-cni-kubeconfig"}, files.keys()
    result = confdir.read_conf(str(host.conf_dir), result_name)
    assert result.valid and confdir.discover(str(host.conf_dir)).chosen.name == result_name  # what containerd loads
    doc = result.content
    assert chaining.has_our_entry_last(doc) and without_marker(doc["plugins"][-1]) == EXPECTED_ENTRY
    if name.endswith(".conflist"):
        assert {k: v for k, v in doc.items() if k != "plugins"} == {k: v for k, v in original.content.items() if k != "plugins"}
        assert doc["plugins"][:-1] == [p for p in original.content["plugins"] if p.get("type") != "istio-cni"]
    else:
        assert doc["name"] == original.content["name"] and doc.get("cniVersion") == original.content.get("cniVersion")
        assert doc["plugins"][0] == original.content and len(doc["plugins"]) == 2
    # a second run changes nothing, byte for byte
    raw = (host.conf_dir / result_name).read_bytes()
    again = host.installer().reconcile()
    assert again.actions == [] and (host.conf_dir / result_name).read_bytes() == raw
    # uninstall gives the original back, under its own name
    host.installer().uninstall()
    assert host.files() == before
    assert not any(p.name.startswith(".") for p in host.conf_dir.iterdir()), "temporary files left behind"


def test_every_reference_file_is_considered():
    assert len(CANDIDATES) >= 60


def test_unsupported_version_is_refused(host):
    (host.conf_dir / "10-future.conflist").write_text(json.dumps(
        {"cniVersion": "1.2.0", "name": "future", "plugins": [{"type": "ptp"}]}))
    status = host.installer().reconcile()
    assert not status.ready and "cniVersion 1.2.0 is not supported" in " ".join(status.problems)
    assert json.loads((host.conf_dir / "10-future.conflist").read_text())["plugins"] == [{"type": "ptp"}]


def test_cni_versions_list_is_checked_too(host):
    (host.conf_dir / "10-x.conflist").write_text(json.dumps(
        {"cniVersion": "1.1.0", "cniVersions": ["1.0.0", "9.9.9"], "name": "x", "plugins": [{"type": "ptp"}]}))
    assert "9.9.9" in " ".join(host.installer().reconcile().problems)


def test_waits_for_a_primary_and_writes_nothing(host):
    status = host.installer().reconcile()
    assert not status.ready and "waiting for the primary CNI" in " ".join(status.problems)
    assert [p.name for p in host.conf_dir.iterdir()] == ["ZZZ-istio-cni-kubeconfig"]


def test_json_files_count_and_byte_order_decides(host):
    for name, net in (("05-a.json", "a"), ("10-b.conflist", "b"), ("20-c.conf", "c")):
        body = {"cniVersion": "0.4.0", "name": net, "type": "ptp"}
        if name.endswith(".conflist"):
            body = {"cniVersion": "0.4.0", "name": net, "plugins": [{"type": "ptp"}]}
        (host.conf_dir / name).write_text(json.dumps(body))
    assert host.installer().reconcile().conf_file == "05-a.conflist"
    assert not (host.conf_dir / "05-a.json").exists()
    assert json.loads((host.conf_dir / "10-b.conflist").read_text())["plugins"] == [{"type": "ptp"}]


def test_invalid_file_sorting_first_is_reported(host):
    (host.conf_dir / "00-bad.conflist").write_text("{not json")
    (host.conf_dir / "10-ok.conflist").write_text(json.dumps({"cniVersion": "0.4.0", "name": "ok", "plugins": [{"type": "ptp"}]}))
    status = host.installer().reconcile()
    assert status.conf_file == "10-ok.conflist"
    assert not status.ready and "containerd refuses to load any network" in " ".join(status.problems)


def test_stale_entry_is_replaced_not_duplicated(host):
    (host.conf_dir / "10-x.conflist").write_text(json.dumps({"cniVersion": "0.4.0", "name": "x", "plugins": [
        {"type": "ptp"}, {"type": "istio-cni", "old": True}, {"type": "portmap"}]}))
    host.installer().reconcile()
    plugins = json.loads((host.conf_dir / "10-x.conflist").read_text())["plugins"]
    assert [p["type"] for p in plugins] == ["ptp", "portmap", "istio-cni"] and "old" not in plugins[-1]


def test_standalone_writes_only_its_own_file(host):
    (host.conf_dir / "10-calico.conflist").write_text(json.dumps({"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}))
    before = (host.conf_dir / "10-calico.conflist").read_bytes()
    status = host.installer(chained=False).reconcile()
    assert status.ready and status.conf_file == "YYY-istio-cni.conf"
    own = json.loads((host.conf_dir / "YYY-istio-cni.conf").read_text())
    assert own["type"] == "istio-cni" and own["attachment"] == "secondary"
    assert (host.conf_dir / "10-calico.conflist").read_bytes() == before
    host.installer(chained=False).uninstall()
    assert sorted(os.listdir(host.conf_dir)) == ["10-calico.conflist"]


def test_standalone_multus_name(host):
    status = host.installer(chained=False, cni_conf_name="istio-cni.conf").reconcile()
    assert status.ready and (host.conf_dir / "istio-cni.conf").exists()


def test_kubeconfig_server_url_is_parseable_by_python_and_go():
    from urllib.parse import urlsplit

    from meshcni_core.install.kubeconfig import server_url

    assert server_url("https", "10.110.0.1", "443") == "https://10.110.0.1:443"  # Istio: https://[10.110.0.1]:443
    assert server_url("https", "fd00::1", "443") == "https://[fd00::1]:443"
    assert server_url("https", "api.example.com", "6443") == "https://api.example.com:6443"
    for url in ("https://10.110.0.1:443", "https://[fd00::1]:443"):
        assert urlsplit(url).port == 443


def test_kubeconfig_works_with_the_real_client(host):
    """Token and CA from the service account; the real kubernetes client reads a pod with it."""
    import shutil as sh

    from meshcni_core.pods.lookup import fetch_pod
    from meshcni_testing.apiserver import FakeApiServer

    with FakeApiServer() as api:
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"])
        sa = host.root / "serviceaccount"
        (sa / "token").write_text(api.token + "\n")
        sh.copy(api.certs.ca, sa / "ca.crt")
        port = api.url.rsplit(":", 1)[1]
        (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(
            {"cniVersion": "0.4.0", "name": "n", "plugins": [{"type": "ptp"}]}))
        status = host.installer(service_host="127.0.0.1", service_port=port).reconcile()
        assert status.ready, status.problems
        kubeconfig = host.conf_dir / "ZZZ-istio-cni-kubeconfig"
        assert api.token not in " ".join(status.actions)  # the token is never logged
        pod = fetch_pod(str(kubeconfig), "default", "app-1", timeout=5)
    assert pod.containers == ("app", "istio-proxy")
