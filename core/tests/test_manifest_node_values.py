"""Issue 12: ``cni.resourceQuotas`` and ``cni.resources`` are honoured as Istio's chart honours them."""

from __future__ import annotations

from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def test_the_resource_quota_admits_that_many_system_node_critical_pods_in_the_install_namespace():
    documents = by_kind(render(resolve(sets=["values.cni.resourceQuotas.enabled=true",
                                             "values.cni.resourceQuotas.pods=64",
                                             "components.cni.namespace=kube-system"])))
    quota = documents["ResourceQuota/istio-cni-resource-quota"]
    assert quota["metadata"]["namespace"] == "kube-system"
    assert quota["spec"] == {"hard": {"pods": "64"}, "scopeSelector": {"matchExpressions": [
        {"operator": "In", "scopeName": "PriorityClass", "values": ["system-node-critical"]}]}}
    pod = documents["DaemonSet/istio-cni-node"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"  # what the quota's scope counts
    assert "ResourceQuota/istio-cni-resource-quota" not in by_kind(render(resolve()))


def test_the_container_resources_are_the_values_and_default_as_istio_s_chart():
    container = lambda sets: by_kind(render(resolve(sets=sets)))[  # noqa: E731
        "DaemonSet/istio-cni-node"]["spec"]["template"]["spec"]["containers"][0]
    assert container([])["resources"] == {"requests": {"cpu": "100m", "memory": "100Mi"}}
    given = container(["values.cni.resources.requests.cpu=250m", "values.cni.resources.limits.memory=1Gi"])
    assert given["resources"] == {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"memory": "1Gi"}}
