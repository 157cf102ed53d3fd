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

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.hostlayout import PRIMARY, make_host
from meshcni_testing.processes import rss_mib

MESHCNI = str(Path(sys.executable).with_name("meshcni"))


def ours_last(path: Path) -> bool:
    try:
        return json.loads(path.read_text())["plugins"][-1]["type"] == "istio-cni"
    except (ValueError, FileNotFoundError, KeyError, IndexError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--plugin-source", metavar="DIR", help="what install-cni installs, e.g. build/plugin-bundle "
                        "(the self-contained plugin, as in the image); default a one-file stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshcni-heal-") as tmp, FakeApiServer() as api:
        root = Path(tmp)
        with open(api.certs.ca, "rb") as f:  # a reachable API server, so the agent's pod cache is healthy
            env = make_host(root, token=api.token, ca_pem=f.read(), api_port=api.url.rsplit(":", 1)[1],
                            MESHCNI_EDIT_WAR_REWRITES="1000000")
        if args.plugin_source:
            env["MESHCNI_PLUGIN_SOURCE_DIR"] = os.path.abspath(args.plugin_source)
        conf = root / "net.d"
        target = conf / "10-ptp.conflist"
        proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(root / "cni.sock"), "--monitoring-port", "0",
                                 "--log-level", "error"], env=env, stderr=subprocess.DEVNULL)
        try:
            while not ours_last(target):
                time.sleep(0.01)
            time.sleep(3)  # steady state: the agent's pod cache has listed and is watching
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
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    ordered = sorted(samples)

    def quantile(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    result = {
        "rounds": len(ordered), "median_ms": round(statistics.median(ordered), 1), "p90_ms": quantile(0.9),
        "p99_ms": quantile(0.99), "max_ms": round(ordered[-1], 1), "install_cni_rss_mib": round(rss, 1),
        "plugin_source": args.plugin_source or "one file",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
