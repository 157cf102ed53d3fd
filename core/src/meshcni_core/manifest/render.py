"""The Kubernetes objects for resolved values: what ``meshcni manifest generate`` prints.

Istio's chart (behaviour reference §7.2) with least privilege: the DaemonSet's identity, whose
token ends up on every node in the plugin's kubeconfig, reads pods and nothing else. Repair runs
as its own Deployment under its own identity (docs/repair.md), allowed exactly what its
policies need.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from meshcni_core.manifest.node_taint_policy import own_taint_only_policy
from meshcni_core.manifest.repair_policy import label_only_policy
from meshcni_core.manifest.values import ResolvedValues

NAME = "istio-cni"
REPAIR_NAME = "istio-cni-repair"
INSTALL_DAEMON_SET = "istio-cni-node"
CONFIG_MAP = "istio-cni-config"
MONITORING_PORT = 8000
AGENT_SOCKET_DIR = "/var/run/meshcni"
NODE_EVENTS_NAMESPACE = "default"  # meshcni_core.install.node_events
# What install-cni's work needs, measured (tests/test_capabilities.py: a real ADD fails without
# each): NET_ADMIN programs nf_tables, NET_RAW the legacy iptables' tables, SYS_ADMIN enters the
# pod's netns, SYS_PTRACE reads /proc/<pid>/ns/* of the root plugin (the agent's peer check).
# Its file work in the host's root-owned directories needs none beyond these.
INSTALL_CNI_CAPABILITIES = ("NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE")


def render(resolved: ResolvedValues) -> list[dict[str, Any]]:
    if not resolved.enabled:
        return []
    cni = resolved.cni
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    netconf = network_config(cni, resolved.dns_capture, resolved.native_nftables)
    if cni["taint"]["enabled"]:  # narrowed to its own node's taint by the policy below
        rules.append({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]})
    docs = [
        _meta("v1", "ServiceAccount", NAME, resolved.namespace),
        {**_meta("rbac.authorization.k8s.io/v1", "ClusterRole", NAME), "rules": rules},
        _cluster_binding(NAME, resolved.namespace),
        # Events about its node (taint lifted, edit war): the server keeps those in "default".
        {**_meta("rbac.authorization.k8s.io/v1", "Role", NAME, NODE_EVENTS_NAMESPACE),
         "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
        {**_meta("rbac.authorization.k8s.io/v1", "RoleBinding", NAME, NODE_EVENTS_NAMESPACE),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": resolved.namespace}]},
        {**_meta("v1", "ConfigMap", CONFIG_MAP, resolved.namespace),
         "data": {"cni_network_config": json.dumps(netconf, indent=2)}},
        daemon_set(resolved),
    ]
    if cni["taint"]["enabled"]:
        docs += own_taint_only_policy(f"system:serviceaccount:{resolved.namespace}:{NAME}", cni["taint"]["key"],
                                      {"app": NAME})
    if cni["resourceQuotas"]["enabled"]:  # namespaces other than kube-system admit no such pod without one
        docs.append({**_meta("v1", "ResourceQuota", f"{NAME}-resource-quota", resolved.namespace),
                     "spec": {"hard": {"pods": canonical_count(cni["resourceQuotas"]["pods"])},
                              "scopeSelector": {"matchExpressions": [{"operator": "In", "scopeName": "PriorityClass",
                                                                      "values": ["system-node-critical"]}]}}})
    if cni["psp_cluster_role"]:
        docs.append({**_meta("rbac.authorization.k8s.io/v1", "RoleBinding", f"{NAME}-psp", resolved.namespace),
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                 "name": cni["psp_cluster_role"]},
                     "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": resolved.namespace}]})
    if cni["repair"]["enabled"] and not cni["repair"]["repairPods"]:  # repairPods runs in the DaemonSet
        docs.extend(repair_objects(resolved))
    if cni["platform"]:
        docs.extend(platform_objects(resolved))
    return docs


def platform_objects(resolved: ResolvedValues) -> list[dict[str, Any]]:
    from meshcni_core.platforms import load_platform
    from meshcni_hooks.types import ManifestValues

    pm, _ = load_platform(resolved.cni["platform"])
    values = ManifestValues(namespace=resolved.namespace, cni=copy.deepcopy(resolved.cni),
                            platform=resolved.cni["platform"])
    from meshcni_core.hookcalls import HookCalls

    return [dict(obj) for obj in HookCalls(pm).manifest_objects(values)]


def network_config(cni: dict[str, Any], dns_capture: bool = False, native_nftables: bool = False) -> dict[str, Any]:
    """The plugin's netconf template; install-cni fills the placeholders on each node.
    ``dns_capture``: the mesh-wide default (meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE);
    ``native_nftables``: values.global.nativeNftables, Istio's netconf key."""
    config: dict[str, Any] = {
        "cniVersion": "0.3.1", "name": NAME, "type": NAME, "log_level": cni["logLevel"],
        "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "cni_bin_dir": cni["cniBinDir"],
                       "exclude_namespaces": cni["excludeNamespaces"]},
    }
    if cni["extensions"]:
        config["extensions"] = cni["extensions"]
    if cni["extensionSettings"]:
        config["extension_settings"] = cni["extensionSettings"]
    if dns_capture:
        config["dns_capture"] = True
    if native_nftables:
        config["native_nftables"] = True
    if cni["backend"]:
        config["backend"] = cni["backend"]
    return config


