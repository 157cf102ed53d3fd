"""Where a pod's proxy is: its ``istio-proxy`` container, the UID/GID it runs as, and the
application init containers that run before it has started.

Today's Istio injects ``istio-proxy`` either as a regular container or, with native sidecars
(Kubernetes 1.28+), as an init container with ``restartPolicy: Always``. Its plugin takes the
proxy's UID and GID from that container's own ``securityContext`` (``runAsUser``/``runAsGroup``),
each falling back to 1337 when unset or 0; the pod-level securityContext is not consulted.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcni_hooks.types import ContainerInfo, PodInfo

PROXY_CONTAINER = "istio-proxy"
DEFAULT_PROXY_ID = 1337
# Init containers the injector adds; they need no network (istio-validation only dials loopback).
INJECTED_INIT_CONTAINERS = ("istio-init", "istio-validation")


def proxy_container(pod: PodInfo) -> ContainerInfo | None:
    """The pod's proxy: a regular container named istio-proxy, or a native sidecar of that name.
    A plain init container named istio-proxy (no ``restartPolicy: Always``) is not a proxy."""
    for container in pod.container_specs:
        if container.name == PROXY_CONTAINER and (not container.init or container.native_sidecar):
            return container
    return None


def describe(container: ContainerInfo) -> str:
    if container.native_sidecar:
        return f"init container {container.name} with restartPolicy: Always (a native sidecar)"
    return f"{'init ' if container.init else ''}container {container.name}"


@dataclass(frozen=True)
class ProxyIdentity:
    uid: int
    gid: int
    uid_origin: str
    gid_origin: str

    def summary(self) -> str:
        if self.uid_origin == self.gid_origin:
            return f"proxy UID and GID {self.uid}/{self.gid} ({self.uid_origin})"
        return f"proxy UID {self.uid} ({self.uid_origin}), GID {self.gid} ({self.gid_origin})"


NO_SPEC = "default: the pod's container spec is unknown (the runtime passed only annotations)"


def proxy_identity(pod: PodInfo) -> ProxyIdentity:
    """The UID and GID whose traffic bypasses capture, and where each came from."""
    proxy = proxy_container(pod)
    if proxy is None:
        why = NO_SPEC if not pod.container_specs else "default: the pod has no istio-proxy container"
        return ProxyIdentity(DEFAULT_PROXY_ID, DEFAULT_PROXY_ID, why, why)
    uid, uid_origin = _chosen(proxy.run_as_user, f"{describe(proxy)}, securityContext.runAsUser")
    gid, gid_origin = _chosen(proxy.run_as_group, f"{describe(proxy)}, securityContext.runAsGroup")
    return ProxyIdentity(uid, gid, uid_origin, gid_origin)


def _chosen(value: int | None, field: str) -> tuple[int, str]:
    if value is None:
        return DEFAULT_PROXY_ID, f"default: {field} is not set"
    if value == 0:
        return DEFAULT_PROXY_ID, f"default: {field} is 0, which today's Istio ignores"
    return value, field


def init_containers_before_proxy(pod: PodInfo) -> tuple[ContainerInfo, ...]:
    """Application init containers that run while the redirect rules exist but the proxy does
    not listen yet, and whose traffic is captured (they do not run as the proxy's UID).

    With a classic sidecar that is every application init container; with a native sidecar only
    those listed before ``istio-proxy`` (Kubernetes starts init containers in order). Unknown
    (empty) without the pod's spec.
    """
    proxy = proxy_container(pod)
    if proxy is None:
        return ()
    identity = proxy_identity(pod)
    before: list[ContainerInfo] = []
    for container in pod.container_specs:
        if container is proxy:
            break
        if not container.init or container.name in INJECTED_INIT_CONTAINERS:
            continue
        runs_as = container.run_as_user if container.run_as_user is not None else pod.pod_run_as_user
        if runs_as != identity.uid and container.run_as_group != identity.gid:
            before.append(container)
    return tuple(before)
