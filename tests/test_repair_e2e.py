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

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.hostlayout import make_host
from meshcni_testing.netlab import cni, mesh_netconf
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
def test_validation_failure_leads_to_repair(netns_lab, control_plane, tmp_path, flag, outcome):
    """On a real API server: kubelet's report of each pod's validation run, then `meshcni repair`."""
    missed, programmed = netns_lab.netns("missed"), netns_lab.netns("programmed")
    assert cni("ADD", programmed, mesh_netconf()).returncode == 0  # only this pod went through the plugin
    codes = {"missed": _validate_as_proxy(missed, timeout=1), "programmed": _validate_as_proxy(programmed, timeout=5)}
    assert codes == {"missed": 126, "programmed": 0}
    namespace, node = f"repair-e2e-{flag.strip('-')}", f"node-e2e-{flag.strip('-')}"
    control_plane.ensure_namespace(namespace)
    for name, code in codes.items():
        control_plane.create_pod(namespace, name, node=node, containers=("app", "istio-proxy"),
                                 init_containers=("istio-validation",), annotations=STATUS,
                                 status=kubelet_status(code))
    proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", str(control_plane.admin_kubeconfig),
                           "--node-name", node, flag], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {f"{namespace}/missed": outcome}
    left_alone = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods/programmed")["metadata"]
    assert not left_alone.get("labels") and "deletionTimestamp" not in left_alone


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


def _meshed_pod(ip: str) -> dict:
    return {"metadata": {"namespace": "default", "name": "victim", "uid": "uid-victim", "annotations": STATUS},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def _extra_interface(netns_lab, ns: str, name: str, address: str) -> None:
    """A veth end called ``name`` holding ``address`` in ``ns`` (its peer stays beside it)."""
    peer = f"{name[:6]}p{netns_lab.token}"
    netns_lab.ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer)
    netns_lab.ip(ns, "addr", "add", address, "dev", name)
    netns_lab.ip(ns, "link", "set", name, "up")


def test_reprogram_picks_only_the_namespace_holding_the_pod_ip_on_its_primary_interface(netns_lab, tmp_path):
    """Issue 9 item 10: a namespace holding the pod's IP on another interface (a neighbour with
    NET_ADMIN, or a secondary network) is never programmed in the pod's place."""
    from meshcni_core.pipeline import Pipeline
    from meshcni_core.repair.reprogram import Reprogrammer

    victim, peer, impostor = netns_lab.netns("victim"), netns_lab.netns("peer"), netns_lab.netns("impostor")
    netns_lab.link(victim, ["192.0.2.30/24"], peer, ["192.0.2.1/24"])
    _extra_interface(netns_lab, impostor, "net1", "192.0.2.30/24")
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for link, path in (("a-impostor", impostor), ("b-peer", peer), ("c-victim", victim)):  # listed first: impostor
        (netns_dir / link).symlink_to(path)
    reprogram = Reprogrammer(lambda: Pipeline.from_netconf(mesh_netconf(), {}), str(netns_dir))
    assert reprogram(_meshed_pod("192.0.2.30")) == "reprogrammed"
    assert "-A ISTIO_OUTPUT" in netns_lab.save(victim)
    assert netns_lab.save(impostor) == "" and netns_lab.save(peer) == ""


def test_reprogram_refuses_two_namespaces_claiming_the_pod_ip(netns_lab, tmp_path, caplog):
    from meshcni_core.pipeline import Pipeline
    from meshcni_core.repair.reprogram import Reprogrammer
    from meshcni_hooks.errors import MeshcniError

    victim, twin = netns_lab.netns("victim"), netns_lab.netns("twin")
    _extra_interface(netns_lab, victim, "eth0", "192.0.2.30/24")
    _extra_interface(netns_lab, twin, "eth0", "192.0.2.30/24")  # e.g. a neighbour that took the IP
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for path in (victim, twin):
        (netns_dir / Path(path).name).symlink_to(path)
    reprogram = Reprogrammer(lambda: Pipeline.from_netconf(mesh_netconf(), {}), str(netns_dir))
    with pytest.raises(MeshcniError, match="ambiguous") as info:
        reprogram(_meshed_pod("192.0.2.30"))
    assert str(netns_dir / Path(victim).name) in info.value.msg and str(netns_dir / Path(twin).name) in info.value.msg
    assert "ambiguous" in caplog.text  # the agent's log says why the pod was left alone
    assert netns_lab.save(victim) == "" and netns_lab.save(twin) == ""
