"""OpenShift 4 with Multus: the seed page's settings as defaults, and the objects OpenShift needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshcni_hooks import hookimpl
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import ManifestValues, Platform

NETWORK_NAME = "istio-cni"  # the Multus network pods ask for; install-cni's conf file carries this name
OPENSHIFT_DEFAULTS = {
    "components": {"cni": {"namespace": "kube-system"}},
    "values": {
        "cni": {"cniBinDir": "/var/lib/cni/bin", "cniConfDir": "/etc/cni/multus/net.d", "chained": False,
                "cniConfFileName": "istio-cni.conf"},
        "sidecarInjectorWebhook": {"injectedAnnotations": {"k8s.v1.cni.cncf.io/networks": NETWORK_NAME}},
    },
}
SETTINGS = ("applicationNamespaces",)


def _application_namespaces(settings: Mapping[str, Any]) -> list[str]:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise MeshcniError(f"values.cni.platformSettings: unknown key(s) {', '.join(unknown)} for openshift "
                           f"(known: {', '.join(SETTINGS)})")
    namespaces = settings.get("applicationNamespaces", [])
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise MeshcniError("values.cni.platformSettings.applicationNamespaces: expected a list of namespace names, "
                           f"got {namespaces!r}")
    return namespaces


class OpenShiftPlatform:
    @hookimpl
    def meshcni_register_platforms(self) -> Sequence[Platform]:
        return [Platform(name="openshift", defaults=OPENSHIFT_DEFAULTS, provider="meshcni-platform-openshift",
                         description="Multus secondary network in kube-system, privileged SCC")]

    @hookimpl
    def meshcni_manifest_objects(self, values: ManifestValues) -> Sequence[Mapping[str, Any]]:
        labels = {"app": "istio-cni"}
        role = "istio-cni-scc-privileged"
        objects: list[Mapping[str, Any]] = [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": role, "labels": labels},
             "rules": [{"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
                        "resourceNames": ["privileged"], "verbs": ["use"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": role, "labels": labels},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": "istio-cni", "namespace": values.namespace}]},
        ]
        for namespace in _application_namespaces(values.cni.get("platformSettings", {})):
            objects.append({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                            "metadata": {"name": NETWORK_NAME, "namespace": namespace, "labels": labels}})
        return objects
