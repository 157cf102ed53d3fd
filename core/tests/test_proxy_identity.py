"""The proxy's UID/GID from the pod, as today's Istio plugin takes them (cni/pkg/plugin), and the
application init containers that start before the proxy."""

from __future__ import annotations

import pytest

from meshcni_core.builtin.sidecar import init_containers_before_proxy, proxy_identity
from meshcni_hooks.types import ContainerInfo, NetnsFacts
from meshcni_testing.harness import build_harness, make_pod

VALIDATION = ContainerInfo("istio-validation", init=True)


def pod_with(*specs: ContainerInfo, pod_run_as_user: int | None = None):
    return make_pod(containers=tuple(c.name for c in specs if not c.init),
                    init_containers=tuple(c.name for c in specs if c.init),
                    container_specs=specs, pod_run_as_user=pod_run_as_user)


@pytest.mark.parametrize("native", [False, True])
def test_uid_and_gid_come_from_the_proxy_containers_security_context(native):
    """Istio's golden file custom-uid.txt: runAsUser 1000670000, runAsGroup 1000670001."""
    proxy = ContainerInfo("istio-proxy", init=native, restart_policy="Always" if native else "",
                          run_as_user=1000670000, run_as_group=1000670001)
    pod = pod_with(VALIDATION, *([proxy] if native else []), ContainerInfo("app"), *([] if native else [proxy]))
    decision = build_harness().add(pod)
    output = [r.text for r in decision.plan.rules if r.chain == "ISTIO_OUTPUT" and "owner" in r.text]
    assert output == [
        "! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1000670000 -j ISTIO_IN_REDIRECT",
        "-o lo -m owner ! --uid-owner 1000670000 -j RETURN",
        "-m owner --uid-owner 1000670000 -j RETURN",
        "! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1000670001 -j ISTIO_IN_REDIRECT",
        "-o lo -m owner ! --gid-owner 1000670001 -j RETURN",
        "-m owner --gid-owner 1000670001 -j RETURN",
    ]
    assert decision.spec.origins["proxy_uids"].endswith("securityContext.runAsUser")


@pytest.mark.parametrize(("uid", "gid", "expected"), [
    (None, None, (1337, 1337)),
    (0, 0, (1337, 1337)),  # Istio's custom-uid-zero case: 0 means the default
    (1000650000, None, (1000650000, 1337)),  # the GID falls back to 1337, not to the UID
])
def test_unset_or_zero_ids_fall_back_to_1337(uid, gid, expected):
    pod = pod_with(ContainerInfo("app"), ContainerInfo("istio-proxy", run_as_user=uid, run_as_group=gid),
                   pod_run_as_user=5000)  # the pod-level securityContext is not consulted, as in Istio
    identity = proxy_identity(pod)
    assert (identity.uid, identity.gid) == expected
    if gid is None:
        assert identity.gid_origin == "default: container istio-proxy, securityContext.runAsGroup is not set"


def test_without_the_spec_the_default_is_used_and_said_so():
    decision = build_harness().add(make_pod(), NetnsFacts(interfaces=("lo", "eth0")))
    assert decision.spec.proxy_uids == ("1337",)
    assert decision.spec.origins["proxy_uids"].startswith("default: the pod's container spec is unknown")


def test_init_containers_before_a_classic_sidecar_are_all_listed_unless_they_run_as_the_proxy():
    pod = pod_with(VALIDATION, ContainerInfo("migrate", init=True), ContainerInfo("as-proxy", init=True,
                   run_as_user=1337), ContainerInfo("by-group", init=True, run_as_group=1337),
                   ContainerInfo("app"), ContainerInfo("istio-proxy"))
    assert [c.name for c in init_containers_before_proxy(pod)] == ["migrate"]


def test_with_a_native_sidecar_only_init_containers_listed_before_it_start_first():
    pod = pod_with(ContainerInfo("early", init=True), VALIDATION,
                   ContainerInfo("istio-proxy", init=True, restart_policy="Always", run_as_user=1000650000),
                   ContainerInfo("late", init=True), ContainerInfo("app"))
    assert [c.name for c in init_containers_before_proxy(pod)] == ["early"]
    # the pod-level runAsUser is what an init container without its own runs as
    same_uid = pod_with(ContainerInfo("early", init=True), ContainerInfo(
        "istio-proxy", init=True, restart_policy="Always", run_as_user=1000650000), ContainerInfo("app"),
        pod_run_as_user=1000650000)
    assert init_containers_before_proxy(same_uid) == ()
