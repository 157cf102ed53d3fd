"""A rendered pod template turned into CRI requests the way kubelet turns it (pkg/kubelet/kuberuntime).

Only what our templates use is translated; any other field of the pod spec, a container or a
security context raises ``Untranslated`` naming it, so a template change (a new capability set, an
init container, a seccomp profile) fails the end-to-end test until this file does what kubelet does
with it, instead of being silently dropped.
"""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_api.v1 import api_pb2

from meshcni_core import netns

# Fields kubelet acts on elsewhere than in the runtime's configuration (scheduling, API objects).
SCHEDULING_FIELDS = {"nodeSelector", "tolerations", "priorityClassName", "serviceAccountName",
                     "terminationGracePeriodSeconds", "automountServiceAccountToken"}
# kubelet's defaults for a container with procMount Default that is not privileged.
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PROPAGATION = {None: api_pb2.PROPAGATION_PRIVATE, "None": api_pb2.PROPAGATION_PRIVATE,
               "HostToContainer": api_pb2.PROPAGATION_HOST_TO_CONTAINER,
               "Bidirectional": api_pb2.PROPAGATION_BIDIRECTIONAL}


class Untranslated(AssertionError):
    pass


@dataclass(frozen=True)
class Node:
    """What kubelet knows of its node and of the cluster when it starts a pod there."""

    name: str
    ip: str  # a hostNetwork pod's status.podIP
    api_host: str  # the `kubernetes` Service, which kubelet puts into every pod's environment
    api_port: int


def _refuse_unknown(kind: str, given: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise Untranslated(f"{kind}: kubelet translation of {unknown} is not written (tests/e2e/kubelet_cri.py)")


def sandbox_config(template: dict[str, Any], name: str, namespace: str, uid: str,
                   log_directory: str) -> api_pb2.PodSandboxConfig:
    spec = template["spec"]
    _refuse_unknown("pod spec", spec, SCHEDULING_FIELDS | {"hostNetwork", "hostPID", "containers", "volumes"})
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
        hostname="" if spec.get("hostNetwork") else name,  # a hostNetwork pod keeps the node's UTS namespace
        log_directory=log_directory,
        labels=template["metadata"].get("labels", {}), annotations=template["metadata"].get("annotations") or {},
        linux=api_pb2.LinuxPodSandboxConfig(security_context=api_pb2.LinuxSandboxSecurityContext(
            namespace_options=_namespaces(spec),
            # kubelet runs the sandbox privileged when any of its containers is
            privileged=any((c.get("securityContext") or {}).get("privileged") for c in spec["containers"]),
        )),
    )


def _namespaces(spec: dict[str, Any]) -> api_pb2.NamespaceOption:
    return api_pb2.NamespaceOption(network=api_pb2.NODE if spec.get("hostNetwork") else api_pb2.POD,
                                   pid=api_pb2.NODE if spec.get("hostPID") else api_pb2.CONTAINER)


def container_config(template: dict[str, Any], container: dict[str, Any], node: Node,
                     config_maps: dict[str, dict[str, str]], service_account_dir: Path,
                     log_path: str) -> api_pb2.ContainerConfig:
    _refuse_unknown(f"container {container['name']}", container, {
        "name", "image", "imagePullPolicy", "command", "args", "env", "volumeMounts", "ports", "readinessProbe",
        "livenessProbe", "securityContext", "resources"})
    spec = template["spec"]
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=container["name"], attempt=0),
        image=api_pb2.ImageSpec(image=container["image"]),
        command=container.get("command", []), args=container.get("args", []),
        envs=[api_pb2.KeyValue(key=k, value=v) for k, v in environment(container, node, config_maps)],
        mounts=mounts(container, spec, service_account_dir),
        log_path=log_path,
        linux=api_pb2.LinuxContainerConfig(security_context=security_context(container, spec, template)),
    )


