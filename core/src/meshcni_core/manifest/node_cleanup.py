"""Removing the plugin from the nodes when meshcni is removed: the clean-up DaemonSet.

Deleting the install DaemonSet leaves every node with the plugin chained into its CNI
configuration and a kubeconfig whose token dies with the ServiceAccount. A preStop hook cannot
undo that: a rollout stops install-cni the same way, and a rollout must never uninstall. So
``meshcni manifest apply`` creates ``istio-cni-uninstall`` when the values it applies no longer
install the plugin (``components.cni.enabled=false``) while the cluster still has the install
DaemonSet. On every node, with the same host mounts, its init container waits until the node's
agent has stopped (install-cni serves its socket until it exits: a stopping install-cni could
otherwise chain the plugin back), then runs ``meshcni uninstall-cni``; its container then idles,
so the pod being Ready means that node is clean. A later apply removes the DaemonSet once its
status shows it Ready on every node it is scheduled to, and keeps it until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshcni_core.manifest.render import (
    AGENT_SOCKET_DIR,
    INSTALL_DAEMON_SET,
    host_paths,
    node_daemon_set,
    node_settings_env,
    security_context,
)
from meshcni_core.manifest.values import ResolvedValues

UNINSTALL_DAEMON_SET = "istio-cni-uninstall"
AGENT_SOCKET = f"{AGENT_SOCKET_DIR}/cni.sock"
# What uninstall-cni's work needs, measured (tests/test_capabilities.py): none. It only removes and
# rewrites root's files in root's directories (the conf and bin dirs, the agent's 0700 state
# directory) and connects to root's 0600 socket, which uid 0 may do by ownership alone.
UNINSTALL_CNI_CAPABILITIES: tuple[str, ...] = ()


def uninstall_daemon_set(resolved: ResolvedValues) -> dict[str, Any]:
    cni = resolved.cni
    paths = [p for p in host_paths(cni) if p[0] != "netns-dir"]  # it enters no pod
    uninstall = {
        "name": "uninstall-cni", "image": resolved.image, "imagePullPolicy": cni["pullPolicy"],
        "command": ["meshcni", "uninstall-cni", "--wait-for-agent", AGENT_SOCKET],
        "env": node_settings_env(cni),
        "volumeMounts": [{"name": name, "mountPath": path} for name, _, path, _ in paths],
        # As install-cni's (seccomp, SELinux's spc_t on OpenShift) with no capability at all.
        "securityContext": security_context(cni, UNINSTALL_CNI_CAPABILITIES),
    }
    idle = {
        "name": "uninstalled", "image": resolved.image, "imagePullPolicy": cni["pullPolicy"],
        "command": ["meshcni", "idle"],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    pod_spec = {
        "automountServiceAccountToken": False,  # it needs no API access
        "terminationGracePeriodSeconds": 5,
        "initContainers": [uninstall],
        "containers": [idle],
        "volumes": [{"name": name, "hostPath": {"path": host}} for name, host, _, _ in paths],
    }
    return node_daemon_set(resolved, UNINSTALL_DAEMON_SET, {"k8s-app": UNINSTALL_DAEMON_SET}, pod_spec, {})


def finished(daemon_set: Mapping[str, Any]) -> bool:
    """Its current pods are Ready on every node it is scheduled to: every node was cleaned."""
    status = daemon_set.get("status") or {}
    generation = (daemon_set.get("metadata") or {}).get("generation", 0)
    desired = status.get("desiredNumberScheduled")
    return (desired is not None and status.get("observedGeneration", 0) >= generation
            and status.get("numberReady") == desired and status.get("updatedNumberScheduled", 0) == desired)


def with_node_cleanup(documents: Sequence[Mapping[str, Any]], installed: Mapping[str, Mapping[str, Any]],
                      cleanup: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``documents`` plus the clean-up DaemonSet when it must run: the values no longer install the
    plugin while the cluster has its DaemonSet, or a clean-up has not finished on every node yet.
    ``installed`` holds the DaemonSets of meshcni's set in the cluster, by name."""
    if any(d["kind"] == "DaemonSet" and d["metadata"]["name"] == INSTALL_DAEMON_SET for d in documents):
        return list(documents)  # installing: a clean-up left from before is pruned
    running = installed.get(UNINSTALL_DAEMON_SET)
    if INSTALL_DAEMON_SET in installed or (running is not None and not finished(running)):
        return [*documents, cleanup]
    return list(documents)
