"""OpenShift with Multus, end to end: the rendered install writes a standalone ``istio-cni`` network,
and a Multus-style delegation runs it as a secondary attachment (``net1``, no prevResult) after the
pod's default network - the plugin still programs the pod's whole netns and returns a valid result."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meshcni_core import netns
from meshcni_core.install.installer import Installer
from meshcni_core.install.settings import from_env
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_core.platforms import node_checker
from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import MESH_STATUS, PLUGIN

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
CNITOOL = str(Path(__file__).resolve().parents[2] / "build" / "tools" / "cnitool")


def rendered_openshift_install() -> tuple[dict[str, str], str]:
    """install-cni's environment and netconf template, from `--set values.cni.platform=openshift`."""
    objects = {d["kind"]: d for d in render(resolve(sets=["values.cni.platform=openshift"]))}
    container = objects["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    return env, objects["ConfigMap"]["data"]["cni_network_config"]


def delegate(node, command: str, network: str, ifname: str, pod_netns: str) -> subprocess.CompletedProcess[str]:
    """What Multus does for each network of a pod: libcni with that network's conf and interface name."""
    env = {**os.environ, "NETCONFPATH": node.conf_dir, "CNI_PATH": node.bin_dir, "CNI_IFNAME": ifname,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1;K8S_POD_INFRA_CONTAINER_ID=x"}
    return subprocess.run(["nsenter", f"--net={node.netns}", CNITOOL, command, network, pod_netns],
                          env=env, capture_output=True, text=True, timeout=60)


def test_rendered_openshift_install_runs_as_a_multus_secondary_network(node, tmp_path):
    assert os.access(CNITOOL, os.X_OK), "run scripts/build-cnitool.sh (make test does)"
    rendered_env, template = rendered_openshift_install()
    assert (rendered_env["CHAINED_CNI_PLUGIN"], rendered_env["CNI_CONF_NAME"]) == ("false", "istio-cni.conf")
    source, sa, stub_bins = tmp_path / "plugin", tmp_path / "sa", tmp_path / "host-bin"
    for directory in (source, sa, stub_bins):
        directory.mkdir()
    (source / "istio-cni").write_bytes(Path(PLUGIN).read_bytes())
    api = FakeApiServer()
    with netns.entered(node.netns):  # the plugin runs in the node's netns: serve on its loopback
        api.start()
    try:
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"],
                    annotations={"sidecar.istio.io/status": MESH_STATUS})
        (sa / "token").write_text(api.token)
        (sa / "ca.crt").write_text(Path(api.certs.ca).read_text())
        port = api.url.rsplit(":", 1)[1]
        env = {**rendered_env, "CNI_NETWORK_CONFIG": template, "CNI_NET_DIR": node.conf_dir,
               "MOUNTED_CNI_NET_DIR": node.conf_dir, "MOUNTED_CNI_BIN_DIR": str(stub_bins), "SECONDARY_BIN_DIR": "",
               "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port,
               "KUBERNETES_NODE_NAME": "node-1", "MESHCNI_REQUIRE_AGENT": "false"}  # no agent: in-process
        settings = from_env(env)
        assert settings.platform == "openshift"  # so OpenShift's node checks run, and pass
        status = Installer(settings, node_check=node_checker(settings.platform)).reconcile()
        assert status.ready, status.problems
        written = json.loads((Path(node.conf_dir) / "istio-cni.conf").read_text())
        assert (written["name"], written["type"], written["attachment"]) == ("istio-cni", "istio-cni", "secondary")

        # The pod's default network (ptp only), which Multus runs first.
        (Path(node.conf_dir) / "10-e2e.conflist").write_text(json.dumps(node.primary_conflist()))
        pod = node.lab.netns("pod")
        default = delegate(node, "add", node.network, "eth0", pod)
        assert default.returncode == 0, default.stderr
        try:
            added = delegate(node, "add", "istio-cni", "net1", pod)
            assert added.returncode == 0, added.stderr
            assert json.loads(added.stdout)["cniVersion"] == "0.3.1"  # a valid result in the conf's version
            rules = node.lab.save(pod)
            assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules and "-A PREROUTING -p tcp -j ISTIO_INBOUND" in rules
            assert ("GET", "/api/v1/namespaces/default/pods/app-1") in {(m, p) for m, p, _ in api.requests}
        finally:
            removed = delegate(node, "del", "istio-cni", "net1", pod)
            delegate(node, "del", node.network, "eth0", pod)
        assert removed.returncode == 0, removed.stderr
        assert node.lab.save(pod) == ""
    finally:
        api.stop()
