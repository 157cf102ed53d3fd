"""A 401 from the API: the kubeconfig is read again once, then the lookup fails saying why.

After meshcni's DaemonSet is removed, nodes keep our entry and a kubeconfig whose token nobody
renews; while the agent runs, the token on disk may be newer than the client built from it.
Rotation, revocation and expiry with real bound tokens are in test_pod_lookup_real.py; these use
the stand-in to count the requests (one re-read, not a loop; nothing sent for a hostile
kubeconfig).
"""

from __future__ import annotations

import json

import pytest

from meshcni_core.pods.lookup import ApiClients, fetch_pod
from meshcni_hooks.errors import PodLookupError
from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import Lab, cni

STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})


@pytest.fixture
def api():
    with FakeApiServer(token="token-1") as server:
        server.add_pod("default", "app-1", containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                       annotations={"sidecar.istio.io/status": STATUS})
        yield server


def pod_reads(api: FakeApiServer) -> list[int]:
    return [status for _, path, status in api.requests if path.endswith("/pods/app-1")]


def test_a_dead_token_is_retried_once_then_reported_as_rejected_and_stale(api, tmp_path):
    kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="token-of-a-removed-daemonset")
    with pytest.raises(PodLookupError) as raised:
        fetch_pod(kubeconfig, "default", "app-1", timeout=5, clients=ApiClients())
    assert pod_reads(api) == [401, 401]  # re-read once, not a loop
    message = str(raised.value)
    assert "refused the kubeconfig's credentials (HTTP 401" in message and "also after re-reading" in message
    assert "stale install" in message and "meshcni uninstall-cni" in raised.value.details


@pytest.mark.netns
def test_the_plugin_refuses_the_pod_and_says_the_install_may_be_stale(api, tmp_path):
    lab = Lab()
    try:
        ns = lab.netns("pod")
        netconf = {
            "cniVersion": "0.4.0", "name": "k8s-pod-network", "type": "istio-cni",
            "kubernetes": {"kubeconfig": api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="dead")},
            "prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "192.0.2.9/24"}]},
        }
        proc = cni("ADD", ns, netconf)
        error = json.loads(proc.stdout)
        assert proc.returncode == 1 and error["code"] == 102, error
        assert "HTTP 401" in error["msg"] and "stale install" in error["msg"], error
        assert "meshcni uninstall-cni" in error["details"], error
        assert pod_reads(api) == [401, 401]
        assert lab.save(ns) == ""
    finally:
        lab.close()


def hostile_kubeconfig(api: FakeApiServer, path: str, user: dict) -> str:
    """A kubeconfig someone who can write the conf dir puts there and names in our entry."""
    api.write_kubeconfig(path)
    with open(path) as f:
        config = json.load(f)
    config["users"][0]["user"] = user
    with open(path, "w") as f:
        json.dump(config, f)
    return path


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["exec", "auth-provider", "tokenFile"])
def test_the_plugin_runs_no_credential_plugin_and_sends_no_file_as_a_token(api, tmp_path, kind):
    """The kubeconfig's path comes from the CNI configuration: a command in it would run as root on
    the node, a tokenFile would send any file on the node to the server the file names."""
    ran = tmp_path / "ran-as-root"
    secret = tmp_path / "another-pods-token"
    secret.write_text("token-1")  # a token the API accepts: sent, it would be a successful read
    helper = tmp_path / "credential-helper"
    helper.write_text(f"#!/bin/sh\ntouch {ran}\n"
                      "echo '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", "
                      "\"status\": {\"token\": \"token-1\"}}'\n")
    helper.chmod(0o755)
    user = {
        "exec": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(helper),
                          "interactiveMode": "Never"}},
        "auth-provider": {"auth-provider": {"name": "gcp", "config": {
            "cmd-path": str(helper), "token-key": "{.status.token}"}}},
        "tokenFile": {"tokenFile": str(secret)},
    }[kind]
    kubeconfig = hostile_kubeconfig(api, str(tmp_path / "kubeconfig"), user)
    lab = Lab()
    try:
        ns = lab.netns("pod")
        netconf = {
            "cniVersion": "0.4.0", "name": "k8s-pod-network", "type": "istio-cni",
            "kubernetes": {"kubeconfig": kubeconfig},
            "prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "192.0.2.9/24"}]},
        }
        proc = cni("ADD", ns, netconf)
        assert not ran.exists(), "a command from the kubeconfig ran as root"
        assert pod_reads(api) == [], "the file was sent to the API server as a token"
        error = json.loads(proc.stdout)
        assert proc.returncode == 1 and error["code"] == 102, error
        assert kind in error["msg"] and kubeconfig in error["msg"], error
        assert lab.save(ns) == ""
    finally:
        lab.close()
