"""Killing install-cni at random points never leaves an invalid or partial conf file."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

from test_install_cni import MESHCNI, PRIMARY, env_for, write_like_a_primary

from meshcni_core.install import confdir


def time_to_chain(host) -> float:
    """How long a running install-cni takes from exec to a chained entry on this machine now, in a
    scratch copy of the host: the kill points are drawn from that span, so a loaded machine (slower
    start-up) still sees kills before, during and after the writes."""
    scratch_conf, scratch_bin = host.root / "scratch-net.d", host.root / "scratch-bin"
    scratch_conf.mkdir()
    scratch_bin.mkdir()
    conflist = scratch_conf / "10-ptp.conflist"
    write_like_a_primary(conflist, PRIMARY)
    env = {**env_for(host), "MOUNTED_CNI_NET_DIR": str(scratch_conf), "MOUNTED_CNI_BIN_DIR": str(scratch_bin)}
    started = time.monotonic()
    proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(host.root / "scratch.sock"),
                             "--monitoring-port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while json.loads(conflist.read_text())["plugins"][-1]["type"] != "istio-cni":
            assert proc.poll() is None and time.monotonic() - started < 60, "install-cni never chained"
            time.sleep(0.01)
        return time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_at_random_points(host):
    rng = random.Random(20261127)
    span = 1.5 * time_to_chain(host)
    conflist = host.conf_dir / "10-ptp.conflist"
    single = {"cniVersion": "0.3.1", "name": "bridge-net", "type": "bridge"}
    seen_ours = 0
    for round_ in range(25):
        # alternate between a primary list and a primary single .conf the installer must convert
        if round_ % 2:
            write_like_a_primary(conflist, PRIMARY)
        else:
            (host.conf_dir / "05-bridge.conf").write_text(json.dumps(single))
        proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(host.root / f"s{round_}.sock"),
                                 "--monitoring-port", "0"], env=env_for(host),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        names = confdir.conf_files(str(host.conf_dir))
        for name in names:
            conf = confdir.read_conf(str(host.conf_dir), name)
            assert conf.valid, f"round {round_}: {name} is invalid after a kill: {conf.problem}"
        chosen = confdir.discover(str(host.conf_dir)).chosen
        assert chosen is not None
        plugins = chosen.content.get("plugins", [chosen.content])
        seen_ours += plugins[-1].get("type") == "istio-cni"
        for leftover in host.conf_dir.iterdir():
            assert not leftover.name.endswith((".conf", ".conflist", ".json")) or leftover.name in names
        if (host.conf_dir / "05-bridge.conflist").exists() and (host.conf_dir / "05-bridge.conf").exists():
            # killed between writing the list and removing the .conf: the .conf (sorting first) still
            # rules, unchanged, so the node is never without a valid configuration
            assert json.loads((host.conf_dir / "05-bridge.conf").read_text()) == single
    assert seen_ours > 0, "the installer never got to chain anything"
    final = subprocess.run([MESHCNI, "install-cni", "--once"], env=env_for(host), capture_output=True, text=True,
                           timeout=60)
    assert json.loads(final.stdout)["ready"], final.stdout
