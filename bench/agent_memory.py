"""Resident memory of install-cni (installer + node agent + pod cache) idle on a node with 110 pods.

The API stand-in holds 110 pods on this node and 50 elsewhere; memory is read once the agent's
cache holds this node's 110 pods and a few seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.hostlayout import make_host
from meshcni_testing.processes import rss_mib

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin-source", metavar="DIR", help="what install-cni installs, e.g. build/plugin-bundle "
                        "(the self-contained plugin, as in the image); default a one-file stand-in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshcni-mem-") as tmp, FakeApiServer() as api:
        root = Path(tmp)
        for i in range(160):
            api.add_pod(f"ns-{i % 7}", f"pod-{i}", containers=["app", "istio-proxy"],
                        init_containers=["istio-validation"], node="node-1" if i < 110 else "node-2",
                        annotations={"sidecar.istio.io/status": STATUS}, labels={"app": f"app-{i}"})
        with open(api.certs.ca, "rb") as f:
            env = make_host(root, token=api.token, ca_pem=f.read(), api_port=api.url.rsplit(":", 1)[1])
        if args.plugin_source:
            env["MESHCNI_PLUGIN_SOURCE_DIR"] = os.path.abspath(args.plugin_source)
        proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(root / "cni.sock"), "--monitoring-port", "0",
                                 "--monitoring-address", "127.0.0.1", "--log-level", "error"],
                                env=env, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            port = line.rsplit(" ", 1)[1].strip()
            deadline = time.monotonic() + 60
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    if "meshcni_pod_cache_pods 110.0" in r.read().decode():
                        break
                assert time.monotonic() < deadline, "the cache never held the node's 110 pods"
                time.sleep(0.1)
            time.sleep(5)
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    print(json.dumps({"pods_watched": 110, "install_cni_idle_rss_mib": round(rss, 1),
                      "plugin_source": args.plugin_source or "one file"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
