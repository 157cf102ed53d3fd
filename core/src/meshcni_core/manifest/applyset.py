"""The ApplySet that lets ``meshcni manifest apply`` prune what a changed configuration no longer renders.

Kubernetes' ApplySet convention (KEP-3659, as kubectl implements it): a parent object carries
``applyset.kubernetes.io/id`` and, as annotations, the tool that manages the set, the group-kinds
and the namespaces its members may be in; every member carries ``applyset.kubernetes.io/part-of``
with the same id. kubectl can read and prune the same set
(``kubectl apply --prune --applyset=configmap/istio-cni-applyset -n kube-system``).

The parent lives in ``kube-system`` whatever ``components.cni.namespace`` says, so that moving
the install to another namespace prunes the objects left in the old one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshcni_hooks.errors import MeshcniError

PARENT_NAME, PARENT_NAMESPACE = "istio-cni-applyset", "kube-system"
ID_LABEL = "applyset.kubernetes.io/id"
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
TOOLING = "applyset.kubernetes.io/tooling"
GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES = "applyset.kubernetes.io/additional-namespaces"
TOOL_NAME = "meshcni"


def applyset_id(name: str = PARENT_NAME, namespace: str = PARENT_NAMESPACE, kind: str = "ConfigMap",
                group: str = "") -> str:
    """``applyset-<base64url(sha256(name.namespace.kind.group))>-v1``, as kubectl computes it."""
    digest = hashlib.sha256(".".join((name, namespace, kind, group)).encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}-v1"


def group_kind(document: Mapping[str, Any]) -> str:
    """``Kind.group``, or ``Kind`` for the core group (``DaemonSet.apps``, ``ConfigMap``)."""
    group = str(document.get("apiVersion", "")).rpartition("/")[0]
    return f"{document.get('kind', '')}.{group}" if group else str(document.get("kind", ""))


@dataclass(frozen=True)
class Scope:
    """Where members of the set may be: their group-kinds, and namespaces besides the parent's."""

    group_kinds: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()

    def __or__(self, other: Scope) -> Scope:
        return Scope(self.group_kinds | other.group_kinds, self.namespaces | other.namespaces)

    @classmethod
    def of(cls, documents: Iterable[Mapping[str, Any]]) -> Scope:
        documents = list(documents)
        namespaces = {d["metadata"].get("namespace") for d in documents} - {None, PARENT_NAMESPACE}
        return cls(frozenset(group_kind(d) for d in documents), frozenset(str(n) for n in namespaces))


def member(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document labelled as a member of meshcni's set."""
    labels = dict(document["metadata"].get("labels") or {})
    if labels.get(PART_OF_LABEL, applyset_id()) != applyset_id():
        raise MeshcniError(f"{document['kind']}/{document['metadata']['name']} already names another applyset in "
                           f"its {PART_OF_LABEL} label")
    labels[PART_OF_LABEL] = applyset_id()
    return {**document, "metadata": {**document["metadata"], "labels": labels}}


def parent(scope: Scope, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": PARENT_NAME, "namespace": PARENT_NAMESPACE,
            "labels": {ID_LABEL: applyset_id()},
            "annotations": {
                TOOLING: f"{TOOL_NAME}/{version}",
                GROUP_KINDS: ",".join(sorted(scope.group_kinds)),
                NAMESPACES: ",".join(sorted(scope.namespaces)),
            },
        },
    }


def scope_of_parent(existing: Mapping[str, Any]) -> Scope:
    """The scope an existing parent records; refuses a parent meshcni does not manage."""
    metadata = existing.get("metadata") or {}
    where = f"ConfigMap/{PARENT_NAME} -n {PARENT_NAMESPACE}"
    tooling = (metadata.get("annotations") or {}).get(TOOLING, "")
    if tooling.partition("/")[0] != TOOL_NAME:
        raise MeshcniError(f"{where} is an applyset managed by {tooling or 'an unknown tool'}, not {TOOL_NAME}; "
                           "refusing to change it")
    if (metadata.get("labels") or {}).get(ID_LABEL) != applyset_id():
        raise MeshcniError(f"{where} carries the wrong {ID_LABEL}; refusing to prune through it")
    annotations = metadata.get("annotations") or {}
    split = lambda key: frozenset(filter(None, annotations.get(key, "").split(",")))  # noqa: E731
    return Scope(split(GROUP_KINDS), split(NAMESPACES))
