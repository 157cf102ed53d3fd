"""What the installer takes from the conf dir: names and links a conf-dir writer controls.

Anyone who can write the node's conf dir (another CNI's DaemonSet, an operator) can put any JSON
there, including a forged meshcni marker, and any symlink. Neither may make the installer (root,
with the host's bin dirs mounted) write outside the conf dir or a directory the admin allowed.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from meshcni_core.install import chaining
from meshcni_core.install.settings import SettingsError, from_env

PTP = {"cniVersion": "0.4.0", "name": "k8s-pod-network", "type": "ptp"}
CALICO = {"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [{"type": "calico"}, {"type": "portmap"}]}


def forged_list(converted_from: str) -> dict:
    """What our conversion of a .conf looks like, with the restore name chosen by someone else."""
    ours = {"type": "istio-cni", chaining.MARKER: {"converted_from": converted_from}}
    return {"cniVersion": "0.4.0", "name": "k8s-pod-network", "plugins": [PTP, ours]}


@pytest.mark.parametrize("value", [
    "../bin/bridge",  # the confirmed hole: uninstall overwrote a CNI binary
    "../../../opt/cni/bin/bridge",
    "/etc/passwd.conf",
    "sub/10-ptp.conf",
    ".10-ptp.conf",  # hidden: no runtime reads it, so "restoring" there loses the network
    "10-ptp.conf\0",
    "10-ptp.sh",  # not a name the runtime loads
    "05-other.conf",  # another file in the conf dir: our conversion keeps the base name
])
def test_uninstall_refuses_a_restore_name_that_is_not_the_lists_own_conf(host, caplog, value):
    bridge = host.bin_dir / "bridge"
    bridge.write_bytes(b"\x7fELF the real bridge plugin")
    other = host.conf_dir / "05-other.conf"
    other.write_text(json.dumps({**PTP, "name": "other"}))
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(forged_list(value)))
    with caplog.at_level(logging.WARNING, logger="meshcni.install"):
        done = host.installer().uninstall()
    assert bridge.read_bytes() == b"\x7fELF the real bridge plugin"
    assert json.loads(other.read_text()) == {**PTP, "name": "other"}
    assert not (host.root / "etc").exists() and not (host.conf_dir / "sub").exists()
    # what it does instead: our entry leaves the list in place, so no pod names a removed plugin
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text())["plugins"] == [PTP]
    assert sorted(os.listdir(host.conf_dir)) == ["05-other.conf", "10-ptp.conflist"]
    refusal = [r.getMessage() for r in caplog.records if "converted_from" in r.getMessage()]
    assert refusal and "10-ptp.conflist" in refusal[0] and repr(value) in refusal[0], caplog.text
    assert any("10-ptp.conflist" in line and "left as a list" in line for line in done), done


def test_uninstall_still_restores_a_genuine_conversion_next_to_a_refused_one(host):
    (host.conf_dir / "10-ptp.conf").write_text(json.dumps(PTP))
    host.installer().reconcile()
    (host.conf_dir / "20-forged.conflist").write_text(json.dumps(forged_list("../bin/bridge")))
    host.installer().uninstall()
    assert json.loads((host.conf_dir / "10-ptp.conf").read_text()) == PTP
    assert not (host.conf_dir / "10-ptp.conflist").exists()
    assert json.loads((host.conf_dir / "20-forged.conflist").read_text())["plugins"] == [PTP]


@pytest.mark.parametrize(("variable", "value"), [
    ("KUBECFG_FILE_NAME", "../../opt/cni/bin/bridge"),
    ("KUBECFG_FILE_NAME", ".hidden-kubeconfig"),
    ("CNI_CONF_NAME", "../10-calico.conflist"),
    ("CNI_CONF_NAME", "10-calico.conflist\0"),
    ("CNI_CONF_NAME", "istio-cni.sh"),
])
def test_file_names_from_settings_are_plain_names_in_the_conf_dir(variable, value):
    with pytest.raises(SettingsError, match=variable):
        from_env({variable: value})


def test_a_link_at_the_kubeconfig_name_is_replaced_not_followed(host):
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(CALICO))
    victim = host.bin_dir / "bridge"
    victim.write_bytes(b"bridge")
    (host.conf_dir / "ZZZ-istio-cni-kubeconfig").symlink_to(victim)
    assert host.installer().reconcile().ready
    kubeconfig = host.conf_dir / "ZZZ-istio-cni-kubeconfig"
    assert not kubeconfig.is_symlink() and "tok-123" in kubeconfig.read_text()
    assert victim.read_bytes() == b"bridge" and oct(victim.stat().st_mode & 0o777) != "0o600"


def link_primary(host, target_dir_name: str, target_name: str = "10-calico.conflist", doc: dict = CALICO,
                 link_name: str = "10-calico.conflist"):
    """The Calico operator's layout: the conf dir holds only a link into the provider's own dir."""
    target_dir = host.root / target_dir_name
    target_dir.mkdir(exist_ok=True)
    target = target_dir / target_name
    target.write_text(json.dumps(doc))
    link = host.conf_dir / link_name
    link.symlink_to(target)
    return link, target


def test_a_symlinked_primary_stays_a_link_through_install_and_uninstall(host):
    link, target = link_primary(host, "calico")
    installer = host.installer(conf_link_dirs=(str(host.root / "calico"),))
    status = installer.reconcile()
    assert status.ready and status.conf_file == "10-calico.conflist", status.problems
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert chaining.has_our_entry_last(json.loads(target.read_text()))  # the runtime reads it through the link
    assert not any(p.name.startswith(".") for p in target.parent.iterdir()), "temporary files left behind"
    # the provider rewrites its own file: healed through the link again
    target.write_text(json.dumps(CALICO))
    assert installer.reconcile().ready and chaining.has_our_entry_last(json.loads(target.read_text()))
    installer.uninstall()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == CALICO
    assert sorted(os.listdir(host.conf_dir)) == ["10-calico.conflist"]


@pytest.mark.parametrize(("where", "target_name", "expected"), [
    ("calico", "10-calico.conflist", "outside the conf dir and MESHCNI_CONF_LINK_DIRS"),  # dir not allowed
    ("bin", "10-calico.conflist", "outside the conf dir and MESHCNI_CONF_LINK_DIRS"),
    ("allowed", "nodename", "not a conf file of the same kind"),  # an allowed dir, but not a conflist
    ("allowed", "10-calico.conf", "not a conf file of the same kind"),
])
def test_a_link_to_anywhere_else_is_neither_read_nor_written_and_nothing_is_chained(host, where, target_name,
                                                                                     expected):
    link, target = link_primary(host, where, target_name)
    (host.conf_dir / "20-next.conflist").write_text(json.dumps(CALICO))  # the runtime does not load it
    before = target.read_bytes()
    status = host.installer(conf_link_dirs=(str(host.root / "allowed"),)).reconcile()
    assert not status.ready and any(link.name in p and expected in p for p in status.problems), status.problems
    assert link.is_symlink() and target.read_bytes() == before
    assert json.loads((host.conf_dir / "20-next.conflist").read_text()) == CALICO, "chained into a file not in use"


def test_a_link_inside_the_conf_dir_is_written_through(host):
    (host.conf_dir / "calico.conflist.real").write_text(json.dumps(CALICO))  # not a name the runtime loads
    link = host.conf_dir / "10-calico.conflist"
    link.symlink_to("99-calico-real.conflist")
    (host.conf_dir / "calico.conflist.real").rename(host.conf_dir / "99-calico-real.conflist")
    assert host.installer().reconcile().ready
    assert link.is_symlink() and chaining.has_our_entry_last(json.loads(link.read_text()))


def test_a_symlinked_single_plugin_conf_is_refused_not_converted(host):
    link, target = link_primary(host, "calico", "10-calico.conf", PTP, link_name="10-calico.conf")
    status = host.installer(conf_link_dirs=(str(host.root / "calico"),)).reconcile()
    assert not status.ready and any("replace the link" in p for p in status.problems), status.problems
    assert link.is_symlink() and json.loads(target.read_text()) == PTP
    assert sorted(os.listdir(host.conf_dir)) == ["10-calico.conf", "ZZZ-istio-cni-kubeconfig"]


def test_a_link_the_installer_cannot_follow_stops_discovery_with_a_clear_problem(host):
    """An absolute link into a host directory not mounted at the same path in the container."""
    (host.conf_dir / "10-calico.conflist").symlink_to(host.root / "allowed" / "10-calico.conflist")
    (host.conf_dir / "20-next.conflist").write_text(json.dumps(CALICO))
    status = host.installer(conf_link_dirs=(str(host.root / "allowed"),)).reconcile()
    assert not status.ready and any("cannot reach" in p and "mount its directory" in p for p in status.problems)
    assert json.loads((host.conf_dir / "20-next.conflist").read_text()) == CALICO


def test_uninstall_cni_keeps_the_bin_dir_safe_from_a_forged_entry(host):
    """The confirmed hole, through the real executable: uninstall overwrote /opt/cni/bin/bridge."""
    import subprocess

    from test_install_cni import MESHCNI, env_for

    bridge = host.bin_dir / "bridge"
    bridge.write_bytes(b"\x7fELF the real bridge plugin")
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(forged_list("../bin/bridge")))
    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(host.root / "run" / "cni.sock")], env=env_for(host), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert bridge.read_bytes() == b"\x7fELF the real bridge plugin"
    assert "converted_from '../bin/bridge' in 10-ptp.conflist refused" in proc.stderr, proc.stderr
    assert "left as a list" in proc.stdout
    assert json.loads((host.conf_dir / "10-ptp.conflist").read_text())["plugins"] == [PTP]


def test_install_cni_heals_through_the_link_and_uninstall_cni_keeps_it(host):
    """The running installer watches the provider's directory: its rewrite is healed at once."""
    import subprocess
    import time

    from test_install_cni import MESHCNI, Running, env_for

    link, target = link_primary(host, "calico")
    running = Running(host, MESHCNI_CONF_LINK_DIRS=str(host.root / "calico"))
    try:
        running.wait_ready(True)
        assert link.is_symlink() and chaining.has_our_entry_last(json.loads(target.read_text()))
        time.sleep(1.5)  # longer than a reconcile triggered by our own write; far below the 60 s resync
        temp = target.with_name(".10-calico.conflist.provider")
        temp.write_text(json.dumps(CALICO))
        os.rename(temp, target)  # the provider rewrites its own file, as Calico does
        deadline = time.monotonic() + 5
        while not chaining.has_our_entry_last(json.loads(target.read_text())):
            assert time.monotonic() < deadline, "not healed through the link"
            time.sleep(0.02)
        assert link.is_symlink()
    finally:
        running.stop()
    proc = subprocess.run([MESHCNI, "uninstall-cni", "--socket", str(host.root / "run" / "cni.sock")], env={**env_for(host), "MESHCNI_CONF_LINK_DIRS": str(target.parent)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and json.loads(target.read_text()) == CALICO
