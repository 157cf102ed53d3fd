"""The plugin's pod lookup and its credentials against a real kube-apiserver, as the plugin identity
(the generated ClusterRole), in-process and through the node agent: a pod created after the ADD
started, a pod replaced under the same name, real 401s, bound tokens that expire or are revoked,
and a kubeconfig rewritten with a rotated token. (Slow answers and 429/500 storms, which a real
server cannot be made to give on demand, stay on the stand-in: test_pod_lookup.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve
from meshcni_core.pods.lookup import ApiClients, fetch_pod
from meshcni_hooks.errors import PodLookupError
from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.netlab import PLUGIN, Lab, cni
from meshcni_testing.processes import start_agent

pytestmark = pytest.mark.netns

NAMESPACE = "lookup-apps"
IDENTITY = "lookup-plugin"
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
               "ips": [{"address": "192.0.2.9/24", "interface": 0}]}


@pytest.fixture(scope="module")
def identity(control_plane: ControlPlane) -> ControlPlane:
    """A ServiceAccount allowed exactly what the generated plugin ClusterRole allows."""
    plugin_role = next(d for d in render(resolve()) if d["kind"] == "ClusterRole"
                       and d["metadata"]["name"] == "istio-cni")
    control_plane.ensure_namespace(NAMESPACE)
    control_plane.grant(NAMESPACE, IDENTITY, plugin_role["rules"])
    control_plane.wait_until_served(f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1",
                                    control_plane.mint_token(NAMESPACE, IDENTITY))
    return control_plane


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def kubeconfig_with(control_plane: ControlPlane, path: Path, token: str) -> str:
    return str(control_plane.write_kubeconfig(path, token=token))


def netconf(kubeconfig: str, agent_socket: str = "", lookup_timeout: float = 10) -> dict:
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "agent_socket": agent_socket,
            "kubernetes": {"kubeconfig": kubeconfig, "pod_lookup_timeout": lookup_timeout},
            "prevResult": PREV_RESULT}


def mesh_pod(control_plane: ControlPlane, name: str, containers: tuple[str, ...] = ("app", "istio-proxy")) -> str:
    pod = control_plane.create_pod(NAMESPACE, name, node="node-lookup", containers=containers,
                                   init_containers=("istio-validation",),
                                   annotations={"sidecar.istio.io/status": STATUS})
    uid: str = pod["metadata"]["uid"]
    return uid


def fresh_name() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def add(lab: Lab, conf: dict, name: str, uid: str = "") -> subprocess.CompletedProcess[str]:
    return cni("ADD", lab.netns(name[-8:]), conf, pod=name, namespace=NAMESPACE, uid=uid or f"uid-{name}")


def redirected(lab: Lab) -> bool:
    """Whether the pod netns the last ADD ran in holds our rules."""
    return "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in lab.save(f"/run/netns/{lab.namespaces[-1]}")


@pytest.fixture
def agent(identity: ControlPlane, tmp_path):
    """`meshcni agent` whose kubeconfig the test rewrites (as install-cni does when the token rotates)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig_with(identity, kubeconfig, identity.mint_token(NAMESPACE, IDENTITY))
    socket_path = str(tmp_path / "agent" / "cni.sock")
    process = start_agent(socket_path, netconf(str(kubeconfig), socket_path))
    try:
        yield socket_path, kubeconfig
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_pod_read_from_the_real_api_is_redirected(identity, lab, tmp_path):
    name = fresh_name()
    uid = mesh_pod(identity, name)
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", identity.mint_token(NAMESPACE, IDENTITY))
    proc = add(lab, netconf(kubeconfig), name, uid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert redirected(lab)


def test_single_container_pod_from_the_real_api_is_left_alone(identity, lab, tmp_path):
    name = fresh_name()
    uid = mesh_pod(identity, name, containers=("app",))
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", identity.mint_token(NAMESPACE, IDENTITY))
    proc = add(lab, netconf(kubeconfig), name, uid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not redirected(lab)


@pytest.mark.parametrize("path", ["in-process", "via the agent"])
def test_a_pod_created_after_the_add_started_is_found(identity, lab, tmp_path, agent, path):
    """kubelet can run the sandbox's CNI ADD before the pod is visible to this reader (a watch
    cache behind, an API server that restarted): the lookup waits for it within its deadline."""
    socket_path, agent_kubeconfig = agent
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", identity.mint_token(NAMESPACE, IDENTITY))
    conf = netconf(kubeconfig) if path == "in-process" else netconf(str(agent_kubeconfig), socket_path)
    name = fresh_name()
    ns = lab.netns(name[-8:])
    env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={name}"}
    request = tmp_path / "request.json"
    request.write_text(json.dumps(conf))
    started = time.monotonic()
    with open(request) as stdin:
        plugin = subprocess.Popen([PLUGIN], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  text=True)
    try:
        time.sleep(2)
        assert plugin.poll() is None, "the ADD ended before the pod existed"
        mesh_pod(identity, name)
        out, err = plugin.communicate(timeout=30)
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.wait()
    assert plugin.returncode == 0, out + err
    assert time.monotonic() - started >= 2
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in lab.save(ns)


def test_a_pod_never_created_fails_after_the_deadline(identity, lab, tmp_path):
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", identity.mint_token(NAMESPACE, IDENTITY))
    started = time.monotonic()
    proc = add(lab, netconf(kubeconfig, lookup_timeout=2), fresh_name())
    assert time.monotonic() - started >= 2
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] in (11, 102), error
    assert not redirected(lab)


def test_a_pod_replaced_under_the_same_name_fails_the_add(identity, lab, tmp_path):
    """The runtime's K8S_POD_UID names the pod whose sandbox this is; the server now has another."""
    name = fresh_name()
    old_uid = mesh_pod(identity, name)
    identity.delete_pod_now(NAMESPACE, name)
    mesh_pod(identity, name)
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", identity.mint_token(NAMESPACE, IDENTITY))
    proc = add(lab, netconf(kubeconfig), name, old_uid)
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 102, error
    assert old_uid in error["msg"] + error.get("details", ""), error
    assert not redirected(lab)


def test_a_token_the_real_server_refuses_fails_at_once_with_a_clear_error(identity, lab, tmp_path):
    name = fresh_name()
    uid = mesh_pod(identity, name)
    forged = identity.mint_token(NAMESPACE, IDENTITY)[:-4] + "AAAA"  # signature no longer matches
    started = time.monotonic()
    proc = add(lab, netconf(kubeconfig_with(identity, tmp_path / "kubeconfig", forged)), name, uid)
    assert time.monotonic() - started < 8
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 102, error
    assert "refused the kubeconfig's credentials (HTTP 401" in error["msg"], error
    assert not redirected(lab)


def test_the_admins_client_certificate_kubeconfig_is_used(identity, lab):
    name = fresh_name()
    uid = mesh_pod(identity, name)
    proc = add(lab, netconf(str(identity.admin_kubeconfig)), name, uid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert redirected(lab)


# -- bound tokens: revoked, expired, rotated ------------------------------------------------------

def test_a_token_rotated_on_disk_is_used_once_the_old_one_is_revoked(identity, tmp_path):
    """The agent keeps one client; install-cni rewrites the kubeconfig in place with a new token
    (same mtime, so the client cannot tell). When the server refuses the old token, the lookup
    reads the file again once and goes on with the new one."""
    name = fresh_name()
    mesh_pod(identity, name)
    kubeconfig = tmp_path / "kubeconfig"
    secret = f"bound-{uuid.uuid4().hex[:8]}"
    old = identity.mint_token(NAMESPACE, IDENTITY, bound_secret=secret)
    kubeconfig_with(identity, kubeconfig, old)
    clients = ApiClients()
    assert fetch_pod(str(kubeconfig), NAMESPACE, name, timeout=5, clients=clients).name == name
    before = os.stat(kubeconfig)
    kubeconfig_with(identity, kubeconfig, identity.mint_token(NAMESPACE, IDENTITY))
    os.utime(kubeconfig, ns=(before.st_atime_ns, before.st_mtime_ns))
    identity.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}")
    wait_refused(identity, old)
    assert fetch_pod(str(kubeconfig), NAMESPACE, name, timeout=5, clients=clients).name == name


def test_a_revoked_token_not_rotated_is_reported_as_a_stale_install(identity, tmp_path):
    name = fresh_name()
    mesh_pod(identity, name)
    secret = f"bound-{uuid.uuid4().hex[:8]}"
    token = identity.mint_token(NAMESPACE, IDENTITY, bound_secret=secret)
    kubeconfig = kubeconfig_with(identity, tmp_path / "kubeconfig", token)
    identity.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}")
    wait_refused(identity, token)
    with pytest.raises(PodLookupError) as raised:
        fetch_pod(kubeconfig, NAMESPACE, name, timeout=5, clients=ApiClients())
    message = str(raised.value)
    assert "refused the kubeconfig's credentials (HTTP 401" in message and "also after re-reading" in message
    assert "stale install" in message


