"""``meshcni manifest apply``: server-side apply of the generated objects through the kubernetes client.

Each object is applied with ``fieldManager=meshcni`` and ``force=true`` (meshcni owns these
objects). Whether it was created, configured or left unchanged is read from its
resourceVersion before and after, as the API server bumps it only when something changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshcni_hooks.errors import MeshcniError

FIELD_MANAGER = "meshcni"
# (apiVersion, kind) -> (URL prefix, plural, namespaced), for every kind `generate` can print.
KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"):
        ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("apps/v1", "DaemonSet"): ("/apis/apps/v1", "daemonsets", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"):
        ("/apis/k8s.cni.cncf.io/v1", "network-attachment-definitions", True),
}


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    namespace: str
    action: str  # created, configured, unchanged (with " (dry run)" when nothing was stored)

    def __str__(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where} {self.action}"


def object_path(document: Mapping[str, Any]) -> str:
    key = (document.get("apiVersion", ""), document.get("kind", ""))
    if key not in KINDS:
        raise MeshcniError(f"manifest apply does not know {key[1]} ({key[0]})")
    prefix, plural, namespaced = KINDS[key]
    metadata = document["metadata"]
    scope = f"/namespaces/{metadata['namespace']}" if namespaced else ""
    return f"{prefix}{scope}/{plural}/{metadata['name']}"


def apply_all(api_client: Any, documents: Iterable[Mapping[str, Any]], dry_run: bool = False) -> list[Applied]:
    from kubernetes.client.exceptions import ApiException

    results = []
    for document in documents:
        path = object_path(document)
        metadata = document["metadata"]
        try:
            before = _call(api_client, "GET", path)
        except ApiException as exc:
            if exc.status != 404:
                raise _failure(document, exc) from None
            before = None
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + ([("dryRun", "All")] if dry_run else [])
        try:
            after = _call(api_client, "PATCH", path, query, dict(document))
        except ApiException as exc:
            raise _failure(document, exc) from None
        if before is None:
            action = "created"
        else:
            changed = before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
            action = "configured" if changed else "unchanged"
        results.append(Applied(document["kind"], metadata["name"], metadata.get("namespace", ""),
                               action + (" (dry run)" if dry_run else "")))
    return results


def _call(api_client: Any, method: str, path: str, query: list[tuple[str, str]] | None = None,
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request through the client's own serialisation, authentication and TLS settings."""
    import json

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/apply-patch+yaml"  # JSON is YAML; the client sends it as JSON
    request = api_client.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                         auth_settings=["BearerToken"])
    response = api_client.call_api(*request, _request_timeout=30)
    response.read()
    if not 200 <= response.status < 300:
        from kubernetes.client.exceptions import ApiException

        raise ApiException(http_resp=response)
    result: dict[str, Any] = json.loads(response.data)
    return result


def _failure(document: Mapping[str, Any], exc: Any) -> MeshcniError:
    name = f"{document['kind']}/{document['metadata']['name']}"
    return MeshcniError(f"applying {name} failed: {exc.status} {exc.reason}", details=str(exc.body or ""))
