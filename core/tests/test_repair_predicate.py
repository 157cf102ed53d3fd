"""The broken-pod predicate against every test vector of istio-cni-behavior.md §6.2."""

import pytest

from meshcni_core.repair.predicate import BrokenPodFilter, is_broken

FILTER = BrokenPodFilter()
ANNOTATED = {"metadata": {"annotations": {"sidecar.istio.io/status": "{}"}}}


def pod(current=None, last=None, name="istio-validation", annotated=True):
    status = {"name": name, "state": current or {}, "lastState": {"terminated": last} if last else {}}
    body = {"metadata": {"annotations": {"sidecar.istio.io/status": "{}"}} if annotated else {"metadata": {}}}
    return {**body, "status": {"initContainerStatuses": [status]}}


FAILED_126 = {"exitCode": 126, "reason": "Error", "message": "Termination Message"}
WAITING = {"waiting": {"reason": "CrashLoopBackOff"}}


@pytest.mark.parametrize(("case", "candidate", "expected"), [
    ("working: current Completed/0", pod(current={"terminated": {"exitCode": 0, "reason": "Completed"}}), False),
    ("working after an earlier 126", pod(current={"terminated": {"exitCode": 0, "reason": "Completed"}}, last=FAILED_126), False),
    ("CrashLoopBackOff, last 126", pod(current=WAITING, last=FAILED_126), True),
    ("current 126 and last 126", pod(current={"terminated": FAILED_126}, last=FAILED_126), True),
    ("no annotation", pod(current=WAITING, last=FAILED_126, annotated=False), False),
    ("empty container status", {**ANNOTATED, "status": {"initContainerStatuses": []}}, False),
    ("another init container", pod(current=WAITING, last=FAILED_126, name="app-init"), False),
])
def test_vectors(case, candidate, expected):
    assert is_broken(candidate, FILTER) is expected, case


def test_exit_code_filter():
    candidate = pod(current=WAITING, last=FAILED_126)
    assert not is_broken(candidate, BrokenPodFilter(exit_code=55))
    assert not is_broken(pod(current=WAITING, last={**FAILED_126, "exitCode": 121}), FILTER)
    assert is_broken(candidate, BrokenPodFilter(exit_code=126))
    assert is_broken(pod(current=WAITING, last={**FAILED_126, "exitCode": 3}), BrokenPodFilter(exit_code=0))  # 0 = any


@pytest.mark.parametrize(("wanted", "expected"), [
    ("This Does Not Match", False), ("Termination Message", True), ("  Termination Message  ", True),
])
def test_message_filter(wanted, expected):
    candidate = pod(current=WAITING, last={**FAILED_126, "message": "  Termination Message \n"})
    assert is_broken(candidate, BrokenPodFilter(termination_message=wanted)) is expected


def test_empty_filters_match_any_name_and_annotation():
    candidate = pod(current=WAITING, last=FAILED_126, name="other", annotated=False)
    assert is_broken(candidate, BrokenPodFilter(sidecar_annotation="", init_container_name=""))


def test_early_detection_fires_on_the_first_failure():
    first_failure = pod(current={"terminated": FAILED_126})
    assert not is_broken(first_failure, FILTER)  # Istio 1.6 waits for a restart
    assert is_broken(first_failure, BrokenPodFilter(early=True))


def native_sidecar_pod(proxy_last=None):
    """Today's injection with native sidecars: istio-proxy's status is among the init containers'."""
    candidate = pod(current={"terminated": {"exitCode": 0, "reason": "Completed"}})
    candidate["spec"] = {"initContainers": [{"name": "istio-validation"},
                                            {"name": "istio-proxy", "restartPolicy": "Always"}]}
    proxy = {"name": "istio-proxy", "state": {"running": {}}, "lastState": {"terminated": proxy_last} if proxy_last else {}}
    candidate["status"]["initContainerStatuses"].append(proxy)
    return candidate


def test_a_restarted_native_sidecar_is_not_a_failed_init_container():
    restarted = native_sidecar_pod(proxy_last={**FAILED_126, "exitCode": 1})
    assert not is_broken(restarted, BrokenPodFilter(init_container_name="", exit_code=0))
    plain = native_sidecar_pod(proxy_last={**FAILED_126, "exitCode": 1})
    plain["spec"]["initContainers"][1].pop("restartPolicy")  # a plain init container that failed: broken
    assert is_broken(plain, BrokenPodFilter(init_container_name="", exit_code=0))


def test_native_sidecar_pod_whose_validation_failed_is_broken():
    candidate = native_sidecar_pod()
    candidate["status"]["initContainerStatuses"][0].update(state=WAITING, lastState={"terminated": FAILED_126})
    assert is_broken(candidate, FILTER)
