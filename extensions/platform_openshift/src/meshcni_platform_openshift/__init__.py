"""OpenShift 4 with Multus: the seed page's settings as defaults, the objects OpenShift needs, node checks."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshcni_hooks import hookimpl
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import ManifestValues, NodeFacts, Platform

NETWORK_NAME = "istio-cni"  # the Multus network pods ask for; install-cni's conf file carries this name
OPENSHIFT_DEFAULTS = {
    "components": {"cni": {"namespace": "kube-system"}},
    "values": {
        "cni": {"cniBinDir": "/var/lib/cni/bin", "cniConfDir": "/etc/cni/multus/net.d", "chained": False,
                "cniConfFileName": "istio-cni.conf",
                "seLinuxOptions": {"type": "spc_t"}},  # as Istio's openshift profile: host files and netns
        "sidecarInjectorWebhook": {"injectedAnnotations": {"k8s.v1.cni.cncf.io/networks": NETWORK_NAME}},
    },
}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class Settings:
    """``values.cni.platformSettings`` for OpenShift."""

    application_namespaces: tuple[str, ...] = ()
    # The SCC the application pods' service accounts may use: the proxy runs as UID 1337, outside
    # the namespace's UID range that OpenShift's default ``restricted`` SCC enforces.
    application_scc: str = "anyuid"

    @classmethod
    def parse(cls, given: Mapping[str, Any]) -> Settings:
        known = {"applicationNamespaces", "applicationSCC"}
        unknown = sorted(set(given) - known)
        if unknown:
            raise MeshcniError(f"values.cni.platformSettings: unknown key(s) {', '.join(unknown)} for openshift "
                               f"(known: {', '.join(sorted(known))})")
        namespaces = given.get("applicationNamespaces", [])
        if not isinstance(namespaces, list | tuple) or not all(isinstance(n, str) and DNS_LABEL.fullmatch(n)
                                                       for n in namespaces):
            raise MeshcniError("values.cni.platformSettings.applicationNamespaces: expected a list of namespace "
                               f"names, got {namespaces!r}")
        scc = given.get("applicationSCC", cls.application_scc)
        if not isinstance(scc, str) or (scc and not DNS_SUBDOMAIN.fullmatch(scc)):
            raise MeshcniError("values.cni.platformSettings.applicationSCC: expected the name of a "
                               f"SecurityContextConstraints, or \"\" to grant none, got {scc!r}")
        return cls(tuple(namespaces), scc)


def _use_scc_role(name: str, scc: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(labels)},
            "rules": [{"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
                       "resourceNames": [scc], "verbs": ["use"]}]}


class OpenShiftPlatform:
    @hookimpl
    def meshcni_register_platforms(self) -> Sequence[Platform]:
        return [Platform(name="openshift", defaults=OPENSHIFT_DEFAULTS, provider="meshcni-platform-openshift",
                         description="Multus secondary network in kube-system, privileged SCC")]

    @hookimpl
    def meshcni_manifest_objects(self, values: ManifestValues) -> Sequence[Mapping[str, Any]]:
        settings = Settings.parse(values.cni.get("platformSettings", {}))
        labels = {"app": "istio-cni"}
        role = "istio-cni-scc-privileged"
        objects: list[Mapping[str, Any]] = [
            _use_scc_role(role, "privileged", labels),
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": role, "labels": labels},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": "istio-cni", "namespace": values.namespace}]},
        ]
        app_role = f"istio-cni-application-scc-{settings.application_scc}"
        if settings.application_namespaces and settings.application_scc:
            objects.append(_use_scc_role(app_role, settings.application_scc, labels))
        for namespace in settings.application_namespaces:
            objects.append({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                            "metadata": {"name": NETWORK_NAME, "namespace": namespace, "labels": labels}})
            if settings.application_scc:  # what `oc adm policy add-scc-to-group SCC system:serviceaccounts:NS` grants
                objects.append({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": app_role, "namespace": namespace, "labels": labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": app_role},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                  "name": f"system:serviceaccounts:{namespace}"}]})
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