def environment(container: dict[str, Any], node: Node, config_maps: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """The container's env with valueFrom resolved, after kubelet's service variables."""
    fields = {"spec.nodeName": node.name, "status.podIP": node.ip, "status.hostIP": node.ip}
    env = [("KUBERNETES_SERVICE_HOST", node.api_host), ("KUBERNETES_SERVICE_PORT", str(node.api_port)),
           ("KUBERNETES_PORT", f"tcp://{node.api_host}:{node.api_port}")]
    for item in container.get("env", []):
        source = item.get("valueFrom")
        if source is None:
            env.append((item["name"], item["value"]))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env.append((item["name"], config_maps[ref["name"]][ref["key"]]))
        elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
            env.append((item["name"], fields[source["fieldRef"]["fieldPath"]]))
        else:
            raise Untranslated(f"env {item['name']}: valueFrom {source}")
    return env


def mounts(container: dict[str, Any], spec: dict[str, Any], service_account_dir: Path) -> list[api_pb2.Mount]:
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    out = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        _refuse_unknown(f"volume {volume['name']}", volume, {"name", "hostPath", "emptyDir"})
        if "emptyDir" in volume:  # kubelet: a fresh directory of the pod's, beside its other volumes
            _refuse_unknown(f"emptyDir of {volume['name']}", volume["emptyDir"] or {}, set())
            empty_dir = service_account_dir.parent / "empty-dir" / volume["name"]
            empty_dir.mkdir(parents=True, exist_ok=True)
            out.append(api_pb2.Mount(container_path=mount["mountPath"], host_path=str(empty_dir),
                                     readonly=bool(mount.get("readOnly"))))
            continue
        _refuse_unknown(f"hostPath of {volume['name']}", volume["hostPath"], {"path", "type"})
        if volume["hostPath"].get("type", "") not in ("", "Directory", "DirectoryOrCreate"):
            raise Untranslated(f"hostPath type {volume['hostPath']['type']}")
        out.append(api_pb2.Mount(container_path=mount["mountPath"], host_path=volume["hostPath"]["path"],
                                 readonly=bool(mount.get("readOnly")),
                                 propagation=PROPAGATION[mount.get("mountPropagation")]))
    if spec.get("automountServiceAccountToken", True):  # the projected token, as kubelet writes it
        out.append(api_pb2.Mount(container_path=SERVICE_ACCOUNT_MOUNT, host_path=str(service_account_dir),
                                 readonly=True))
    return out


def security_context(container: dict[str, Any], spec: dict[str, Any],
                     template: dict[str, Any]) -> api_pb2.LinuxContainerSecurityContext:
    given = container.get("securityContext") or {}
    annotations = template["metadata"].get("annotations") or {}
    apparmor = annotations.get(f"container.apparmor.security.beta.kubernetes.io/{container['name']}", "")
    if apparmor not in ("", "unconfined", "runtime/default"):
        raise Untranslated(f"AppArmor profile {apparmor}")
    _refuse_unknown(f"securityContext of {container['name']}", given, {
        "privileged", "capabilities", "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
        "allowPrivilegeEscalation", "seccompProfile", "seLinuxOptions"})
    privileged = bool(given.get("privileged"))
    capabilities = given.get("capabilities") or {}
    _refuse_unknown("capabilities", capabilities, {"add", "drop"})
    seccomp = (given.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp not in ("RuntimeDefault", "Unconfined"):
        raise Untranslated(f"seccompProfile {seccomp}")
    context = api_pb2.LinuxContainerSecurityContext(
        privileged=privileged, namespace_options=_namespaces(spec),
        capabilities=api_pb2.Capability(add_capabilities=capabilities.get("add", []),
                                        drop_capabilities=capabilities.get("drop", [])),
        readonly_rootfs=bool(given.get("readOnlyRootFilesystem")),
        no_new_privs=given.get("allowPrivilegeEscalation") is False,
        seccomp=api_pb2.SecurityProfile(profile_type=getattr(api_pb2.SecurityProfile, seccomp)),
        apparmor=api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined if apparmor == "unconfined"
                                         else api_pb2.SecurityProfile.RuntimeDefault),
        masked_paths=[] if privileged else MASKED_PATHS, readonly_paths=[] if privileged else READONLY_PATHS,
    )
    if "seLinuxOptions" in given:  # passed on as kubelet does; see selinux_options()
        context.selinux_options.CopyFrom(selinux_options(given["seLinuxOptions"]))
    if "runAsUser" in given:
        context.run_as_user.value = given["runAsUser"]
    if "runAsGroup" in given:
        context.run_as_group.value = given["runAsGroup"]
    if given.get("runAsNonRoot") and given.get("runAsUser", 0) == 0:
        raise Untranslated("runAsNonRoot without a non-zero runAsUser: kubelet would refuse to start it")
    return context


def selinux_options(given: dict[str, str]) -> api_pb2.SELinuxOption:
    """kubelet hands the label to the runtime unchanged. Only a host with SELinux enabled applies it:
    on one without (as this machine: no /sys/fs/selinux), containerd starts the container unlabelled,
    as it does for every pod there, so an end-to-end run here proves the label is accepted, not
    that spc_t grants what OpenShift's policy would."""
    _refuse_unknown("seLinuxOptions", given, {"user", "role", "type", "level"})
    return api_pb2.SELinuxOption(user=given.get("user", ""), role=given.get("role", ""), type=given.get("type", ""),
                                 level=given.get("level", ""))


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def probe(spec: dict[str, Any], container: dict[str, Any], pod_ip: str, netns_path: str) -> bool:
    """One HTTP probe as kubelet's prober sends it (from the node, to the pod's IP): 2xx/3xx passes."""
    get = spec["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
    status, _ = http_get(netns_path, get.get("host", pod_ip), port, get.get("path", "/"), spec.get("timeoutSeconds", 1))
    return 200 <= status < 400


def http_get(netns_path: str, host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    """(status, body) of a GET sent from inside ``netns_path``; status 0 when nothing answered."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the namespace is entered by a child only
        os.close(read)
        try:
            with netns.entered(netns_path):
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
                connection.request("GET", path)
                response = connection.getresponse()
                os.write(write, f"{response.status}\n".encode() + response.read())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        data = answer.read()
    os.waitpid(child, 0)
    status, _, body = data.partition(b"\n")
    return (int(status), body.decode()) if status else (0, "")
