"""Issue 12: 32 ADDs at once, a fresh netns each, of pods known only from a real kube-apiserver
(no runtime annotations), served by install-cni and by the standalone agent: every ADD succeeds
and every pod's netns holds its rules. The timing is bench/burst_api.py's (docs/performance.md)."""

from __future__ import annotations

import pytest

from meshcni_testing import burst
from meshcni_testing.netlab import PLUGIN

pytestmark = pytest.mark.netns
COUNT = 32


@pytest.mark.parametrize("server", burst.SERVERS)
def test_32_adds_at_once_of_pods_from_the_api_all_get_their_rules(server, control_plane, netns_lab, tmp_path):
    lab = netns_lab
    token = burst.plugin_token(control_plane)
    serve = burst.install_cni(control_plane, token, tmp_path, PLUGIN) if server == "install-cni" \
        else burst.standalone_agent(control_plane, token, tmp_path)
    with serve as netconf:
        assert "runtimeConfig" not in netconf  # the pods come from the API server only
        pods = burst.create_pods(control_plane, f"{server}-{lab.token}", COUNT)
        try:
            result = burst.fire(lab, PLUGIN, netconf, pods)
        finally:
            for pod in pods:
                control_plane.delete_pod_now(burst.NAMESPACE, pod)
    assert result.failures == []
    assert result.without_rules == []
    assert len(result.durations_ms) == COUNT
