"""The seed page's eligibility rules, and the inference from the injector's status annotation."""

import json

import pytest

from meshcni_core.builtin.config import load_plugin_config
from meshcni_core.builtin.eligibility import decide, needs_container_list
from meshcni_hooks.errors import AnnotationError
from meshcni_hooks.types import ContainerInfo, PodInfo, VerdictKind
from meshcni_testing.harness import make_pod

CONFIG = load_plugin_config({"kubernetes": {"exclude_namespaces": ["istio-system", "kube-system"]}})
STATUS = {"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})}


def redirected(pod):
    return all(v.kind is VerdictKind.REDIRECT for v in decide(pod, CONFIG))


def first_skip(pod):
    return next(v.rule for v in decide(pod, CONFIG) if v.kind is VerdictKind.SKIP)


def test_injected_pod_is_redirected():
    assert redirected(make_pod())


@pytest.mark.parametrize(
    ("pod", "rule"),
    [
        (make_pod(namespace="istio-system"), "excluded-namespace"),
        (make_pod(containers=("app", "sidecar")), "istio-proxy"),  # seed: needs istio-proxy (1.6 did not check)
        (make_pod(containers=("istio-proxy",)), "containers"),
        (make_pod(annotations={"sidecar.istio.io/inject": "false"}), "inject"),
        (make_pod(annotations={"sidecar.istio.io/inject": "No"}), "inject"),
        (make_pod(init_containers=("istio-init",)), "istio-init"),
        (make_pod(annotations={"sidecar.istio.io/interceptionMode": "NONE"}), "interception-none"),
    ],
)
def test_skips(pod, rule):
    assert first_skip(pod) == rule


def test_missing_status_annotation_skips():
    pod = PodInfo("default", "p", annotations={}, containers=("app", "istio-proxy"))
    assert first_skip(pod) == "sidecar-status"


@pytest.mark.parametrize("value", ["true", "True", "1", "yes", "on", " y "])
def test_truthy_inject_values_redirect(value):
    assert redirected(make_pod(annotations={"sidecar.istio.io/inject": value}))


def test_unreadable_inject_value_is_an_error_not_a_silent_choice():
    with pytest.raises(AnnotationError, match="sidecar.istio.io/inject"):
        decide(make_pod(annotations={"sidecar.istio.io/inject": "maybe"}), CONFIG)


def test_runtime_annotations_alone_decide_through_the_status_annotation():
    pod = PodInfo("default", "p", annotations=STATUS, source="runtime-config")
    assert not needs_container_list(pod, CONFIG)
    assert redirected(pod)
    reasons = " ".join(v.reason for v in decide(pod, CONFIG))
    assert "from sidecar.istio.io/status" in reasons


def test_status_listing_istio_init_skips_without_api():
    status = {"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-init"]})}
    assert first_skip(PodInfo("default", "p", annotations=status)) == "istio-init"


def test_unparseable_status_needs_the_api():
    pod = PodInfo("default", "p", annotations={"sidecar.istio.io/status": "not-json"})
    assert needs_container_list(pod, CONFIG)
    assert not needs_container_list(PodInfo("default", "p", annotations={}), CONFIG)


def test_unreadable_inject_value_on_a_pod_that_was_not_injected_is_skipped_not_an_error():
    """Found by the explain-vs-plugin property test: the plugin passes such pods through."""
    pod = PodInfo("default", "p", annotations={"sidecar.istio.io/inject": "maybe"}, containers=("app",))
    assert first_skip(pod) in ("istio-proxy", "containers", "sidecar-status")


# -- today's Istio: native sidecars (istio-proxy as an init container with restartPolicy: Always) --

NATIVE_STATUS = {"sidecar.istio.io/status": json.dumps(
    {"initContainers": ["istio-validation", "istio-proxy"], "containers": None, "volumes": ["istio-envoy"],
     "imagePullSecrets": None, "revision": "default"})}


def spec_pod(*specs: ContainerInfo, annotations=None) -> PodInfo:
    return PodInfo("default", "p", annotations=annotations or NATIVE_STATUS,
                   containers=tuple(c.name for c in specs if not c.init),
                   init_containers=tuple(c.name for c in specs if c.init), container_specs=specs)


def test_native_sidecar_from_the_spec_is_the_proxy_and_a_container():
    pod = spec_pod(ContainerInfo("istio-validation", init=True),
                   ContainerInfo("istio-proxy", init=True, restart_policy="Always"), ContainerInfo("app"))
    votes = {v.rule: v for v in decide(pod, CONFIG)}
    assert redirected(pod)
    assert "restartPolicy: Always (a native sidecar)" in votes["istio-proxy"].reason
    assert votes["containers"].reason.startswith("2 containers, counting the native sidecar istio-proxy")


def test_plain_init_container_named_istio_proxy_is_not_a_sidecar():
    pod = spec_pod(ContainerInfo("istio-proxy", init=True), ContainerInfo("app"), ContainerInfo("worker"))
    assert first_skip(pod) == "istio-proxy"
    assert "has no restartPolicy: Always" in decide(pod, CONFIG)[1].reason


def test_runtime_annotations_of_a_native_sidecar_pod_decide_without_the_api():
    pod = PodInfo("default", "p", annotations=NATIVE_STATUS, source="runtime-config")
    assert not needs_container_list(pod, CONFIG)
    assert redirected(pod)
    reasons = " ".join(v.reason for v in decide(pod, CONFIG))
    assert "native sidecar) (from sidecar.istio.io/status)" in reasons
    assert "proxy UID and GID 1337/1337 (default: the pod's container spec is unknown" in reasons


@pytest.mark.parametrize("status", [
    {"containers": "istio-proxy", "initContainers": None},  # not a list
    {"initContainers": {"istio-proxy": 1}},
    {"revision": "default"},  # neither list
    ["istio-proxy"],
])
def test_status_annotation_without_readable_lists_asks_the_api(status):
    pod = PodInfo("default", "p", annotations={"sidecar.istio.io/status": json.dumps(status)})
    assert needs_container_list(pod, CONFIG)


def test_status_annotation_with_both_lists_null_is_not_a_mesh_pod():
    status = {"sidecar.istio.io/status": json.dumps({"containers": None, "initContainers": None})}
    assert first_skip(PodInfo("default", "p", annotations=status)) == "istio-proxy"
