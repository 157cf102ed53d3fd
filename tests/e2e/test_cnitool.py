"""istio-cni driven by cnitool (libcni 1.1.2), the reference CNI client: ADD, CHECK, DEL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meshcni_core import netns
from meshcni_testing.netlab import MESH_STATUS

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
CNITOOL = str(Path(__file__).resolve().parents[2] / "build" / "tools" / "cnitool")


def cnitool(node, command: str, pod_netns: str, annotations: dict[str, str] | None = None,
            pod: str = "app-1", namespace: str = "default") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "NETCONFPATH": node.conf_dir, "CNI_PATH": node.bin_dir, "CNI_IFNAME": "eth0",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=x",
    }
    if annotations is not None:
        env["CAP_ARGS"] = json.dumps({"io.kubernetes.cri.pod-annotations": annotations})
    return subprocess.run(["nsenter", f"--net={node.netns}", CNITOOL, command, node.network, pod_netns],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(autouse=True)
def tool_built():
    assert os.access(CNITOOL, os.X_OK), "run scripts/build-cnitool.sh (make test does)"


def test_add_check_del(node):
    node.write_conflist()
    pod = node.lab.netns("pod")
    annotations = {"sidecar.istio.io/status": MESH_STATUS, "sidecar.istio.io/interceptionMode": "TPROXY"}
    added = cnitool(node, "add", pod, annotations)
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["ips"][0]["address"].startswith("198.51.100.")  # ptp + host-local's result, passed through
    rules = node.lab.save(pod)  # every table
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules and "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY" in rules
    checked = cnitool(node, "check", pod, annotations)
    assert checked.returncode == 0, checked.stderr
    deleted = cnitool(node, "del", pod, annotations)
    assert deleted.returncode == 0, deleted.stderr
    assert node.lab.save(pod) == "" and node.lab.save(pod, 6) == ""
    assert cnitool(node, "del", pod, annotations).returncode == 0  # repeated DEL


def test_check_reports_removed_rules(node):
    node.write_conflist()
    pod = node.lab.netns("pod")
    annotations = {"sidecar.istio.io/status": MESH_STATUS}
    assert cnitool(node, "add", pod, annotations).returncode == 0
    with netns.entered(pod):
        subprocess.run(["iptables", "-t", "nat", "-F", "ISTIO_OUTPUT"], check=True)
    checked = cnitool(node, "check", pod, annotations)
    assert checked.returncode != 0
    assert "redirect rules of pod default/app-1 are missing or changed" in checked.stderr
    assert cnitool(node, "del", pod, annotations).returncode == 0


def test_invalid_annotation_fails_add_and_the_chain_is_torn_down(node):
    node.write_conflist()
    pod = node.lab.netns("pod")
    annotations = {"sidecar.istio.io/status": MESH_STATUS, "traffic.sidecar.istio.io/excludeOutboundPorts": "*"}
    added = cnitool(node, "add", pod, annotations)
    assert added.returncode != 0
    assert "traffic.sidecar.istio.io/excludeOutboundPorts" in added.stderr
    assert node.lab.save(pod) == ""
    assert cnitool(node, "del", pod, annotations).returncode == 0
    links = subprocess.run(["ip", "-n", node.lab.name_of(pod), "-o", "link"], capture_output=True, text=True).stdout
    assert "eth0" not in links  # ptp's interface was removed by the DEL


def test_non_mesh_pod_gets_ptp_only(node):
    node.write_conflist()
    pod = node.lab.netns("pod")
    added = cnitool(node, "add", pod, {})
    assert added.returncode == 0, added.stderr
    assert node.lab.save(pod) == ""
    assert cnitool(node, "del", pod, {}).returncode == 0
