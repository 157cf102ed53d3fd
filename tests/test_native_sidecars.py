"""Pods as today's Istio injects them, through the installed ``istio-cni`` in a throwaway netns:
``istio-proxy`` as a native sidecar (an init container with ``restartPolicy: Always``; the status
annotation lists it under ``initContainers`` and ``containers`` is null), and the proxy's UID/GID
taken from its ``securityContext`` (OpenShift assigns per-namespace UIDs such as 1000650000).

Pod metadata comes from the API stand-in, from the runtime's annotations only, or from the
runtime's annotations plus the node agent's pod cache. Topology: test_redirect_traffic's.
"""

from __future__ import annotations

import json

import pytest

from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import cni
from test_pod_cache import eventually
from test_redirect_traffic import REMOTE4, add, lab, listeners, netconf  # noqa: F401 - lab is a fixture

pytestmark = pytest.mark.netns

OPENSHIFT_UID = 1000650000  # the top of an OpenShift namespace's UID range, as Istio's injector picks it
# The status annotation exactly as today's injector writes it with native sidecars and the CNI.
NATIVE_STATUS = json.dumps({
    "initContainers": ["istio-validation", "istio-proxy"], "containers": None,
    "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data",
                "istio-podinfo", "istio-token", "istiod-ca-cert"],
    "imagePullSecrets": None, "revision": "default",
}, separators=(",", ":"))
NATIVE_PROXY = {"name": "istio-proxy", "restartPolicy": "Always",
                "securityContext": {"runAsUser": OPENSHIFT_UID, "runAsGroup": OPENSHIFT_UID}}
POD_UID = "uid-default-app-1"  # what the API stand-in gives pod default/app-1


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def native_sidecar_pod(api: FakeApiServer) -> None:
    api.add_pod("default", "app-1", containers=["app"], init_containers=["istio-validation", NATIVE_PROXY],
                annotations={"sidecar.istio.io/status": NATIVE_STATUS})


def from_the_api(api: FakeApiServer, tmp_path) -> dict:
    """A netconf without the runtime's annotations: the plugin must read the pod from the API."""
    conf = {k: v for k, v in netconf().items() if k != "runtimeConfig"}
    conf["kubernetes"] = {**conf["kubernetes"], "kubeconfig": api.write_kubeconfig(str(tmp_path / "kubeconfig"))}
    return conf


def assert_captured_except(net, bypassing_uid: int, captured_uid: int) -> None:
    """The app's outbound TCP lands on 15001 with its original destination; only the proxy's UID
    goes straight to the remote service."""
    got = net.connect(net.pod, REMOTE4, 80)
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))
    got = net.connect(net.pod, REMOTE4, 80, uid=bypassing_uid)
    assert got.listener == 80 and got.local == (REMOTE4, 80)
    got = net.connect(net.pod, REMOTE4, 80, uid=captured_uid)
    assert (got.listener, got.original_dst) == (15001, (REMOTE4, 80))


def test_native_sidecar_pod_from_the_api_is_redirected_with_the_proxys_own_uid(lab, api, tmp_path):  # noqa: F811
    native_sidecar_pod(api)
    listeners(lab)
    add(lab, from_the_api(api, tmp_path))
    assert_captured_except(lab, bypassing_uid=OPENSHIFT_UID, captured_uid=1337)
    assert ("GET", "/api/v1/namespaces/default/pods/app-1", 200) in api.requests


def test_plain_init_container_named_istio_proxy_is_not_a_sidecar(lab, api, tmp_path):  # noqa: F811
    api.add_pod("default", "app-1", containers=["app", "worker"], init_containers=["istio-proxy"],
                annotations={"sidecar.istio.io/status": NATIVE_STATUS})
    listeners(lab)
    proc = cni("ADD", lab.pod, from_the_api(api, tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab.save(lab.pod) == ""
    assert "init container istio-proxy has no restartPolicy: Always" in proc.stderr
    assert lab.connect(lab.pod, REMOTE4, 80).listener == 80


def test_native_sidecar_pod_from_runtime_annotations_alone_uses_and_names_the_default_uid(lab):  # noqa: F811
    listeners(lab)
    conf = netconf({"sidecar.istio.io/status": NATIVE_STATUS})  # no kubeconfig: the API cannot be asked
    proc = cni("ADD", lab.pod, conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_captured_except(lab, bypassing_uid=1337, captured_uid=OPENSHIFT_UID)
    assert "proxy UID and GID 1337/1337 (default: the pod's container spec is unknown" in proc.stderr


def test_runtime_annotations_take_the_proxy_uid_from_the_agents_pod_cache(lab, install_cni):  # noqa: F811
    """The node agent (install-cni, watching the node's pods) knows the container spec the runtime's
    annotations lack."""
    api, agent_conf, cached_pods = install_cni
    native_sidecar_pod(api)
    eventually(lambda: cached_pods() == 1)
    listeners(lab)
    conf = netconf({"sidecar.istio.io/status": NATIVE_STATUS}, agent_socket=agent_conf["agent_socket"])
    proc = cni("ADD", lab.pod, conf, uid=POD_UID)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_captured_except(lab, bypassing_uid=OPENSHIFT_UID, captured_uid=1337)
    assert not [path for _, path, _ in api.requests if path.endswith("/pods/app-1")]  # the cache answered


def test_unreadable_status_annotation_is_read_from_the_api_or_fails_naming_it(lab, api, tmp_path):  # noqa: F811
    """Today's Istio never parses the status annotation (it always reads the pod from the API);
    we parse it to spare the API, and ask the API when it cannot be read."""
    listeners(lab)
    broken = netconf({"sidecar.istio.io/status": '{"initContainers": ["istio-proxy"'})
    proc = cni("ADD", lab.pod, broken)
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 102
    assert "annotation sidecar.istio.io/status does not list the pod's containers" in error["msg"]
    assert lab.save(lab.pod) == ""
    native_sidecar_pod(api)
    broken["kubernetes"] = {**broken["kubernetes"], "kubeconfig": api.write_kubeconfig(str(tmp_path / "kubeconfig"))}
    add(lab, broken)
    assert_captured_except(lab, bypassing_uid=OPENSHIFT_UID, captured_uid=1337)
