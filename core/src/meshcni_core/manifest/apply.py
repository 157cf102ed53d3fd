"""``meshcni manifest apply``: server-side apply of the generated objects, and pruning of the rest.

Each object is applied with ``fieldManager=meshcni`` and ``force=true`` (meshcni owns these
objects). Whether it was created, configured or left unchanged is read from its
resourceVersion before and after, as the API server bumps it only when something changed.
Every object joins meshcni's ApplySet (``applyset.py``); after applying, members the
configuration no longer renders are deleted, each with its uid and resourceVersion as
preconditions so that nothing changed since it was listed is removed.

Nothing is half-applied: a namespace the objects go into that does not exist yet is created
first (as istioctl creates its install namespace before any component; it is not a member of
the set, so it is never pruned), and the server checks every object (a dry-run apply: schema,
admission, RBAC, ownership) before the first one is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from meshcni_core.manifest import applyset
from meshcni_core.manifest.applyset import (
    PARENT_NAMESPACE,
    PART_OF_LABEL,
    Scope,
    applyset_id,
    group_kind,
    member,
    scope_of_parent,
)
from meshcni_hooks.errors import MeshcniError

FIELD_MANAGER = "meshcni"
# (apiVersion, kind) -> (URL prefix, plural, namespaced), for every kind `generate` can print.
KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"):
        ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("v1", "ResourceQuota"): ("/api/v1", "resourcequotas", True),
    ("apps/v1", "DaemonSet"): ("/apis/apps/v1", "daemonsets", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"):
        ("/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"):
        ("/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False),
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"):
        ("/apis/k8s.cni.cncf.io/v1", "network-attachment-definitions", True),
}


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    namespace: str
    action: str  # created, configured, unchanged, pruned (with " (dry run)" when nothing was changed)

    def __str__(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where} {self.action}"


def object_path(document: Mapping[str, Any]) -> str:
    api_version, kind = document.get("apiVersion", ""), document.get("kind", "")
    if (api_version, kind) not in KINDS:
        raise MeshcniError(f"manifest apply does not know {kind} ({api_version})")
    metadata = document["metadata"]
    return f"{collection_path(api_version, kind, metadata.get('namespace', ''))}/{metadata['name']}"


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    """The URL of a known kind's objects: in ``namespace`` when the kind is namespaced."""
    prefix, plural, namespaced = KINDS[(api_version, kind)]
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"


BY_GROUP_KIND = {group_kind({"apiVersion": v, "kind": k}): (v, k) for v, k in KINDS}


def apply_all(api_client: Any, documents: Iterable[Mapping[str, Any]], dry_run: bool = False,
              node_cleanup: Mapping[str, Any] | None = None) -> list[Applied]:
    """Apply ``documents`` as meshcni's whole set: what is applied, then what was pruned.
    ``node_cleanup`` is the clean-up DaemonSet for these values, added when the plugin must be
    removed from the nodes (``node_cleanup.with_node_cleanup``)."""
    from meshcni_core.manifest.node_cleanup import with_node_cleanup
    from meshcni_core.manifest.values import meshcni_version

    version = meshcni_version()
    documents = list(documents)
    for document in [*documents, *([node_cleanup] if node_cleanup else [])]:
        object_path(document)  # an unknown kind fails before anything is sent
    parent_document = applyset.parent(Scope(), version)
    existing = _get(api_client, object_path(parent_document), parent_document)
    previous = scope_of_parent(existing) if existing is not None else Scope()
    unknown = sorted(previous.group_kinds - set(BY_GROUP_KIND))
    if unknown:
        raise MeshcniError(f"the applyset lists kinds this meshcni cannot prune: {', '.join(unknown)}")
    if node_cleanup is not None:
        listed = _members(api_client, "apps/v1", "DaemonSet", previous)
        daemon_sets = {item["metadata"]["name"]: item for _, item in listed}
        documents = with_node_cleanup(documents, daemon_sets, node_cleanup)
    members = [member(d) for d in documents]
    current = Scope.of(members)
    keep = {object_path(d) for d in members}
    created, missing = _create_namespaces(api_client, [parent_document, *members], dry_run)
    # The server checks every object before the first one is written.
    checked = [_apply(api_client, d, dry_run=True, namespace_missing=d["metadata"].get("namespace") in missing)
               for d in members]
    if dry_run:
        return created + checked + _prune(api_client, previous | current, keep, dry_run)
    # While applying, the parent names every kind and namespace of the old set and the new one, so
    # an interrupted run still finds the old members next time; afterwards exactly the new ones.
    _apply(api_client, applyset.parent(previous | current, version), dry_run)
    results = created + [_apply(api_client, document, dry_run) for document in members]
    results += _prune(api_client, previous | current, keep, dry_run)
    _apply(api_client, applyset.parent(current, version), dry_run)
    return results


def _get(api_client: Any, path: str, document: Mapping[str, Any]) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return _call(api_client, "GET", path)
    except ApiException as exc:
        if exc.status != 404:
            raise _failure("reading", document, exc) from None
        return None