def host_paths(cni: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """(volume name, host path, mount path, mount propagation) of what install-cni changes on a node."""
    return [
        ("cni-bin-dir", cni["cniBinDir"], "/host/opt/cni/bin", None),
        ("cni-net-dir", cni["cniConfDir"], "/host/etc/cni/net.d", None),
        ("agent-socket-dir", AGENT_SOCKET_DIR, AGENT_SOCKET_DIR, None),
        # The agent enters pods' network namespaces by the paths the runtime hands the plugin.
        ("netns-dir", "/var/run/netns", "/var/run/netns", "HostToContainer"),
    ]


def node_settings_env(cni: dict[str, Any]) -> list[dict[str, Any]]:
    """The install-cni variables that say where the plugin goes (uninstall-cni reads the same)."""
    env: list[dict[str, Any]] = [
        {"name": "CNI_NET_DIR", "value": cni["cniConfDir"]},
        {"name": "CHAINED_CNI_PLUGIN", "value": str(cni["chained"]).lower()},
        {"name": "LOG_LEVEL", "value": cni["logLevel"]},
    ]
    if cni["cniConfFileName"]:
        env.insert(0, {"name": "CNI_CONF_NAME", "value": cni["cniConfFileName"]})
    return env


def node_daemon_set(resolved: ResolvedValues, name: str, labels: dict[str, str], pod_spec: dict[str, Any],
                    pod_annotations: dict[str, str], host_pid: bool = False) -> dict[str, Any]:
    """A DaemonSet on every Linux node, whatever its taints, on the host network (so the plugin
    never runs for its own pods)."""
    placement: dict[str, Any] = {"nodeSelector": {"kubernetes.io/os": "linux"}, "hostNetwork": True}
    if host_pid:
        placement["hostPID"] = True  # runtimes may name a netns as /proc/<pid>/ns/net
    return {
        **_meta("apps/v1", "DaemonSet", name, resolved.namespace, labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": pod_annotations},
                "spec": {
                    **placement,
                    "tolerations": [{"effect": "NoSchedule", "operator": "Exists"},
                                    {"key": "CriticalAddonsOnly", "operator": "Exists"},
                                    {"effect": "NoExecute", "operator": "Exists"}],
                    "priorityClassName": "system-node-critical",
                    **pod_spec,
                },
            },
        },
    }


def daemon_set(resolved: ResolvedValues) -> dict[str, Any]:
    cni = resolved.cni
    env = [
        *node_settings_env(cni),
        {"name": "CNI_NETWORK_CONFIG",
         "valueFrom": {"configMapKeyRef": {"name": CONFIG_MAP, "key": "cni_network_config"}}},
        {"name": "KUBERNETES_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        # install-cni serves its probes on this address only (hostNetwork: the node's IP, which kubelet probes)
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    if cni["platform"]:  # install-cni runs the platform's node checks (the image holds its extension)
        env.append({"name": "MESHCNI_PLATFORM", "value": cni["platform"]})
    repair = cni["repair"]
    if repair["enabled"] and repair["repairPods"]:  # read-only: the agent's own identity suffices
        env += [{"name": "REPAIR_ENABLED", "value": "true"}, {"name": "REPAIR_REPAIR-PODS", "value": "true"},
                {"name": "REPAIR_INIT-CONTAINER-NAME", "value": repair["initContainerName"]}]
    env += node_ops_env(cni)
    paths = host_paths(cni)
    mounts = [{"name": name, "mountPath": path, **({"mountPropagation": prop} if prop else {})}
              for name, _, path, prop in paths]
    container = {
        "name": "install-cni", "image": resolved.image, "imagePullPolicy": cni["pullPolicy"],
        "command": ["meshcni", "install-cni", "--log-level", cni["logLevel"]],
        "env": env, "volumeMounts": mounts,
        "ports": [{"name": "monitoring", "containerPort": MONITORING_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": MONITORING_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": MONITORING_PORT}, "periodSeconds": 10},
        "securityContext": security_context(cni),
    }
    if cni["resources"]:
        container["resources"] = cni["resources"]
    container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})  # the root filesystem is read-only
    pod_spec = {
        "serviceAccountName": NAME,
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [*({"name": name, "hostPath": {"path": host}} for name, host, _, _ in paths),
                    {"name": "tmp", "emptyDir": {}}],
    }
    # As Istio's chart: AppArmor's default profile would refuse the mounts and netns work below.
    annotations = {"container.apparmor.security.beta.kubernetes.io/install-cni": "unconfined",
                   **cni["podAnnotations"]}
    return node_daemon_set(resolved, INSTALL_DAEMON_SET, {"k8s-app": "istio-cni-node"}, pod_spec,
                           annotations, host_pid=True)


