"""Which pods need no work at all, decided from the request alone: the one place this is decided.

ADD and CHECK ask it once, in ``CniCommands`` - run by the node agent for the requests it serves
(with the agent's own configuration), or by the plugin in-process when no agent took the request
- before a pipeline is built, the pod's netns opened or the API asked. The eligibility voter
(``builtin/eligibility.py``) reads the same annotations with the same spellings for its full vote.
Import-light: it runs on the plugin's per-pod path.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
# The injector's truthy/falsy spellings plus Go's strconv.ParseBool ones.
TRUE_VALUES = frozenset({"1", "t", "true", "y", "yes", "on"})
FALSE_VALUES = frozenset({"0", "f", "false", "n", "no", "off"})


def pass_through_reason(namespace: str, name: str, runtime_annotations: Mapping[str, str] | None,
                        exclude_namespaces: list[str]) -> str:
    """Why this pod needs no work ('' = it may need work). ``runtime_annotations`` is None when the
    runtime passed none (then only the API can tell)."""
    if not namespace or not name:
        return "no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS: not a Kubernetes pod"
    if namespace in exclude_namespaces:
        return f"namespace {namespace} is excluded"
    if runtime_annotations is not None:
        if STATUS_ANNOTATION not in runtime_annotations:
            return f"annotation {STATUS_ANNOTATION} is absent"
        if runtime_annotations.get(INJECT_ANNOTATION, "").strip().lower() in FALSE_VALUES:
            return f"annotation {INJECT_ANNOTATION} is false"
    return ""
