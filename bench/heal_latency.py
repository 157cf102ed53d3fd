"""How fast install-cni puts our entry back after the primary CNI rewrites its conflist.

The primary's rewrite is a temp file plus rename in the conf dir (as CNI agents do); the time is
measured until the file on disk has our entry last again. Edit-war detection is lifted for the
run (MESHCNI_EDIT_WAR_REWRITES), since a hundred rewrites in a row is exactly what it detects.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
PRIMARY = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}
TEMPLATE = json.dumps({"type": "istio-cni", "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})


def ours_last(path: Path) -> bool:
    try:
        return json.loads(path.read_text())["plugins"][-1]["type"] == "istio-cni"
    except (ValueError, FileNotFoundError, KeyError, IndexError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshcni-heal-") as tmp:
        root = Path(tmp)
        conf, bins, source, sa = (root / d for d in ("net.d", "bin", "plugin", "sa"))
        for d in (conf, bins, source, sa):
            d.mkdir()
        (source / "istio-cni").write_text("#!/bin/sh\n")
        (sa / "token").write_text("t")
        (sa / "ca.crt").write_text("ca")
        env = {**os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins),
               "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
               "CNI_NETWORK_CONFIG": TEMPLATE, "MESHCNI_EDIT_WAR_REWRITES": "1000000"}
        target = conf / "10-ptp.conflist"
        target.write_text(json.dumps(PRIMARY))
        proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(root / "cni.sock"), "--monitoring-port", "0",
                                 "--log-level", "error"], env=env, stderr=subprocess.DEVNULL)
        try:
            while not ours_last(target):
                time.sleep(0.01)
            samples = []
            for i in range(args.rounds):
                temp = conf / f".10-ptp.conflist.{i}"
                temp.write_text(json.dumps(PRIMARY))
                started = time.perf_counter()
                os.rename(temp, target)
                while not ours_last(target):
                    time.sleep(0.0005)
                samples.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    ordered = sorted(samples)

    def quantile(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    result = {
        "rounds": len(ordered), "median_ms": round(statistics.median(ordered), 1), "p90_ms": quantile(0.9),
        "p99_ms": quantile(0.99), "max_ms": round(ordered[-1], 1), "install_cni_rss_mib": round(rss / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
