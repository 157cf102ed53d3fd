"""The CNI conformance checklist (reference cni-spec-notes.md §8), against the installed executable."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshcni_testing.netlab import PLUGIN

pytestmark = pytest.mark.netns
STATUS = json.dumps({"containers": ["istio-proxy"], "initContainers": ["istio-validation"]})
VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
NEW_LAYOUT_VERSIONS = VERSIONS[2:]
PREV = {
    "interfaces": [{"name": "veth9", "mac": "02:00:00:00:00:01"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "192.0.2.9/24", "gateway": "192.0.2.1", "interface": 1},
            {"address": "2001:db8::9/64", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
    "dns": {"nameservers": ["192.0.2.53"], "search": ["svc.cluster.local"]},
}


def invoke(command: str, stdin: str | bytes, netns: str = "/run/netns/none", args: str | None = None,
           extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({
        "CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": args if args is not None else "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1",
        **(extra_env or {}),
    })
    for name in drop:
        env.pop(name, None)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([PLUGIN], input=data, env=env, capture_output=True, timeout=60)


def conf(version: str = "1.0.0", mesh: bool = True, prev: bool = True, **extra) -> str:
    body = {"cniVersion": version, "name": "k8s-pod-network", "type": "istio-cni",
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"sidecar.istio.io/status": STATUS} if mesh else {}}}
    if prev:
        result = json.loads(json.dumps(PREV))
        if version.startswith("0."):
            for ip in result["ips"]:
                ip["version"] = "6" if ":" in ip["address"] else "4"
        body["prevResult"] = {"cniVersion": version, **result}
    body.update(extra)
    return json.dumps(body)


def one_json(proc: subprocess.CompletedProcess[bytes]) -> dict:
    text = proc.stdout.decode()
    obj = json.loads(text)  # exactly one document: json.loads rejects trailing data
    assert isinstance(obj, dict)
    return obj


@pytest.fixture
def lab(netns_lab):
    return netns_lab


# -- VERSION -----------------------------------------------------------------------------------

def test_version_with_empty_stdin_and_nothing_else_set():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    proc = subprocess.run([PLUGIN], input=b"", env={**env, "CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert one_json(proc) == {"cniVersion": "1.1.0", "supportedVersions": VERSIONS}


def test_version_echoes_a_supported_request_version():
    assert one_json(invoke("VERSION", '{"cniVersion":"0.4.0"}'))["cniVersion"] == "0.4.0"


def test_version_does_not_block_on_an_open_stdin():
    env = {**os.environ, "CNI_COMMAND": "VERSION"}
    started = time.monotonic()
    proc = subprocess.Popen([PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()  # returns at EOF, i.e. once the plugin exited with stdin still open
    proc.wait(timeout=10)
    proc.stdin.close()
    assert proc.returncode == 0 and json.loads(out)["supportedVersions"] == VERSIONS
    assert time.monotonic() - started < 5


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "stdin", "drop", "code"), [
    ("FOO", conf(), (), 4),
    ("ADD", conf(), ("CNI_NETNS",), 4),
    ("ADD", conf(), ("CNI_CONTAINERID",), 4),
    ("ADD", "{not json", (), 6),
    ("DEL", "{not json", (), 6),
    ("CHECK", "{not json", (), 6),
    ("ADD", '{"cniVersion":"1.0.0","type":"istio-cni"}', (), 7),
    ("ADD", conf("0.2.1"), (), 1),
    ("ADD", conf("2.0.0"), (), 1),
    ("CHECK", conf("0.3.1"), (), 1),
    ("STATUS", conf("1.0.0"), (), 1),
    ("GC", conf("0.4.0"), (), 1),
])
def test_errors_are_one_object_with_the_spec_code(command, stdin, drop, code):
    proc = invoke(command, stdin, drop=drop)
    error = one_json(proc)
    assert proc.returncode != 0 and error["code"] == code and error["msg"]
    if code == 1 and command in ("ADD",):
        assert "plugin supports" in error["details"]


def test_add_without_prev_result_fails_and_changes_nothing(lab):
    ns = lab.netns("pod")
    proc = invoke("ADD", conf(prev=False), netns=ns)
    assert one_json(proc)["code"] == 7 and lab.save(ns) == ""


def test_secondary_attachment_without_prev_result_is_programmed(lab):
    ns = lab.netns("pod")
    proc = invoke("ADD", conf(prev=False, attachment="secondary"), netns=ns, extra_env={"CNI_IFNAME": "net1"})
    assert proc.returncode == 0 and one_json(proc) == {"cniVersion": "1.0.0", "dns": {}}
    assert "ISTIO_OUTPUT" in lab.save(ns)


def test_host_netns_is_refused(lab):
    proc = invoke("ADD", conf(), netns="/proc/self/ns/net")
    error = one_json(proc)
    assert error["code"] == 8 and "own network namespace" in error["msg"]


def test_missing_netns_is_an_error_object():
    proc = invoke("ADD", conf(), netns="/run/netns/does-not-exist")
    assert one_json(proc)["code"] == 7


# -- ADD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", NEW_LAYOUT_VERSIONS)
@pytest.mark.parametrize("mesh", [True, False], ids=["mesh", "non-mesh"])
def test_add_prints_prev_result_unchanged_in_the_request_version(lab, version, mesh):
    ns = lab.netns("pod")
    proc = invoke("ADD", conf(version, mesh=mesh), netns=ns)
    result = one_json(proc)
    expected = json.loads(conf(version))["prevResult"]
    if version.startswith("1."):
        assert all("version" not in ip for ip in result["ips"])
    else:
        assert [ip["version"] for ip in result["ips"]] == ["4", "6"]
    assert result == expected
    assert ("ISTIO_OUTPUT" in lab.save(ns)) is mesh


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", None])
def test_old_versions_pass_the_old_layout_through(lab, version):
    """A .conf without cniVersion, chained as is, runs the list at 0.1.0 (libcni's assumption)."""
    ns = lab.netns("pod")
    prev = {"ip4": {"ip": "198.51.100.7/24", "gateway": "198.51.100.1"}}
    body = json.loads(conf(prev=False))
    body.pop("cniVersion")
    if version:
        body["cniVersion"] = version
        prev["cniVersion"] = version
    body["prevResult"] = prev
    result = one_json(invoke("ADD", json.dumps(body), netns=ns))
    assert result["ip4"] == prev["ip4"] and result["cniVersion"] == (version or "0.1.0")
    assert "ISTIO_OUTPUT" in lab.save(ns)


def test_add_tolerates_runtime_extras(lab):
    ns = lab.netns("pod")
    proc = invoke("ADD", conf(capabilities={"portMappings": True}, args={"cni": {"labels": []}}), netns=ns,
                  args="K8S_POD_UID=u;IgnoreUnknown=1;IP=192.0.2.9;K8S_POD_NAME=app-1;MAC=;K8S_POD_NAMESPACE=default;",
                  extra_env={"TRACEPARENT": "00-abc-def-01", "CNI_NETNS_OVERRIDE": "1"})
    assert proc.returncode == 0, proc.stdout
    assert "ISTIO_OUTPUT" in lab.save(ns)


def test_non_kubernetes_invocation_passes_through(lab):
    ns = lab.netns("pod")
    proc = invoke("ADD", conf(), netns=ns, args="")
    assert proc.returncode == 0 and lab.save(ns) == ""


# -- DEL / CHECK / STATUS / GC -----------------------------------------------------------------

@pytest.mark.parametrize("netns_value", ["", "/run/netns/deleted-long-ago"])
def test_del_without_a_usable_netns_succeeds_silently(netns_value):
    proc = invoke("DEL", conf("0.3.1", prev=False), netns=netns_value)
    assert proc.returncode == 0 and proc.stdout == b""


def test_del_for_a_never_added_container_succeeds(lab):
    ns = lab.netns("pod")
    for _ in range(3):
        proc = invoke("DEL", conf(prev=False), netns=ns)
        assert proc.returncode == 0 and proc.stdout == b""


def test_check_after_add_and_without_prev_result(lab):
    ns = lab.netns("pod")
    assert invoke("ADD", conf(), netns=ns).returncode == 0
    ok = invoke("CHECK", conf(), netns=ns)
    assert ok.returncode == 0 and ok.stdout == b""
    assert one_json(invoke("CHECK", conf(prev=False), netns=ns))["code"] == 7


def test_status_and_gc(lab):
    env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": "", "CNI_ARGS": ""}
    status = invoke("STATUS", conf("1.1.0", prev=False), extra_env=env)
    assert status.returncode == 0 and status.stdout == b""
    gc = invoke("GC", conf("1.1.0", prev=False, **{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                                                    "cni.dev/attachments": []}), extra_env=env)
    assert gc.returncode == 0 and gc.stdout == b""


def test_status_reports_50_when_the_backend_cannot_work():
    env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": "", "PATH": "/nonexistent"}
    error = one_json(invoke("STATUS", conf("1.1.0", prev=False), extra_env=env))
    assert error["code"] == 50 and "iptables" in error["msg"]


def test_status_reports_50_for_a_missing_extension():
    env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": ""}
    error = one_json(invoke("STATUS", conf("1.1.0", prev=False, extensions=["nope"]), extra_env=env))
    assert error["code"] == 50 and "nope" in error["msg"]


# -- bad input, fuzzed -------------------------------------------------------------------------

ANNOTATION_KEYS = [
    "sidecar.istio.io/interceptionMode", "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges", "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/kubevirtInterfaces", "sidecar.istio.io/inject", "sidecar.istio.io/status",
    "traffic.sidecar.istio.io/excludeInterfaces", "proxy.istio.io/config",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    annotations=st.dictionaries(st.sampled_from(ANNOTATION_KEYS), st.text(max_size=30), max_size=4),
    cni_args=st.text(alphabet="AKS_=;19PODNAMEIgnoreUnkw.-", max_size=40),
    truncate=st.integers(min_value=0, max_value=400),
)
def test_junk_never_leaks_a_traceback_or_half_rules(lab, annotations, cni_args, truncate):
    ns = lab.netns(f"f{len(lab.namespaces)}")
    annotations = {"sidecar.istio.io/status": STATUS, **annotations}
    stdin = conf(runtimeConfig={"io.kubernetes.cri.pod-annotations": annotations})
    if truncate % 3 == 0:
        stdin = stdin[: truncate % len(stdin)]
    proc = invoke("ADD", stdin, netns=ns, args=cni_args if truncate % 2 else None)
    out = one_json(proc)
    assert b"Traceback" not in proc.stdout
    if proc.returncode == 0:
        assert "cniVersion" in out
    else:
        assert isinstance(out["code"], int) and out["code"] not in (0, 9, 10) and out["msg"]
        assert lab.save(ns) == "" and lab.save(ns, 6) == "", "a failed ADD left rules behind"
    lab.close_one(ns)
