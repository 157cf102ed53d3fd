"""Killing install-cni at random points never leaves an invalid or partial conf file."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

from test_install_cni import MESHCNI, PRIMARY, env_for, write_like_a_primary

from meshcni_core.install import confdir


def test_sigkill_at_random_points(host):
    rng = random.Random(20261127)
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
        time.sleep(rng.uniform(0.05, 0.9))
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
