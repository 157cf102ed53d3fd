"""The agent's pod cache against the API stand-in: list, watch, resume, relist on 410."""

from __future__ import annotations

import time

import pytest

from meshcni_core.devtools.apiserver import FakeApiServer
from meshcni_core.pods.cache import PodCache, wait_synced
from meshcni_core.pods.lookup import ApiClients


def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def cache(tmp_path):
    with FakeApiServer() as api:
        for i in range(3):
            api.add_pod("default", f"on-{i}", containers=["app", "istio-proxy"], node="node-1")
        api.add_pod("default", "elsewhere", containers=["app"], node="node-2")
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        clients = ApiClients()
        cache = PodCache(lambda: clients.get(kubeconfig), "node-1").start()
        assert wait_synced(cache, 10)
        try:
            yield api, cache
        finally:
            cache.stop()


def lists(api):
    return sum(1 for method, path, _ in api.requests if method == "GET" and "watch" not in path)


def test_lists_only_this_nodes_pods(cache):
    _api, pods = cache
    assert len(pods) == 3 and pods.get("default", "elsewhere") is None
    assert pods.get("default", "on-0").containers == ("app", "istio-proxy")


def test_follows_adds_updates_and_deletes(cache):
    api, pods = cache
    api.add_pod("default", "late", containers=["app", "istio-proxy"], node="node-1",
                annotations={"sidecar.istio.io/status": "{}"})
    eventually(lambda: pods.get("default", "late") is not None)
    api.update_pod("default", "late", annotations={"changed": "yes"})
    eventually(lambda: pods.get("default", "late").annotations == {"changed": "yes"})
    api.delete_pod("default", "late")
    eventually(lambda: pods.get("default", "late") is None)


def test_a_replaced_pod_is_not_served_from_the_cache(cache):
    _api, pods = cache
    assert pods.get("default", "on-0", uid="uid-default-on-0") is not None
    assert pods.get("default", "on-0", uid="some-other-uid") is None


def test_dropped_watch_resumes_without_relisting(cache):
    api, pods = cache
    api.drop_watches()
    api.add_pod("default", "after-drop", containers=["app"], node="node-1")
    eventually(lambda: pods.get("default", "after-drop") is not None)
    assert pods.lists == 1 and lists(api) == 1


def test_410_gone_relists(cache):
    api, pods = cache
    api.compact()  # the history the watch would resume from is gone...
    api.drop_watches()  # ...so resuming gets 410 Gone
    eventually(lambda: pods.lists == 2)
    api.add_pod("default", "after-compaction", containers=["app"], node="node-1")
    eventually(lambda: pods.get("default", "after-compaction") is not None)
    assert len(pods) == 4


def test_install_cni_serves_adds_from_its_pod_cache(tmp_path, netns_lab):
    """No runtime annotations, yet no GET of the pod: the agent's watch already knows it."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from meshcni_core.devtools.netlab import MESH_STATUS, cni

    meshcni = str(Path(sys.executable).with_name("meshcni"))
    conf, bins, source, sa = (tmp_path / d for d in ("net.d", "bin", "plugin", "sa"))
    for d in (conf, bins, source, sa):
        d.mkdir()
    (source / "istio-cni").write_text("#!/bin/sh\n")
    (conf / "10-ptp.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "ptp"}]}))
    with FakeApiServer() as api:
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"], node="node-1",
                    annotations={"sidecar.istio.io/status": MESH_STATUS})
        (sa / "token").write_text(api.token)
        shutil.copy(api.certs.ca, sa / "ca.crt")
        socket_path = str(tmp_path / "run" / "cni.sock")
        env = {**os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins),
               "SECONDARY_BIN_DIR": "", "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": api.url.rsplit(":", 1)[1],
               "KUBERNETES_NODE_NAME": "node-1",
               "CNI_NETWORK_CONFIG": json.dumps({"type": "istio-cni", "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})}
        proc = subprocess.Popen([meshcni, "install-cni", "--socket", socket_path, "--monitoring-port", "0",
                                 "--monitoring-address", "127.0.0.1"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            while "monitoring on port" not in line:
                assert line, "install-cni exited"
                line = proc.stderr.readline()
            port = line.rsplit(" ", 1)[1].strip()

            def cached_pods() -> str:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return r.read().decode()

            eventually(lambda: "meshcni_pod_cache_pods 1.0" in cached_pods())
            entry = json.loads((conf / "10-ptp.conflist").read_text())["plugins"][-1]
            netconf = {**entry, "cniVersion": "1.0.0", "name": "n", "agent_socket": socket_path,
                       "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]}}
            pod_ns = netns_lab.netns("pod")
            result = cni("ADD", pod_ns, netconf, uid="uid-default-app-1")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "ISTIO_OUTPUT" in netns_lab.save(pod_ns)
            assert not [r for r in api.requests if r[1].startswith("/api/v1/namespaces/default/pods/app-1")]
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def test_keeps_what_a_native_sidecar_pod_needs(cache):
    """Init containers' names, restartPolicy and securityContext."""
    api, pods = cache
    api.add_pod("default", "native", node="node-1", containers=["app"], init_containers=[
        "istio-validation",
        {"name": "istio-proxy", "restartPolicy": "Always",
         "securityContext": {"runAsUser": 1000650000, "runAsGroup": 1000650001}},
    ])
    eventually(lambda: pods.get("default", "native") is not None)
    pod = pods.get("default", "native")
    assert pod.init_containers == ("istio-validation", "istio-proxy")
    proxy = next(c for c in pod.container_specs if c.name == "istio-proxy")
    assert proxy.native_sidecar and (proxy.run_as_user, proxy.run_as_group) == (1000650000, 1000650001)
    assert not next(c for c in pod.container_specs if c.name == "istio-validation").native_sidecar
