"""The RBAC of docs/repair.md, against the stand-in's per-token authorisation: each role is
enough for its job, and the plugin's read-only identity cannot delete a pod."""

from __future__ import annotations

import json
import subprocess

import pytest

from meshcni_core.pods.lookup import ApiClients, fetch_pod
from meshcni_testing.apiserver import FakeApiServer
from test_repair import BROKEN, MESHCNI, pod

PLUGIN = {("get", "pods"), ("list", "pods"), ("watch", "pods")}
LABEL = PLUGIN | {("patch", "pods"), ("create", "events")}
DELETE = PLUGIN | {("delete", "pods"), ("create", "events")}


@pytest.fixture
def api(tmp_path):
    with FakeApiServer() as server:
        for token, allowed in (("plugin", PLUGIN), ("label", LABEL), ("delete", DELETE)):
            server.add_identity(token, allowed)
        server.kubeconfigs = {t: server.write_kubeconfig(str(tmp_path / t), token=t) for t in ("plugin", "label", "delete")}
        yield server


def repair(api, identity, *flags):
    proc = subprocess.run([MESHCNI, "repair", "--kubeconfig", api.kubeconfigs[identity], "--node-name", "node-1",
                           *flags], capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def test_the_plugin_identity_reads_pods_and_cannot_delete_them(api):
    pod(api, "app-1", BROKEN)
    assert fetch_pod(api.kubeconfigs["plugin"], "default", "app-1", timeout=5).name == "app-1"
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(ApiClients().get(api.kubeconfigs["plugin"]))
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_pod("app-1", "default")
    assert info.value.status == 403 and ("default", "app-1") in api.pods
    assert repair(api, "plugin", "--label-pods") == (1, {"default/app-1": "failed: HTTP 403 Forbidden"})


def test_label_role_is_enough_for_labelling_and_not_for_deleting(api):
    pod(api, "app-1", BROKEN)
    assert repair(api, "label", "--delete-pods")[1] == {"default/app-1": "failed: HTTP 403 Forbidden"}
    assert repair(api, "label", "--label-pods") == (0, {"default/app-1": "labelled"})


def test_delete_role_is_enough_for_deleting(api):
    pod(api, "app-1", BROKEN)
    assert repair(api, "delete", "--delete-pods") == (0, {"default/app-1": "deleted"})
