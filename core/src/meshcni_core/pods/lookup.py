"""Where a pod's metadata comes from: the runtime's annotations, or the API server.

The kubernetes client is imported only when the API really has to be asked (it costs about
270 ms to import); the runtime's annotations are enough for every non-mesh pod and, through the
injector's status annotation, for most mesh pods.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from meshcni_hooks.errors import MeshcniError, PodLookupError
from meshcni_hooks.types import ContainerInfo, PodInfo

log = logging.getLogger("meshcni")
FIRST_RETRY_DELAY = 0.1
MAX_RETRY_DELAY = 1.0
REQUEST_TIMEOUT = 5.0
DNS_CAPTURE_ENV = "ISTIO_META_DNS_CAPTURE"


def pod_from_annotations(namespace: str, name: str, uid: str, annotations: Mapping[str, str]) -> PodInfo:
    return PodInfo(namespace=namespace, name=name, uid=uid, annotations=dict(annotations), source="runtime-config")


def pod_from_manifest(doc: Mapping[str, Any], source: str = "manifest") -> PodInfo:
    """PodInfo from a Pod as JSON (a manifest as kubectl shows it, or the API's answer: ``source="api"``)."""
    if doc.get("kind", "Pod") != "Pod":
        raise MeshcniError(f"expected a Pod, got kind {doc.get('kind')!r}")
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    inits = [_container_from_json(c, init=True) for c in spec.get("initContainers") or []]
    regular = [_container_from_json(c, init=False) for c in spec.get("containers") or []]
    return PodInfo(
        namespace=str(meta.get("namespace") or "default"), name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""), annotations=annotations,
        containers=tuple(c.name for c in regular),
        init_containers=tuple(c.name for c in inits),
        source=source,
        container_specs=(*inits, *regular),
        pod_run_as_user=_id_field((spec.get("securityContext") or {}).get("runAsUser"), "the pod's runAsUser"),
    )


def _container_from_json(container: Mapping[str, Any], *, init: bool) -> ContainerInfo:
    name = str(container.get("name"))
    security = container.get("securityContext") or {}
    return ContainerInfo(
        name=name, init=init, restart_policy=str(container.get("restartPolicy") or ""),
        run_as_user=_id_field(security.get("runAsUser"), f"container {name}'s runAsUser"),
        run_as_group=_id_field(security.get("runAsGroup"), f"container {name}'s runAsGroup"),
        env_dns_capture=_env_value([(e.get("name"), e.get("value")) for e in container.get("env") or []]),
    )


def _env_value(pairs: list[tuple[Any, Any]], name: str = DNS_CAPTURE_ENV) -> str | None:
    """The literal value of env ``name`` (the last one wins, as in Kubernetes); None when it is
    absent or comes from valueFrom."""
    found: str | None = None
    for key, value in pairs:
        if key == name:
            found = value if isinstance(value, str) else None
    return found


