"""The repair controller at scale: 5,000 pods listed and watched, 1,000 status updates a minute.

`meshcni repair --run-as-daemon --label-pods` runs as its own process against the API stand-in
(cluster-wide, no node filter, so it watches all 5,000). 5 % of the pods start broken; during the
run a random pod's validation status flips every 60 ms (1,000 a minute), about half of the flips
to broken. Reported: whether the queue drained (every pod broken at the end carries the label),
how long after the last update that took, the controller's CPU use during the updates and its
resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.processes import rss_mib

MESHCNI = str(Path(sys.executable).with_name("meshcni"))
LABEL = "cni.istio.io/uninitialized"
CONTAINER = {"name": "istio-validation", "image": "istio/proxyv2:1.6.0", "imageID": "sha256:1", "ready": False}
BROKEN = {"initContainerStatuses": [{**CONTAINER, "restartCount": 1,
                                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}}]}
HEALTHY = {"initContainerStatuses": [{**CONTAINER, "restartCount": 0,
                                      "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broken_unlabelled(api: FakeApiServer) -> int:
    """Pods whose validation status is the failed one and that carry no label yet."""
    return api.count_pods(lambda p: "lastState" in p["status"]["initContainerStatuses"][0]
                          and LABEL not in p["metadata"]["labels"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    rng = random.Random(5000)
    with tempfile.TemporaryDirectory() as tmp, FakeApiServer() as api:
        for i in range(args.pods):
            api.add_pod(f"ns-{i % 50}", f"pod-{i}", containers=["app", "istio-proxy"],
                        init_containers=["istio-validation"], node=f"node-{i % 45}",
                        annotations={"sidecar.istio.io/status": "{}"})
            api.update_pod(f"ns-{i % 50}", f"pod-{i}", status=BROKEN if rng.random() < 0.05 else HEALTHY)
        api.compact()  # a fresh cluster: no event history before the controller's list
        proc = subprocess.Popen([MESHCNI, "repair", "--kubeconfig", api.write_kubeconfig(f"{tmp}/kc"),
                                 "--run-as-daemon", "--label-pods", "--log-level", "warn"])
        try:
            started = time.monotonic()
            while broken_unlabelled(api):
                assert time.monotonic() - started < 300, "the initial backlog never drained"
                time.sleep(0.2)
            initial_drain = time.monotonic() - started
            cpu_before, t0 = cpu_seconds(proc.pid), time.monotonic()
            updates = 0
            while time.monotonic() - t0 < args.seconds:
                i = rng.randrange(args.pods)
                api.update_pod(f"ns-{i % 50}", f"pod-{i}", status=BROKEN if rng.random() < 0.5 else HEALTHY)
                updates += 1
                time.sleep(max(0.0, t0 + updates * 0.06 - time.monotonic()))
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(proc.pid) - cpu_before) / elapsed
            last_update = time.monotonic()
            while broken_unlabelled(api):
                assert time.monotonic() - last_update < 120, "the queue did not drain"
                time.sleep(0.05)
            drain_after_last = time.monotonic() - last_update
            result = {
                "pods": args.pods, "updates": updates, "updates_per_minute": round(updates / elapsed * 60),
                "initial_backlog_drained_s": round(initial_drain, 1),
                "queue_drained_after_last_update_s": round(drain_after_last, 2),
                "controller_cpu_cores": round(cpu, 3), "controller_rss_mib": round(rss_mib(proc.pid), 1),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