def canonical_count(count: int) -> str:
    """A whole number as the API server stores a quantity (5000 -> "5k"), so that what is applied
    reads back unchanged."""
    suffixes = ["", "k", "M", "G", "T", "P", "E"]
    while count and count % 1000 == 0 and len(suffixes) > 1:
        count //= 1000
        suffixes.pop(0)
    return f"{count}{suffixes[0]}"


def security_context(cni: dict[str, Any], capabilities: tuple[str, ...] = INSTALL_CNI_CAPABILITIES) -> dict[str, Any]:
    """Root (host files), the measured capabilities and no others, a read-only root filesystem."""
    context: dict[str, Any] = {
        "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], **({"add": list(capabilities)} if capabilities else {})},
    }
    if not capabilities:  # nothing to gain either: no setuid binary may hand any back
        context["allowPrivilegeEscalation"] = False
    if cni["seLinuxOptions"]:
        context["seLinuxOptions"] = cni["seLinuxOptions"]
    if cni["seccompProfile"]:
        context["seccompProfile"] = cni["seccompProfile"]
    return context


def node_ops_env(cni: dict[str, Any]) -> list[dict[str, Any]]:
    """install-cni's readiness taint and its own conf file, when asked for."""
    env: list[dict[str, Any]] = []
    if cni["taint"]["enabled"]:
        env.append({"name": "MESHCNI_READINESS_TAINT", "value": cni["taint"]["key"]})
    if cni["istioOwnedCNIConfig"]:
        env.append({"name": "ISTIO_OWNED_CNI_CONFIG", "value": "true"})
        if cni["istioOwnedCNIConfigFilename"]:
            env.append({"name": "ISTIO_OWNED_CNI_CONFIG_FILENAME", "value": cni["istioOwnedCNIConfigFilename"]})
    return env


# The pod writes each first-party repair policy makes; a policy named otherwise may make any write
# the repair actions offer (label, delete), the label confined by the admission policy as always.
POLICY_WRITES = {"label": ["patch"], "delete": ["delete"]}
ANY_POLICY_WRITES = ["patch", "delete"]


def repair_objects(resolved: ResolvedValues) -> list[dict[str, Any]]:
    repair = resolved.cni["repair"]
    # The policy meshcni repair picks: the named one, else delete when deletePods, else label when
    # labelPods, else report only.
    policy = repair["policy"] or ("delete" if repair["deletePods"] else "label" if repair["labelPods"] else "")
    acting = POLICY_WRITES.get(policy, ANY_POLICY_WRITES) if policy else []
    verbs = ["get", "list", "watch", *acting]
    named = repair["policy"]  # wins: Istio's flags, which would contradict it, are off
    flags = {
        "label-pods": str(repair["labelPods"] and not named).lower(),
        "delete-pods": str(repair["deletePods"] and not named).lower(),
        "run-as-daemon": "true", "sidecar-annotation": "sidecar.istio.io/status",
        "init-container-name": repair["initContainerName"],
        "broken-pod-label-key": repair["brokenPodLabelKey"], "broken-pod-label-value": repair["brokenPodLabelValue"],
        **({"policy": named} if named else {}),
    }
    labels = {"k8s-app": REPAIR_NAME}
    deployment = {
        **_meta("apps/v1", "Deployment", REPAIR_NAME, resolved.namespace, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": REPAIR_NAME,
                    "containers": [{
                        "name": "repair", "image": resolved.repair_image,
                        "imagePullPolicy": resolved.cni["pullPolicy"],
                        "command": ["meshcni", "repair"],
                        "env": [{"name": f"REPAIR_{key.upper()}", "value": value} for key, value in flags.items()],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                            "allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }
    objects = [
        _meta("v1", "ServiceAccount", REPAIR_NAME, resolved.namespace),
        {**_meta("rbac.authorization.k8s.io/v1", "ClusterRole", REPAIR_NAME),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
        _cluster_binding(REPAIR_NAME, resolved.namespace),
        deployment,
    ]
    if "patch" in acting:  # RBAC cannot narrow patch to one label: an admission policy does
        username = f"system:serviceaccount:{resolved.namespace}:{REPAIR_NAME}"
        objects += label_only_policy(username, repair["brokenPodLabelKey"], repair["brokenPodLabelValue"],
                                     {"app": NAME})
    return objects


def _cluster_binding(name: str, namespace: str) -> dict[str, Any]:
    return {**_meta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}


def _meta(api_version: str, kind: str, name: str, namespace: str | None = None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app": NAME, **(labels or {})}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """Multi-document YAML without anchors, multi-line strings as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False)
