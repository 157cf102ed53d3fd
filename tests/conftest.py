"""Fixtures shared by several test modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from meshcni_testing.apiserver import FakeApiServer

MESHCNI = str(Path(sys.executable).with_name("meshcni"))


@pytest.fixture
def install_cni(tmp_path):
    """``meshcni install-cni`` with its pod cache, against the API stand-in; yields (api, netconf,
    a function returning how many pods the cache holds)."""
    conf, bins, source, sa = (tmp_path / d for d in ("net.d", "bin", "plugin", "sa"))
    for d in (conf, bins, source, sa):
        d.mkdir()
    (source / "istio-cni").write_text("#!/bin/sh\n")
    (conf / "10-ptp.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "ptp"}]}))
    with FakeApiServer() as api:
        (sa / "token").write_text(api.token)
        shutil.copy(api.certs.ca, sa / "ca.crt")
        socket_path = str(tmp_path / "run" / "cni.sock")
        env = {**os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins),
               "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": api.url.rsplit(":", 1)[1],
               "KUBERNETES_NODE_NAME": "node-1",
               "CNI_NETWORK_CONFIG": json.dumps({"type": "istio-cni", "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})}
        proc = subprocess.Popen([MESHCNI, "install-cni", "--socket", socket_path, "--monitoring-port", "0",
                                 "--monitoring-address", "127.0.0.1"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            while "monitoring on " not in line:
                assert line, "install-cni exited"
                line = proc.stderr.readline()
            port = line.rsplit(" ", 1)[1].strip()
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # a full pipe would block it

            def cached_pods() -> int:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    for metric in r.read().decode().splitlines():
                        if metric.startswith("meshcni_pod_cache_pods "):
                            return int(float(metric.split()[1]))
                return -1

            deadline = time.monotonic() + 30
            while not os.path.exists(conf / "10-ptp.conflist") or "istio-cni" not in (conf / "10-ptp.conflist").read_text():
                assert time.monotonic() < deadline, "install-cni did not chain the plugin"
                time.sleep(0.05)
            entry = json.loads((conf / "10-ptp.conflist").read_text())["plugins"][-1]
            netconf = {**entry, "cniVersion": "1.0.0", "name": "n", "agent_socket": socket_path,
                       "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}}
            yield api, netconf, cached_pods
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture
def backend() -> str:
    """The apply backend of a network test (``lab`` of test_redirect_traffic reads it); tests marked
    ``@both_backends`` (tests/backends.py) run with each."""
    return "iptables-restore"
