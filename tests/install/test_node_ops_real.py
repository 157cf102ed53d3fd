"""install-cni itself against a real kube-apiserver, with the token its pod would hold: it lifts
its node's readiness taint only once it is ready, and an edit war over its conf file becomes a
Warning Event on its node naming the file, the component and the writer."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_install_cni import PRIMARY, write_like_a_primary
from test_owned_conflist import WRITER, Drained

from test_manifest_apply_real import REMOVE, apply
from test_readiness_taint_real import KEY, NAMESPACE, make_node, pod_bound_token, taints

NODE = "ops-node"


@pytest.fixture
def cluster(control_plane):
    control_plane.ensure_namespace(NAMESPACE)
    done = apply(control_plane, [], ["values.cni.taint.enabled=true"])
    assert done.returncode == 0, done.stderr
    make_node(control_plane, NODE)
    yield control_plane
    control_plane.delete_pod_now(NAMESPACE, f"istio-cni-node-{NODE}")
    control_plane.request("DELETE", f"/api/v1/nodes/{NODE}")
    apply(control_plane, [], REMOVE)


def node_events(plane, reason: str) -> list[dict]:
    return [e for e in plane.request("GET", "/api/v1/namespaces/default/events")["items"]
            if e["reason"] == reason and e["involvedObject"]["name"] == NODE]


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_install_cni_lifts_its_taint_when_ready_and_reports_an_edit_war_on_its_node(host, cluster, tmp_path):
    sa = Path(host.settings.service_account_dir)  # what kubelet mounts: the pod's bound token, the cluster's CA
    (sa / "token").write_text(pod_bound_token(cluster, NODE))
    (sa / "ca.crt").write_bytes(cluster.ca.read_bytes())
    server = urlparse(cluster.url)
    agent = Drained(host, KUBERNETES_SERVICE_HOST=server.hostname, KUBERNETES_SERVICE_PORT=str(server.port),
                    KUBERNETES_NODE_NAME=NODE, MESHCNI_READINESS_TAINT=KEY, ISTIO_OWNED_CNI_CONFIG="true")
    writer = None
    try:
        agent.wait_problem("waiting for the primary CNI")
        time.sleep(2)  # the taint lifter asks every second: not ready, so nothing happens
        assert KEY in {t["key"] for t in taints(cluster, NODE)}
        write_like_a_primary(host.conf_dir / "10-calico.conflist", PRIMARY)
        agent.wait_ready(True)
        wait_for(lambda: KEY not in {t["key"] for t in taints(cluster, NODE)})
        assert [e["source"]["component"] for e in node_events(cluster, "ReadinessTaintRemoved")] == ["istio-cni-node"]

        script = tmp_path / "calico-node"
        script.write_text(WRITER)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        writer = subprocess.Popen([str(script), str(host.conf_dir)])
        wait_for(lambda: node_events(cluster, "CNIConfigEditWar"))
        event = node_events(cluster, "CNIConfigEditWar")[0]
        assert event["type"] == "Warning"
        assert "10-calico.conflist changed 5 times in 30s (component: calico" in event["message"]
        assert f"pid {writer.pid} (calico-node)" in event["message"]
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def test_install_cni_puts_its_taint_back_while_its_node_cannot_serve_pods(host, cluster):
    """Lifted once ready; then the primary's conflist goes away (our entry cannot be restored):
    past the grace period the taint is back, with a Warning Event naming the problem; the primary
    writes its file again and the taint is lifted again."""
    sa = Path(host.settings.service_account_dir)
    (sa / "token").write_text(pod_bound_token(cluster, NODE))
    (sa / "ca.crt").write_bytes(cluster.ca.read_bytes())
    server = urlparse(cluster.url)
    primary = host.conf_dir / "10-calico.conflist"
    write_like_a_primary(primary, PRIMARY)
    agent = Drained(host, KUBERNETES_SERVICE_HOST=server.hostname, KUBERNETES_SERVICE_PORT=str(server.port),
                    KUBERNETES_NODE_NAME=NODE, MESHCNI_READINESS_TAINT=KEY, MESHCNI_READINESS_TAINT_GRACE="3")
    tainted = lambda: KEY in {t["key"] for t in taints(cluster, NODE)}  # noqa: E731
    earlier = {e["metadata"]["uid"] for reason in ("ReadinessTaintAdded", "ReadinessTaintRemoved")  # same node name
               for e in node_events(cluster, reason)}
    new_events = lambda reason: [e for e in node_events(cluster, reason) if e["metadata"]["uid"] not in earlier]  # noqa: E731
    try:
        agent.wait_ready(True)
        wait_for(lambda: not tainted())
        primary.unlink()
        agent.wait_problem("waiting for the primary CNI")
        wait_for(tainted)
        [added] = new_events("ReadinessTaintAdded")
        assert added["type"] == "Warning" and "waiting for the primary CNI" in added["message"], added
        write_like_a_primary(primary, PRIMARY)
        agent.wait_ready(True)
        wait_for(lambda: not tainted())
        assert len(new_events("ReadinessTaintRemoved")) == 2
        # its STATUS probe of its own agent, every second, is not counted as a plugin run
        assert 'command="STATUS"' not in agent.get("/metrics")[1]
        assert agent.proc.poll() is None
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