def test_the_agent_goes_on_after_its_token_expires_and_is_rotated(identity, lab, agent):
    """A bound token that really expires (signed with the cluster's key, 4 s lifetime): the agent's
    ADDs work while it is valid, fail with the server's 401 once it has expired, and work again,
    without a restart, once the kubeconfig holds a new token."""
    socket_path, kubeconfig = agent
    short = identity.sign_short_lived_token(NAMESPACE, IDENTITY, lifetime_seconds=4)
    kubeconfig_with(identity, kubeconfig, short)
    name = fresh_name()
    proc = add(lab, netconf(str(kubeconfig), socket_path), name, mesh_pod(identity, name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert redirected(lab)

    wait_refused(identity, short, timeout=15)
    name = fresh_name()
    proc = add(lab, netconf(str(kubeconfig), socket_path), name, mesh_pod(identity, name))
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 102 and "HTTP 401" in error["msg"], error
    assert not redirected(lab)

    kubeconfig_with(identity, kubeconfig, identity.mint_token(NAMESPACE, IDENTITY))
    name = fresh_name()
    proc = add(lab, netconf(str(kubeconfig), socket_path), name, mesh_pod(identity, name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert redirected(lab)


def wait_refused(control_plane: ControlPlane, token: str, timeout: float = 10) -> None:
    """Until the server answers 401 to ``token`` (a revoked token's Secret leaves the
    authenticator's cache a moment after it is deleted; an expiring one at its ``exp``)."""
    deadline = time.monotonic() + timeout
    while control_plane.send("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1", token=token)[0] != 401:
        assert time.monotonic() < deadline, "the server still accepts the token"
        time.sleep(0.2)