def _create_namespaces(api_client: Any, documents: list[Mapping[str, Any]],
                       dry_run: bool) -> tuple[list[Applied], set[str]]:
    """Creates the namespaces ``documents`` go into that do not exist; returns what it created and,
    on a dry run (which creates nothing), the namespaces that are missing."""
    from kubernetes.client.exceptions import ApiException

    created: list[Applied] = []
    missing: set[str] = set()
    for name in sorted({str(d["metadata"]["namespace"]) for d in documents if d["metadata"].get("namespace")}):
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if _get(api_client, f"/api/v1/namespaces/{name}", namespace) is not None:
            continue
        try:
            _call(api_client, "POST", "/api/v1/namespaces", [("dryRun", "All")] if dry_run else [], namespace)
        except ApiException as exc:
            if exc.status == 409:  # created meanwhile
                continue
            raise _failure("creating", namespace, exc) from None
        if dry_run:
            missing.add(name)
        created.append(Applied("Namespace", name, "", "created" + (" (dry run)" if dry_run else "")))
    return created, missing


def _apply(api_client: Any, document: Mapping[str, Any], dry_run: bool, namespace_missing: bool = False) -> Applied:
    """Server-side applies ``document`` (on a dry run the server checks it and stores nothing). An
    object whose namespace does not exist yet (a dry run's) cannot be checked by the server."""
    from kubernetes.client.exceptions import ApiException

    path = object_path(document)
    metadata = document["metadata"]
    if namespace_missing:
        return Applied(document["kind"], metadata["name"], metadata["namespace"],
                       "created (dry run; not checked by the server: its namespace does not exist yet)")
    before = _get(api_client, path, document)
    owner = ((before or {}).get("metadata", {}).get("labels") or {}).get(PART_OF_LABEL)
    if owner is not None and owner != metadata["labels"].get(PART_OF_LABEL, owner):
        raise MeshcniError(f"{document['kind']}/{metadata['name']} belongs to another applyset ({owner}); "
                           "refusing to take it over")
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + ([("dryRun", "All")] if dry_run else [])
    try:
        after = _call(api_client, "PATCH", path, query, dict(document))
    except ApiException as exc:
        raise _failure("applying", document, exc) from None
    if before is None:
        action = "created"
    else:
        changed = before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
        action = "configured" if changed else "unchanged"
    return Applied(document["kind"], metadata["name"], metadata.get("namespace", ""),
                   action + (" (dry run)" if dry_run else ""))


def _members(api_client: Any, api_version: str, kind: str, scope: Scope) -> Iterator[tuple[str, dict[str, Any]]]:
    """(collection URL, object) of every member of the set of this kind that ``scope`` may hold."""
    from kubernetes.client.exceptions import ApiException

    if group_kind({"apiVersion": api_version, "kind": kind}) not in scope.group_kinds:
        return
    selector = [("labelSelector", f"{PART_OF_LABEL}={applyset_id()}")]
    namespaced = KINDS[(api_version, kind)][2]
    for namespace in sorted(scope.namespaces | {PARENT_NAMESPACE}) if namespaced else [""]:
        collection = collection_path(api_version, kind, namespace)
        try:
            listed = _call(api_client, "GET", collection, selector)
        except ApiException as exc:
            if exc.status == 404:  # the kind is no longer served (its CRD was removed): no members
                continue
            raise MeshcniError(f"listing {kind} in {namespace or 'the cluster'} failed: "
                               f"{exc.status} {exc.reason}", details=str(exc.body or "")) from None
        for item in listed.get("items", []):
            yield collection, item


def _prune(api_client: Any, scope: Scope, keep: set[str], dry_run: bool) -> list[Applied]:
    """Delete the set's members outside ``keep`` (object paths), kind by kind, namespace by namespace."""
    from kubernetes.client.exceptions import ApiException

    pruned = []
    for name in sorted(scope.group_kinds):
        api_version, kind = BY_GROUP_KIND[name]
        for collection, item in _members(api_client, api_version, kind, scope):
            metadata = item["metadata"]
            path = f"{collection}/{metadata['name']}"
            if path in keep:
                continue
            preconditions = {"uid": metadata.get("uid"), "resourceVersion": metadata.get("resourceVersion")}
            body = {"preconditions": preconditions, "propagationPolicy": "Background"}
            document = {"kind": kind, "metadata": metadata}
            try:
                _call(api_client, "DELETE", path, [("dryRun", "All")] if dry_run else [], body)
            except ApiException as exc:
                if exc.status == 404:  # already gone
                    continue
                raise _failure("pruning", document, exc) from None
            pruned.append(Applied(kind, metadata["name"], metadata.get("namespace", ""),
                                  "pruned" + (" (dry run)" if dry_run else "")))
    return pruned


def _call(api_client: Any, method: str, path: str, query: list[tuple[str, str]] | None = None,
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request through the client's own serialisation, authentication and TLS settings."""
    import json

    headers = {"Accept": "application/json"}
    if body is not None and method == "PATCH":
        headers["Content-Type"] = "application/apply-patch+yaml"  # JSON is YAML; the client sends it as JSON
    elif body is not None:
        headers["Content-Type"] = "application/json"
    request = api_client.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                         auth_settings=["BearerToken"])
    response = api_client.call_api(*request, _request_timeout=30)
    response.read()
    if not 200 <= response.status < 300:
        from kubernetes.client.exceptions import ApiException

        raise ApiException(http_resp=response)
    result: dict[str, Any] = json.loads(response.data)
    return result


def _failure(doing: str, document: Mapping[str, Any], exc: Any) -> MeshcniError:
    name = f"{document['kind']}/{document['metadata']['name']}"
    return MeshcniError(f"{doing} {name} failed: {exc.status} {exc.reason}", details=str(exc.body or ""))
