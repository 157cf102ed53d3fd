"""From the validation check in a real netns to the repair controller's action.

A pod netns without our rules makes `istio-validation` (run as the proxy's uid) exit 126; kubelet
reports that as the init container's termination, restarts it, and the controller labels or
deletes the pod. A pod whose rules the plugin programmed passes validation and is left alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshcni_core.devtools.apiserver import FakeApiServer
from meshcni_core.devtools.hostlayout import make_host
from meshcni_core.devtools.netlab import cni, mesh_netconf
from test_istio_iptables import _validate_as_proxy
from test_repair import CONTAINER, STATUS

pytestmark = pytest.mark.netns
MESHCNI = str(Path(sys.executable).with_name("meshcni"))


def kubelet_status(exit_code: int) -> dict:
    """The init container status kubelet reports after running istio-validation (and, when it
    failed, restarting it once)."""
    if exit_code == 0:
        return {"initContainerStatuses": [{**CONTAINER, "restartCount": 0,
                                           "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
    return {"initContainerStatuses": [{**CONTAINER, "restartCount": 1,
                                       "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                       "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error",
                                                                    "message": "validation timeout"}}}]}


@pytest.mark.parametrize(("flag", "outcome"), [("--label-pods", "labelled"), ("--delete-pods", "deleted")])
def test_validation_failure_leads_to_repair(netns_lab, tmp_path, flag, outcome):
    missed, programmed = netns_lab.netns("missed"), netns_lab.netns("programmed")
    assert cni("ADD", programmed, mesh_netconf()).returncode == 0  # only this pod went through the plugin
    codes = {"missed": _validate_as_proxy(missed, timeout=1), "programmed": _validate_as_proxy(programmed, timeout=5)}
    assert codes == {"missed": 126, "programmed": 0}
    with FakeApiServer() as api:
        for name, code in codes.items():
            api.add_pod("default", name, containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                        node="node-1", annotations=STATUS)
            api.update_pod("default", name, status=kubelet_status(code))
        proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", api.write_kubeconfig(str(tmp_path / "kc")),
                               "--node-name", "node-1", flag], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"default/missed": outcome}
        assert ("default", "programmed") in api.pods and not api.pods[("default", "programmed")]["metadata"]["labels"]


def test_the_node_agent_reprograms_a_pod_that_missed_its_rules(netns_lab, tmp_path):
    """REPAIR_REPAIR-PODS inside install-cni: the pod's netns is found by its IP and programmed, and
    the validation check that failed now passes - the pod recovers on its next restart, undeleted."""
    missed, peer = netns_lab.netns("missed"), netns_lab.netns("peer")
    netns_lab.link(missed, ["192.0.2.20/24"], peer, ["192.0.2.1/24"])
    assert _validate_as_proxy(missed, timeout=1) == 126
    netns_dir = tmp_path / "netns"  # the runtime's pinned namespaces; only this test's are listed
    netns_dir.mkdir()
    for path in (peer, missed):
        (netns_dir / Path(path).name).symlink_to(path)
    (netns_dir / "not-a-namespace").write_text("")  # skipped, as a runtime's stray file would be
    with FakeApiServer() as api:
        api.add_pod("default", "missed", containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                    node="node-1", annotations=STATUS)
        api.update_pod("default", "missed", status={**kubelet_status(126), "podIP": "192.0.2.20",
                                                    "podIPs": [{"ip": "192.0.2.20"}]})
        with open(api.certs.ca, "rb") as f:
            env = make_host(tmp_path / "host", token=api.token, ca_pem=f.read(), api_port=api.url.rsplit(":", 1)[1],
                            node="node-1", KUBECONFIG=api.write_kubeconfig(str(tmp_path / "kc")),
                            REPAIR_ENABLED="true", **{"REPAIR_REPAIR-PODS": "true"},
                            MESHCNI_NETNS_DIR=str(netns_dir))
        agent = subprocess.Popen([MESHCNI, "install-cni", "--socket", str(tmp_path / "cni.sock"),
                                  "--monitoring-port", "0", "--log-level", "info"],
                                 env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while "-A ISTIO_OUTPUT" not in netns_lab.save(missed):
                assert agent.poll() is None, agent.stderr.read()
                assert time.monotonic() < deadline, "the pod was never reprogrammed"
                time.sleep(0.1)
            assert _validate_as_proxy(missed, timeout=5) == 0  # istio-validation's next run passes
            assert netns_lab.save(peer) == ""  # only the pod's namespace was touched
            assert ("default", "missed") in api.pods  # nothing deleted
            assert not api.pods[("default", "missed")]["metadata"]["labels"] and not api.patches
        finally:
            agent.terminate()
            agent.wait(timeout=15)


def test_repair_pods_outside_the_node_agent_is_refused(tmp_path):
    with FakeApiServer() as api:
        proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", api.write_kubeconfig(str(tmp_path / "kc")),
                               "--repair-pods"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "only the node agent reaches" in proc.stderr
