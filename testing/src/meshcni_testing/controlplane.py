"""A real Kubernetes control plane for tests: etcd and kube-apiserver on loopback.

``scripts/build-control-plane.sh`` (``make control-plane``) builds both at pinned versions into
``build/control-plane/bin``; :func:`start_control_plane` runs them from there with a CA, serving and
client certificates and service-account signing keys made with the ``openssl`` command, the Node
and RBAC authorizers and the default admission plugins (ValidatingAdmissionPolicy among them), and
returns once ``/readyz`` answers. No controller-manager runs: nothing creates a namespace's
``default`` ServiceAccount, schedules or runs pods; tests create what they need.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcni_testing.certs import issue, make_ca, openssl
from meshcni_testing.kubeconfig import write_kubeconfig

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Where Services would get addresses; the control plane only records them (no proxy runs).
SERVICE_CLUSTER_IP_RANGE = "198.51.100.0/24"
KUBERNETES_SERVICE_IP = "198.51.100.1"  # the `kubernetes` Service's: the range's first address
ADMIN_SUBJECT = "/CN=meshcni-test-admin/O=system:masters"
JWT_LEEWAY_SECONDS = 60  # how long past a token's exp the API server still accepts it


class ControlPlaneError(RuntimeError):
    pass


class ApiError(ControlPlaneError):
    def __init__(self, status: int, reason: str, body: str):
        super().__init__(f"HTTP {status} {reason}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass
class ControlPlane:
    url: str
    directory: Path
    ca: Path
    admin_kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    etcd_url: str = ""

    # -- requests as the cluster administrator --------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                token: str | None = None) -> dict[str, Any]:
        """One API request as the admin (client certificate) or, with ``token``, as that bearer;
        the decoded answer, or :class:`ApiError` for any status outside 2xx."""
        status, reason, text = self.send(method, path, body, content_type=content_type, token=token)
        if not 200 <= status < 300:
            raise ApiError(status, reason, text)
        decoded: dict[str, Any] = json.loads(text) if text else {}
        return decoded

    def send(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
             token: str | None = None) -> tuple[int, str, str]:
        """Like :meth:`request`, but any answer is returned as (status, reason, body text)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Accept": "application/json"}
        if token is None:
            context.load_cert_chain(str(self.directory / "admin.crt"), str(self.directory / "admin.key"))
        else:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        host, port = self.url.removeprefix("https://").split(":")
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.read().decode()
        finally:
            connection.close()

    def create(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """POST ``document`` to the collection ``path``; an object that already exists is left as it is."""
        try:
            return self.request("POST", path, document)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return self.request("GET", f"{path}/{document['metadata']['name']}")

    def ensure_namespace(self, name: str) -> None:
        """The namespace and its ``default`` ServiceAccount (which a controller-manager would add)."""
        self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.create(f"/api/v1/namespaces/{name}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})

    def create_pod(self, namespace: str, name: str, *, node: str, containers: tuple[str, ...] = ("app",),
                   init_containers: tuple[str, ...] = (), annotations: dict[str, str] | None = None,
                   status: dict[str, Any] | None = None) -> dict[str, Any]:
        """A pod bound to ``node`` (no scheduler or kubelet runs: it stays as created, with
        ``status`` written through the status subresource as a kubelet would)."""
        spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": c, "image": f"{c}:1"} for c in containers]}
        if init_containers:
            spec["initContainers"] = [{"name": c, "image": f"{c}:1"} for c in init_containers]
        pod = self.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec})
        if status is not None:
            pod = self.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status},
                               content_type="application/merge-patch+json")
        return pod

    def delete_pod_now(self, namespace: str, name: str) -> None:
        """Deletes the pod at once, as the kubelet does once its containers are gone (a plain
        DELETE of a pod bound to a node only marks it terminating)."""
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                     {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})

    # -- identities ----------------------------------------------------------------------------

    def grant(self, namespace: str, service_account: str, rules: list[dict[str, Any]]) -> None:
        """The ServiceAccount (created when missing) bound to a ClusterRole of the same name
        holding exactly ``rules``."""
        self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}})
        self.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": service_account}, "rules": rules})
        self.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": service_account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": service_account},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]})

    def wait_until_served(self, path: str, token: str, timeout: float = 10) -> None:
        """Waits until a GET of ``path`` with ``token`` is answered 200: a new binding reaches the
        RBAC authorizer through its informer a moment after it is stored."""
        deadline = time.monotonic() + timeout
        while (status := self.send("GET", path, token=token)[0]) != 200:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"GET {path} still answered {status} after {timeout:.0f}s")
            time.sleep(0.1)

    def mint_token(self, namespace: str, service_account: str, *, expiration_seconds: int = 3600,
                   bound_secret: str | None = None) -> str:
        """A bound token for the ServiceAccount, through the TokenRequest API.

        The API server refuses lifetimes under 600 s. For a token that stops working on demand,
        name a Secret in ``bound_secret`` (it is created if missing): deleting that Secret
        invalidates the token at once, as deleting a pod does for the pod's own token.
        """
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if bound_secret is not None:
            secret = self.create(f"/api/v1/namespaces/{namespace}/secrets", {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": bound_secret}})
            spec["boundObjectRef"] = {"kind": "Secret", "apiVersion": "v1", "name": bound_secret,
                                      "uid": secret["metadata"]["uid"]}
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        token: str = answer["status"]["token"]
        return token

    def sign_short_lived_token(self, namespace: str, service_account: str, *, lifetime_seconds: float) -> str:
        """A bound service-account token like TokenRequest's, lasting ``lifetime_seconds``.

        TokenRequest refuses lifetimes under 10 minutes, too long for a test to wait for expiry. This
        token carries the claims TokenRequest writes (issuer, audience, the ServiceAccount's name
        and UID) and is signed with this cluster's service-account key, so the API server's own
        authenticator checks it, expiry included, as it checks the tokens it issues. That check
        allows a minute of clock skew past ``exp`` (go-jose's default leeway), so ``exp`` is set a
        minute early: the server refuses the token ``lifetime_seconds`` from now."""
        account = self.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}")
        issued = int(time.time()) - JWT_LEEWAY_SECONDS
        claims = {
            "iss": SERVICE_ACCOUNT_ISSUER, "aud": [SERVICE_ACCOUNT_ISSUER], "iat": issued, "nbf": issued,
            "exp": issued + max(1, round(lifetime_seconds)),
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": service_account, "uid": account["metadata"]["uid"]}},
        }
        signing_input = f"{_b64url(json.dumps({'alg': 'RS256', 'typ': 'JWT'}))}.{_b64url(json.dumps(claims))}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.directory / "service-account.key")],
            input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def write_kubeconfig(self, path: Path, *, token: str) -> Path:
        """A kubeconfig that speaks to this server as the bearer of ``token``."""
        return Path(write_kubeconfig(path, self.url, self.ca, {"token": token}))

    # -- etcd ----------------------------------------------------------------------------------

    def compact_etcd(self) -> int:
        """Compacts etcd's history up to its current revision (what kube-apiserver does every
        five minutes) through etcd's JSON gateway; returns that revision. A watch resumed from an
        older resourceVersion is then answered 410 Gone."""
        revision = int(self._etcd("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        host, port = self.etcd_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        if response.status != 200:
            raise ControlPlaneError(f"etcd {path}: HTTP {response.status}: {text[:300]}")
        answer: dict[str, Any] = json.loads(text)
        return answer

    # -- lifetime ------------------------------------------------------------------------------

    def restart_apiserver(self, timeout: float = 120) -> None:
        """Stops kube-apiserver and starts it again on the same port and etcd: every watch is cut,
        and clients resume from the resourceVersion they had."""
        self._stop_process("kube-apiserver")
        self.processes["kube-apiserver"] = _launch(self.directory, "kube-apiserver", self.commands["kube-apiserver"])
        _wait_ready(self, timeout)

    def stop(self) -> None:
        """Stops kube-apiserver, then etcd, each by the PID this module started."""
        for name in ("kube-apiserver", "etcd"):
            self._stop_process(name)

    def _stop_process(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_control_plane(bin_dir: Path, directory: Path, *, timeout: float = 180,
                        apiserver_flags: tuple[str, ...] = ()) -> ControlPlane:
    """Starts etcd and kube-apiserver from ``bin_dir`` with their state in ``directory``; returns once
    the API server is ready. The caller stops it (``with`` or :meth:`ControlPlane.stop`).
    ``apiserver_flags`` are added to kube-apiserver's command line."""
    apiserver_bin, etcd_bin = bin_dir / "kube-apiserver", bin_dir / "etcd"
    for binary in (apiserver_bin, etcd_bin):
        if not os.access(binary, os.X_OK):
            raise ControlPlaneError(f"{binary} is missing: run `make control-plane` (scripts/build-control-plane.sh)")
    directory.mkdir(parents=True, exist_ok=True)
    _make_credentials(directory)
    etcd_port, peer_port, apiserver_port = _free_ports(3)
    url = f"https://127.0.0.1:{apiserver_port}"
    plane = ControlPlane(url, directory, directory / "ca.crt", directory / "admin.kubeconfig")
    write_kubeconfig(plane.admin_kubeconfig, url, plane.ca,
                     {"client-certificate": str(directory / "admin.crt"), "client-key": str(directory / "admin.key")})
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    plane.etcd_url = etcd_url
    plane.commands["etcd"] = [
        str(etcd_bin), "--name", "meshcni-test", "--data-dir", str(directory / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"meshcni-test={peer_url}",
        "--unsafe-no-fsync",  # throwaway state: durability only costs time here
    ]
    plane.commands["kube-apiserver"] = [
        str(apiserver_bin), "--etcd-servers", etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(apiserver_port),
        "--tls-cert-file", str(directory / "server.crt"), "--tls-private-key-file", str(directory / "server.key"),
        "--client-ca-file", str(plane.ca),
        "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
        "--service-account-key-file", str(directory / "service-account.pub"),
        "--service-account-signing-key-file", str(directory / "service-account.key"),
        "--service-account-extend-token-expiration=false",  # a token lives exactly as long as asked
        "--service-cluster-ip-range", SERVICE_CLUSTER_IP_RANGE,
        "--endpoint-reconciler-type", "none",  # a loopback address is not a valid Endpoints address
        "--authorization-mode", "Node,RBAC",
        "--enable-admission-plugins", "NodeRestriction,ValidatingAdmissionPolicy",
        "--allow-privileged=true",  # the CNI DaemonSet's pods are privileged
        "--cert-dir", str(directory / "apiserver-certs"),
        *apiserver_flags,
    ]
    try:
        for name in ("etcd", "kube-apiserver"):
            plane.processes[name] = _launch(directory, name, plane.commands[name])
        _wait_ready(plane, timeout)
    except BaseException:
        plane.stop()
        raise
    return plane


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _launch(directory: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(directory / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(plane: ControlPlane, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for name, process in plane.processes.items():
            if process.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {process.returncode}:\n{_tail(plane.directory, name)}")
        try:
            status, _, text = plane.send("GET", "/readyz")
        except OSError as exc:  # not listening yet
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"{status}: {text[-300:]}"
        time.sleep(0.2)
    raise ControlPlaneError(f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n"
                            f"{_tail(plane.directory, 'kube-apiserver')}")


def _tail(directory: Path, name: str, lines: int = 30) -> str:
    try:
        return "\n".join((directory / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _make_credentials(directory: Path) -> None:
    """CA, the server's certificate for 127.0.0.1, the admin's client certificate, the SA key pair."""

    make_ca(str(directory), "meshcni-test-cluster-ca")
    # Also the `kubernetes` Service's address (the range's first), which kubelet gives pods as
    # KUBERNETES_SERVICE_HOST, as kube-apiserver's own certificate would (tests/e2e/test_kube_node.py).
    issue(str(directory), "server", "/CN=kube-apiserver",
          f"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{KUBERNETES_SERVICE_IP},DNS:kubernetes.default.svc"
          "\nextendedKeyUsage=serverAuth")
    issue(str(directory), "admin", ADMIN_SUBJECT, "extendedKeyUsage=clientAuth")
    openssl(str(directory), "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", "service-account.key")
    openssl(str(directory), "pkey", "-in", "service-account.key", "-pubout", "-out", "service-account.pub")
