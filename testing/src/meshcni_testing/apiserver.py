"""A small HTTPS stand-in for the Kubernetes API server, for what a real one cannot be made to do.

Everything a real kube-apiserver can answer runs against one (``controlplane.py``: etcd and
kube-apiserver built by ``make control-plane``; issue 13): server-side apply, field managers and
pruning, RBAC, the pod lookup, bound tokens that expire or are revoked, the pod cache's watch and
its 410 after compaction, repair's writes and their preconditions, Events. This stand-in stays
only for what a real server cannot be made to do on demand: slow answers, 429/500 storms, a watch
dropped without a restart, a pod changed (kubelet
updating a crash-looping pod) or replaced (a StatefulSet) between a read and a write, DaemonSet
status without its controller, and for counting the requests a client sent (none for an excluded
namespace, one re-read after a 401, the exact patch body); also for the benchmarks of the agent
and repair at scale and for the demo.

It serves pods (GET, LIST and WATCH with field/label selectors, merge-PATCH, DELETE with
preconditions), Events, and any other kind through server-side apply (GET, LIST by label, DELETE
with preconditions, dryRun), with resource versions (a merge patch carrying
``metadata.resourceVersion`` is refused with 409 when the pod changed since, and one carrying
another ``metadata.uid`` with 422, as the real server does), checks bearer tokens or client
certificates, and injects faults: a pod changed (kubelet updating a crash-looping pod) or replaced
(a StatefulSet) just before a write, fixed error statuses, slowness, dropped watches, and a
compacted history (a watch from an old resourceVersion gets 410 Gone).

Certificates are made with the ``openssl`` command (``certs.py``) into a private directory.
"""

from __future__ import annotations

import copy
import json
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshcni_testing.certs import issue, make_ca
from meshcni_testing.kubeconfig import write_kubeconfig


@dataclass
class Faults:
    """What the stand-in does wrong, settable while it runs."""

    fail_next: list[int] = field(default_factory=list)  # HTTP statuses for the next requests, in order
    delay_seconds: float = 0.0
    # (ns, name) -> how many more writes (PATCH, DELETE) of the pod find it changed just before they
    # arrive, as kubelet's status update of a crash-looping init container would change it.
    changed_before_writes: dict[tuple[str, str], int] = field(default_factory=dict)
    # (ns, name) -> the pod is replaced just before the next write of it: deleted, and created again
    # under the same name with a new UID and a fresh status, as a StatefulSet does.
    replaced_before_write: set[tuple[str, str]] = field(default_factory=set)
    watch_generation: int = 0  # bump (drop_watches) to end every open watch stream


