"""From the validation check in a real netns to the repair controller's action.

A pod netns without our rules makes `istio-validation` (run as the proxy's uid) exit 126; kubelet
reports that as the init container's termination, restarts it, and the controller labels or
deletes the pod. A pod whose rules the plugin programmed passes validation and is left alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshcni_core.devtools.apiserver import FakeApiServer
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
