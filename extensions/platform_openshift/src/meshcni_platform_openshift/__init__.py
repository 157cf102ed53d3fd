"""OpenShift 4 with Multus: the seed page's settings as defaults, the objects OpenShift needs, node checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshcni_hooks import hookimpl
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import ManifestValues, NodeFacts, Platform

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

    @hookimpl
    def meshcni_install_check(self, node: NodeFacts) -> Sequence[str]:
        # Multus runs istio-cni as the network a pod's k8s.v1.cni.cncf.io/networks annotation names,
        # found in its conf dir by the conf's "name"; chained into the default network it never runs.
        if node.chained:
            return [f"Multus runs istio-cni as its own network {NETWORK_NAME!r}, not chained into the default one: "
                    "set values.cni.chained=false (CHAINED_CNI_PLUGIN=false)"]
        if node.network_name != NETWORK_NAME:
            return [f"Multus finds the network {NETWORK_NAME!r} (the NetworkAttachmentDefinition pods ask for) by "
                    f"its conf file's name, but the netconf template names it {node.network_name!r}: "
                    f"set \"name\": \"{NETWORK_NAME}\" in CNI_NETWORK_CONFIG"]
        return []
