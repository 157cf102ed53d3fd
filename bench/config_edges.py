"""What the configuration edges' marshmallow schemas cost, once per process (not on the plugin's path).

Each sample is a fresh interpreter, timed in CPU time (``time.process_time``: on a shared, loaded
machine wall time mostly measures the wait for a core): the import of the schema module (marshmallow included, as the
first user pays it), then one parse: install-cni's environment, ``meshcni repair``'s settings, and
the manifest values (defaults plus the seed's OpenShift ``--set`` line). Medians of ``--runs``.

    .venv/bin/python bench/config_edges.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = r"""
import json, sys, time
clock = time.process_time
t0 = clock()
import marshmallow
t1 = clock()
import meshcni_core.install.environment, meshcni_core.repair.flags, meshcni_core.manifest.values
t2 = clock()
from meshcni_core.install.settings import from_env
from meshcni_core.cli.repair import build_parser, settings
from meshcni_core.manifest.values import resolve
env = {"KUBERNETES_NODE_NAME": "n", "CHAINED_CNI_PLUGIN": "false", "CNI_CONF_NAME": "istio-cni.conf",
       "LOG_LEVEL": "info", "MESHCNI_CONF_LINK_DIRS": "/var/lib/calico"}
t3 = clock(); from_env(env)
t4 = clock(); settings(build_parser().parse_args(["--label-pods"]), {"REPAIR_NODE-NAME": "n"})
t5 = clock(); resolve(sets=SETS)
t6 = clock()
print(json.dumps({"import marshmallow": t1 - t0, "import the schemas": t2 - t1, "install-cni environment": t4 - t3,
                  "repair settings": t5 - t4, "manifest values (OpenShift line)": t6 - t5}))
"""
SETS = ["components.cni.namespace=kube-system", "values.cni.cniBinDir=/var/lib/cni/bin",
        "values.cni.cniConfDir=/etc/cni/multus/net.d", "values.cni.chained=false",
        "values.cni.cniConfFileName=istio-cni.conf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", f"SETS = {SETS!r}\n{PROBE}"], capture_output=True, text=True,
                             check=True).stdout
        for name, seconds in json.loads(out).items():
            samples.setdefault(name, []).append(seconds * 1000)
    for name, values in samples.items():
        print(f"{name:36} median {statistics.median(values):6.1f} ms   min {min(values):6.1f} ms")


if __name__ == "__main__":
    main()
