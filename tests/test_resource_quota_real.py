"""Issue 12: ``cni.resourceQuotas`` honoured against a real kube-apiserver configured as the
clusters Istio's chart has this value for (GKE, and Kubernetes' "limit priority class consumption
by default"): its ResourceQuota admission limits pods of the system-node-critical class to
namespaces holding a ResourceQuota scoped to that class. Without the value the DaemonSet's pods
are refused in istio-system; with it they are admitted - up to ``cni.resourceQuotas.pods``."""

from __future__ import annotations

import pytest

from meshcni_testing.controlplane import ApiError, start_control_plane
from test_manifest_apply_real import REMOVE, apply

NAMESPACE = "istio-system"
LIMITED_CRITICAL_PODS = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ResourceQuota
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: ResourceQuotaConfiguration
    limitedResources:
    - resource: pods
      matchScopes:
      - scopeName: PriorityClass
        operator: In
        values: ["system-node-critical"]
"""


@pytest.fixture(scope="module")
def quota_limited_plane(tmp_path_factory, control_plane_bin):
    directory = tmp_path_factory.mktemp("quota-plane")
    config = directory / "admission.yaml"
    config.write_text(LIMITED_CRITICAL_PODS)
    with start_control_plane(control_plane_bin, directory / "plane",
                             apiserver_flags=("--admission-control-config-file", str(config))) as plane:
        yield plane


def critical_pod(plane, name: str) -> dict:
    return plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": "quota-node", "priorityClassName": "system-node-critical",
                 "containers": [{"name": "install-cni", "image": "install-cni:1"}]}})


def test_the_daemon_set_s_pods_are_admitted_outside_kube_system_only_with_the_quota(quota_limited_plane):
    control_plane = quota_limited_plane
    control_plane.ensure_namespace(NAMESPACE)
    created: list[str] = []
    try:
        assert apply(control_plane, [], []).returncode == 0
        with pytest.raises(ApiError) as refused:
            critical_pod(control_plane, "quota-without")
        # (the server answers this refusal with a 500, as Kubernetes does for it)
        assert "insufficient quota to match these scopes" in refused.value.body

        done = apply(control_plane, [], ["values.cni.resourceQuotas.enabled=true", "values.cni.resourceQuotas.pods=1"])
        assert done.returncode == 0, done.stderr
        # What kube-controller-manager's quota controller (not run here) writes on seeing the quota;
        # the server's admission then counts each admitted pod into it.
        quota = f"/api/v1/namespaces/{NAMESPACE}/resourcequotas/istio-cni-resource-quota"
        hard = control_plane.request("GET", quota)["spec"]["hard"]
        assert hard == {"pods": "1"}
        control_plane.request("PATCH", f"{quota}/status", {"status": {"hard": hard, "used": {"pods": "0"}}},
                              content_type="application/merge-patch+json")
        created.append(critical_pod(control_plane, "quota-first")["metadata"]["name"])
        with pytest.raises(ApiError) as exceeded:  # the quota's own count: one pod
            critical_pod(control_plane, "quota-second")
        assert exceeded.value.status == 403 and "exceeded quota: istio-cni-resource-quota" in exceeded.value.body
    finally:
        for name in created:
            control_plane.delete_pod_now(NAMESPACE, name)
        apply(control_plane, [], REMOVE)