def _id_field(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MeshcniError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def pod_from_api_object(pod: Any) -> PodInfo:
    """PodInfo from a kubernetes client V1Pod."""
    meta, spec = pod.metadata, pod.spec
    inits = [_container_from_object(c, init=True) for c in spec.init_containers or []]
    regular = [_container_from_object(c, init=False) for c in spec.containers or []]
    return PodInfo(
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid or "",
        annotations=dict(meta.annotations or {}),
        containers=tuple(c.name for c in regular),
        init_containers=tuple(c.name for c in inits),
        source="api",
        container_specs=(*inits, *regular),
        pod_run_as_user=spec.security_context.run_as_user if spec.security_context else None,
    )


def _container_from_object(container: Any, *, init: bool) -> ContainerInfo:
    security = container.security_context
    return ContainerInfo(
        name=container.name, init=init, restart_policy=container.restart_policy or "",
        run_as_user=security.run_as_user if security else None,
        run_as_group=security.run_as_group if security else None,
        env_dns_capture=_env_value([(e.name, e.value) for e in container.env or []]),
    )


class ApiClients:
    """One API client per kubeconfig, rebuilt when the file changes (a rotated token).

    The node agent keeps one of these for its lifetime, so pod lookups reuse warm connections.
    ``credential_plugins`` allows kubeconfigs that run a command or read a token file - only for
    an operator's own kubeconfig (manifest apply, repair, explain), never for a path taken from
    the CNI configuration (``meshcni_core.pods.credentials``).
    """

    def __init__(self, credential_plugins: bool = False) -> None:
        self._clients: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._credential_plugins = credential_plugins

    def get(self, kubeconfig: str, reread: bool = False) -> Any:
        """``reread``: build a new client even when the file looks unchanged - after a 401, as the
        token may have been rewritten since (within the same mtime, or after the client was built)."""
        try:
            mtime = os.stat(kubeconfig).st_mtime
        except OSError as exc:
            raise PodLookupError(f"cannot read kubeconfig {kubeconfig}: {exc.strerror}") from None
        with self._lock:
            cached = self._clients.get(kubeconfig)
            if cached is not None and cached[0] == mtime and not reread:
                return cached[1]
            api_client = _load_client(kubeconfig, self._credential_plugins)
            if cached is not None:
                cached[1].close()
            self._clients[kubeconfig] = (mtime, api_client)
            return api_client


def _load_client(kubeconfig: str, credential_plugins: bool) -> Any:
    from kubernetes import client, config  # heavy; only on this path

    from meshcni_core.pods.credentials import load_checked_client

    settings = client.Configuration()
    # fetch_pod owns retrying against its deadline; urllib3's own retries would multiply each
    # request's timeout (seen: a 1 s deadline took 5 s).
    settings.retries = False
    try:
        if not credential_plugins:
            return load_checked_client(kubeconfig, settings)
        return config.new_client_from_config(config_file=kubeconfig, client_configuration=settings)
    except PodLookupError:
        raise
    except Exception as exc:  # noqa: BLE001 - the loader raises many unrelated types for bad files
        raise PodLookupError(f"cannot load kubeconfig {kubeconfig}: {exc}") from None


def _same_pod(found: PodInfo, uid: str) -> PodInfo:
    """``found`` unless a UID was asked for and the pod under that name has another one: a GET
    reads the latest state, so the pod asked for was deleted and replaced under the same name."""
    if uid and found.uid != uid:
        raise PodLookupError(
            f"pod {found.namespace}/{found.name} has UID {found.uid}, not {uid}: the pod this sandbox is for "
            "was replaced by another pod of the same name",
        )
    return found


def fetch_pod(
    kubeconfig: str,
    namespace: str,
    name: str,
    timeout: float,
    *,
    uid: str = "",
    clients: ApiClients | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PodInfo:
    """GET the pod through ``kubeconfig``, retrying while it is not yet visible or the API is
    unavailable, until ``timeout`` seconds have passed. A 401 re-reads the kubeconfig once (the
    token may have been rotated on disk), then fails; a 403 fails at once, and so does a pod under
    that name with another ``uid`` (when one is given): the pod asked for was replaced."""
    if not kubeconfig:
        raise PodLookupError(
            f"pod {namespace}/{name}: the runtime passed no annotations and netconf has no "
            "kubernetes.kubeconfig to ask the API server with"
        )
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    owned = clients is None
    clients = clients or ApiClients()
    api_client = clients.get(kubeconfig)
    api = client.CoreV1Api(api_client)
    reread = False
    deadline = clock() + timeout
    delay = FIRST_RETRY_DELAY
    attempts = 0
    last = ""
    try:
        while True:
            attempts += 1
            remaining = deadline - clock()
            try:
                pod = api.read_namespaced_pod(
                    name, namespace, _request_timeout=max(0.1, min(REQUEST_TIMEOUT, remaining))
                )
            except ApiException as exc:
                if exc.status == 401 and not reread and clock() < deadline:
                    reread = True
                    api_client = clients.get(kubeconfig, reread=True)
                    api = client.CoreV1Api(api_client)
                    continue
                if exc.status == 401:
                    raise PodLookupError(
                        f"pod {namespace}/{name}: the API server refused the kubeconfig's credentials "
                        f"(HTTP 401 {exc.reason}), also after re-reading {kubeconfig}: its token is no longer "
                        "valid - is this a stale install whose DaemonSet was removed?",
                        "the node agent rewrites the token while it runs; without it, this node's CNI "
                        "configuration is stale: run `meshcni uninstall-cni` on the node, or install again",
                    ) from None
                if exc.status == 403:
                    raise PodLookupError(
                        f"pod {namespace}/{name}: the API server refused the kubeconfig's credentials "
                        f"(HTTP {exc.status} {exc.reason})",
                        "check the token in the kubeconfig; the node agent rewrites it when it rotates",
                    ) from None
                last = f"HTTP {exc.status} {exc.reason}"
            except Exception as exc:  # noqa: BLE001 - connection refused, TLS, timeouts: all retryable
                last = f"{type(exc).__name__}: {exc}"
            else:
                return _same_pod(pod_from_api_object(pod), uid)
            if clock() + delay >= deadline:
                raise PodLookupError(
                    f"pod {namespace}/{name} could not be read from the API server within {timeout:g}s "
                    f"({attempts} attempts)",
                    f"last error: {last}",
                    code=11,
                )
            log.debug("pod %s/%s not readable yet (%s); retrying in %.2fs", namespace, name, last, delay)
            sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
    finally:
        if owned:
            api_client.close()