@dataclass
class Certificates:
    directory: str
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_certificates(directory: str) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, via openssl."""

    make_ca(directory, "meshcni-standin-ca")
    issue(directory, "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    issue(directory, "client", "/CN=system:node:meshcni/O=system:nodes", "extendedKeyUsage=clientAuth")
    p = lambda n: os.path.join(directory, n)  # noqa: E731
    return Certificates(directory, p("ca.crt"), p("server.crt"), p("server.key"), p("client.crt"), p("client.key"))


class FakeApiServer:
    """Start with ``with FakeApiServer() as api:``; ``api.add_pod(...)``; ``api.write_kubeconfig(...)``."""

    def __init__(self, token: str = "meshcni-test-token", require_client_cert: bool = False):
        self.token = token
        self.require_client_cert = require_client_cert
        self.faults = Faults()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._rv = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, type, pod)
        self.k8s_events: list[dict[str, Any]] = []  # Kubernetes Event objects that were created
        self.patches: list[tuple[str, str, str, dict[str, Any]]] = []  # (ns, name, content type, body)
        # Objects other than pods, by URL path, as server-side apply (PATCH application/apply-patch+yaml)
        # stores them: one field manager, whose applied configuration is the object's content.
        self.objects: dict[str, dict[str, Any]] = {}
        self.identities: dict[str, set[tuple[str, str]]] = {}  # extra tokens -> allowed (verb, resource)
        self.oldest_watchable_rv = 0  # watches from an older resourceVersion get 410 Gone
        self._tmp = tempfile.TemporaryDirectory(prefix="meshcni-apiserver-")
        os.chmod(self._tmp.name, 0o700)
        self.certs = make_certificates(self._tmp.name)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> FakeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        if self.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.certs.ca)
        server = _BackloggedServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._tmp.cleanup()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # -- data ---------------------------------------------------------------------------------

    def add_pod(self, namespace: str, name: str, *, containers: list[str | dict[str, Any]],
                init_containers: list[str | dict[str, Any]] = (),  # type: ignore[assignment]
                annotations: dict[str, str] | None = None, node: str = "node-1",
                labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A container is a name, or a container object (``restartPolicy``, ``securityContext``...)."""
        with self._lock:
            self._rv += 1
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                    "resourceVersion": str(self._rv), "annotations": dict(annotations or {}),
                    "labels": dict(labels or {}),
                },
                "spec": {
                    "nodeName": node,
                    "containers": [_container(c, "example.invalid/app") for c in containers],
                    "initContainers": [_container(c, "example.invalid/init") for c in init_containers],
                },
                "status": {"phase": "Pending"},
            }
            self.pods[(namespace, name)] = pod
            self._record("ADDED", pod)
            return copy.deepcopy(pod)

    def update_pod(self, namespace: str, name: str, *, annotations: dict[str, str] | None = None,
                   status: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            pod = self.pods[(namespace, name)]
            if annotations is not None:
                pod["metadata"]["annotations"] = dict(annotations)
            if status is not None:
                pod["status"] = copy.deepcopy(status)
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
            self._record("MODIFIED", pod)
            return copy.deepcopy(pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            pod = self.pods.pop((namespace, name))
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
            self._record("DELETED", pod)

    def count_pods(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """How many stored pods satisfy ``predicate`` (read under the lock, nothing copied)."""
        with self._lock:
            return sum(1 for pod in self.pods.values() if predicate(pod))

    def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart or a load balancer would."""
        with self._lock:
            self.faults.watch_generation += 1
            self._changed.notify_all()

    def compact(self) -> None:
        """Forget the event history: watches from any resourceVersion before now get 410 Gone
        (a list made afterwards returns the new, watchable version)."""
        with self._lock:
            self.events.clear()
            self._rv += 1
            self.oldest_watchable_rv = self._rv

    def _record(self, kind: str, pod: dict[str, Any]) -> None:
        self.events.append((self._rv, kind, copy.deepcopy(pod)))
        self._changed.notify_all()

    def write_kubeconfig(self, path: str, *, token: str | None = None, client_cert: bool = False) -> str:
        """A kubeconfig for this server: bearer token (default) or client certificate."""
        user: dict[str, Any] = {}
        if client_cert:
            user = {"client-certificate": self.certs.client_cert, "client-key": self.certs.client_key}
        else:
            user = {"token": token if token is not None else self.token}
        return write_kubeconfig(path, self.url, self.certs.ca, user)

    # -- request handling ---------------------------------------------------------------------

    def add_identity(self, token: str, allowed: set[tuple[str, str]]) -> None:
        """Another bearer token, allowed only these (verb, resource) pairs - RBAC in miniature.
        The main token and client certificates may do everything."""
        self.identities[token] = set(allowed)

    def authorized(self, headers: Any, peer_cert: bool) -> bool:
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        return peer_cert or token == self.token or token in self.identities

    def permitted(self, headers: Any, verb: str, resource: str) -> bool:
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        return token not in self.identities or (verb, resource) in self.identities[token]

    def watch_events(self, raw_path: str) -> Iterator[dict[str, Any]]:
        """Events after the requested resourceVersion, then new ones as they happen, until the
        timeout, a dropped watch, or - for a compacted resourceVersion - one 410 ERROR event."""
        url = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        namespace = parts[3] if len(parts) == 5 else None
        fields, labels = _selector(query.get("fieldSelector", "")), _selector(query.get("labelSelector", ""))
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 300)
        with self._lock:
            generation = self.faults.watch_generation
            if since < self.oldest_watchable_rv:
                yield {"type": "ERROR", "object": _status(410, f"too old resource version: {since}", "Expired")}
                return
        while True:
            with self._lock:
                pending = [e for e in self.events if e[0] > since]
                while not pending and self.faults.watch_generation == generation:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._changed.wait(timeout=remaining):
                        break
                    pending = [e for e in self.events if e[0] > since]
                if self.faults.watch_generation != generation or (not pending and time.monotonic() >= deadline):
                    return
            for rv, kind, pod in pending:
                since = rv
                if (namespace is None or pod["metadata"]["namespace"] == namespace) and all(
                    _field(pod, k) == v for k, v in fields.items()
                ) and all(pod["metadata"]["labels"].get(k) == v for k, v in labels.items()):
                    yield {"type": kind, "object": pod}

    def respond(self, method: str, raw_path: str, headers: Any, peer_cert: bool,
                body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        if self.faults.delay_seconds:
            time.sleep(self.faults.delay_seconds)
        with self._lock:
            if self.faults.fail_next:
                status = self.faults.fail_next.pop(0)
                return status, _status(status, "injected fault")
        if not self.authorized(headers, peer_cert):
            return 401, _status(401, "Unauthorized")
        url = urlsplit(raw_path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        verb, resource = _verb_and_resource(method, parts)
        if not self.permitted(headers, verb, resource):
            return 403, _status(403, f'cannot {verb} resource "{resource}"', "Forbidden")
        if resource != "pods" and _names_one_object(parts):
            if method == "PATCH":
                return self._apply_object(url.path, headers.get("Content-Type", ""), query, body or {})
            if method == "DELETE":
                return self._delete_object(url.path, query, body or {})
            if method == "GET":
                with self._lock:
                    found = self.objects.get(url.path)
                return (200, copy.deepcopy(found)) if found else (404, _status(404, f"{url.path} not found"))
        if resource not in ("pods", "events") and method == "GET":
            return self._list_objects(url.path, query)
        if parts[:2] != ["api", "v1"]:
            return 404, _status(404, f"{url.path} not found")
        if method == "POST" and len(parts) == 5 and parts[2] == "namespaces" and parts[4] == "events":
            with self._lock:
                self.k8s_events.append(copy.deepcopy(body or {}))
            return 201, body or {}
        if len(parts) == 6 and parts[2] == "namespaces" and parts[4] == "pods":
            if method == "PATCH":
                return self._patch_pod(parts[3], parts[5], headers.get("Content-Type", ""), body or {})
            if method == "DELETE":
                return self._delete_pod(parts[3], parts[5], body or {})
        if method != "GET":
            return 405, _status(405, f"{method} {url.path} is not served by this stand-in")
        if len(parts) == 6 and parts[2] == "namespaces" and parts[4] == "pods":
            return self._get_pod(parts[3], parts[5])
        if parts[2:] == ["pods"] or (len(parts) == 5 and parts[2] == "namespaces" and parts[4] == "pods"):
            return self._list_pods(parts[3] if len(parts) == 5 else None, query)
        return 404, _status(404, f"{url.path} not found")

    def _changed_before_write(self, namespace: str, name: str) -> None:
        """The ``changed_before_writes`` and ``replaced_before_write`` faults, just before a write."""
        if (namespace, name) in self.faults.replaced_before_write:
            self.faults.replaced_before_write.discard((namespace, name))
            old = self.pods.pop((namespace, name))
            self._rv += 1
            self._record("DELETED", {**old, "metadata": {**old["metadata"], "resourceVersion": str(self._rv)}})
            self._rv += 1
            new = copy.deepcopy(old)
            new["metadata"].update(uid=f"{old['metadata']['uid']}-replacement", resourceVersion=str(self._rv),
                                   labels={})
            new["status"] = {"phase": "Pending"}
            self.pods[(namespace, name)] = new
            self._record("ADDED", new)
        left = self.faults.changed_before_writes.get((namespace, name), 0)
        if left > 0:
            self.faults.changed_before_writes[(namespace, name)] = left - 1
            pod = self.pods[(namespace, name)]
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
            self._record("MODIFIED", pod)

    def _patch_pod(
        self, namespace: str, name: str, content_type: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if "merge-patch" not in content_type:
            return 415, _status(415, f"this stand-in applies merge patches only, got {content_type!r}")
        with self._lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, f'pods "{name}" not found', reason="NotFound")
            self._changed_before_write(namespace, name)
            pod = self.pods[(namespace, name)]
            self.patches.append((namespace, name, content_type, copy.deepcopy(body)))
            # As the real server: a resourceVersion in the patch is an optimistic lock (checked
            # first), and metadata.uid is immutable.
            meta = body.get("metadata") or {}
            if meta.get("resourceVersion") not in (None, pod["metadata"]["resourceVersion"]):
                return 409, _status(409, f'Operation cannot be fulfilled on pods "{name}": the object has been '
                                         "modified; please apply your changes to the latest version and try again",
                                    "Conflict")
            if meta.get("uid") not in (None, pod["metadata"]["uid"]):
                return 422, _status(422, f'Pod "{name}" is invalid: metadata.uid: Invalid value: "{meta["uid"]}": '
                                         "field is immutable", "Invalid")
            for key, value in (body.get("metadata") or {}).get("labels", {}).items():
                if value is None:
                    pod["metadata"]["labels"].pop(key, None)
                else:
                    pod["metadata"]["labels"][key] = value
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
            self._record("MODIFIED", pod)
            return 200, copy.deepcopy(pod)

    def _delete_pod(self, namespace: str, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        preconditions = body.get("preconditions") or {}
        with self._lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, f'pods "{name}" not found', reason="NotFound")
            self._changed_before_write(namespace, name)
            pod = self.pods[(namespace, name)]
            for field_name, key in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
                wanted = preconditions.get(field_name)
                if wanted is not None and wanted != pod["metadata"][key]:
                    return 409, _status(409, f"Precondition failed: {field_name} in precondition: {wanted}, "
                                             f"{field_name} in object meta: {pod['metadata'][key]}", "Conflict")
            deleted = copy.deepcopy(pod)
        self.delete_pod(namespace, name)
        return 200, deleted  # the API server answers a pod DELETE with the pod

    def _apply_object(self, path: str, content_type: str, query: dict[str, str],
                      applied: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if content_type != "application/apply-patch+yaml":
            return 415, _status(415, f"this stand-in serves only server-side apply on {path}")
        if not query.get("fieldManager"):
            return 400, _status(400, "fieldManager is required for apply patch")
        if path.rsplit("/", 1)[-1] != applied.get("metadata", {}).get("name"):
            return 400, _status(400, "the name in the body does not match the URL")
        with self._lock:
            existing = self.objects.get(path)
            content = copy.deepcopy(applied)
            if existing is not None and _without_server_fields(existing) == _without_server_fields(content):
                return 200, copy.deepcopy(existing)
            self._rv += 1
            content["metadata"]["resourceVersion"] = str(self._rv)
            content["metadata"]["uid"] = (existing or {}).get("metadata", {}).get("uid") or f"uid-{self._rv}"
            if query.get("dryRun") != "All":
                self.objects[path] = content
            return (200 if existing else 201), copy.deepcopy(content)

    def _list_objects(self, collection: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Stored objects directly under ``collection`` (one namespace, or cluster-scoped), by label."""
        labels = _selector(query.get("labelSelector", ""))
        with self._lock:
            items = [copy.deepcopy(obj) for path, obj in sorted(self.objects.items())
                     if path.rsplit("/", 1)[0] == collection.rstrip("/")
                     and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]
            return 200, {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": str(self._rv)},
                         "items": items}

    def _delete_object(self, path: str, query: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        preconditions = body.get("preconditions") or {}
        with self._lock:
            found = self.objects.get(path)
            if found is None:
                return 404, _status(404, f"{path} not found")
            for key in ("uid", "resourceVersion"):
                wanted = preconditions.get(key)
                if wanted is not None and wanted != found["metadata"].get(key):
                    return 409, _status(409, f"Precondition failed: {key} in precondition: {wanted}, "
                                             f"{key} in object meta: {found['metadata'].get(key)}", "Conflict")
            if query.get("dryRun") != "All":
                del self.objects[path]
            return 200, {**_status(200, "deleted", "Success"), "status": "Success"}

    def _get_pod(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, f'pods "{name}" not found', reason="NotFound")
            return 200, copy.deepcopy(pod)

    def _list_pods(self, namespace: str | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        fields = _selector(query.get("fieldSelector", ""))
        labels = _selector(query.get("labelSelector", ""))
        with self._lock:
            items = [
                copy.deepcopy(p) for key, p in sorted(self.pods.items())
                if (namespace is None or key[0] == namespace)
                and all(_field(p, k) == v for k, v in fields.items())
                and all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())
            ]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": str(self._rv)},
                         "items": items}


class _BackloggedServer(ThreadingHTTPServer):
    # The default listen backlog of 5 drops SYNs when many clients connect at once; the client's
    # retransmission then adds a full second (seen in the 32-pod benchmark). Real API servers
    # listen with a large backlog.
    request_queue_size = 512


def _selector(text: str) -> dict[str, str]:
    pairs = {}
    for term in filter(None, text.split(",")):
        key, _, value = term.partition("=")
        pairs[key] = value.lstrip("=")
    return pairs


def _field(pod: dict[str, Any], path: str) -> str:
    value: Any = pod
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


def _as_core(parts: list[str]) -> list[str]:
    """/apis/GROUP/VERSION/... read like /api/VERSION/... (the same positions for namespace and resource)."""
    return ["api", *parts[2:]] if parts[:1] == ["apis"] and len(parts) >= 3 else parts


def _names_one_object(parts: list[str]) -> bool:
    core = _as_core(parts)
    return len(core) == 6 or (len(core) == 4 and core[2] != "namespaces")


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(obj)
    for key in ("resourceVersion", "uid"):
        clean.get("metadata", {}).pop(key, None)
    return clean


def _verb_and_resource(method: str, parts: list[str]) -> tuple[str, str]:
    parts = _as_core(parts)
    resource = parts[4] if len(parts) >= 5 and parts[2] == "namespaces" else (parts[2] if len(parts) > 2 else "")
    verbs = {"GET": "get" if _names_one_object(parts) else "list", "PATCH": "patch", "DELETE": "delete",
             "POST": "create"}
    verb = verbs[method]
    return verb, resource


REASONS = {401: "Unauthorized", 404: "NotFound", 409: "Conflict", 422: "Invalid", 429: "TooManyRequests"}


def _status(code: int, message: str, reason: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason or REASONS.get(code, "Error"),
            "code": code}


def _handler_for(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every request (measured), which a real API server
        # does not.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            peer_cert = bool(getattr(self.connection, "getpeercert", lambda: None)())
            query = parse_qs(urlsplit(self.path).query)
            if method == "GET" and query.get("watch", ["false"])[-1] in ("1", "true") and \
                    api.authorized(self.headers, peer_cert) and api.permitted(self.headers, "watch", "pods") \
                    and not api.faults.fail_next:
                self._stream(api.watch_events(self.path))
                return
            length = int(self.headers.get("Content-Length") or 0)
            request_body = json.loads(self.rfile.read(length)) if length else None
            status, body = api.respond(method, self.path, self.headers, peer_cert, request_body)
            data = json.dumps(body).encode()
            api.requests.append((method, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: Iterator[dict[str, Any]]) -> None:
            api.requests.append(("WATCH", self.path, 200))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for event in events:
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client went away
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _container(container: str | dict[str, Any], image: str) -> dict[str, Any]:
    return {"name": container, "image": image} if isinstance(container, str) else {"image": image, **container}
