"""Today's Istio CNI plugin beside ours: real connections from the same pods go to the same places.

Istio's ``istio-cni`` (istio.io/istio, release-1.30 branch, built from the Go module proxy by
``scripts/build-istio-cni.sh``) runs in sidecar mode with the entry Istio's install-cni writes;
ours runs through ``meshcni agent``. Both read each pod from the same real kube-apiserver as the
plugin identity ``manifest apply`` installs. Every pod is programmed twice, by each plugin in a
fresh pod network namespace of the same shape, and the same connections are made in both:

    pod netns   eth0 192.0.2.2/24 (2001:db8:1::2/64)   proxy stand-ins on 15001, 15006, 15053;
                                                        app ports 8080, 9090; agent port 15020
    peer netns  eth0 192.0.2.1/24 (2001:db8:1::1/64)   remote services on lo: 198.51.100.10,
                                                        203.0.113.10 (2001:db8:2::10)

Rule text differs (meshcni writes Istio 1.6's rules, today's Istio adds its own); destinations are
compared. Where they differ on purpose, the difference is named in ``KNOWN_DIFFERENCES`` and
listed in docs/rules.md ("Today's Istio, side by side"), and the test asserts exactly it.
"""

from __future__ import annotations

import json
import queue
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshcni_testing import istiocni
from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.netlab import PLUGIN, Lab, cni
from meshcni_testing.processes import start_agent
from test_manifest_apply_real import REMOVE, apply

pytestmark = pytest.mark.netns

INSTALL_NAMESPACE = "istio-system"
APPS = "istio-live"
POD4, POD6, PEER4, PEER6 = "192.0.2.2", "2001:db8:1::2", "192.0.2.1", "2001:db8:1::1"
REMOTE4, OTHER4, REMOTE6 = "198.51.100.10", "203.0.113.10", "2001:db8:2::10"
SECOND4 = "198.51.100.66"  # the pod's address on eth1 (the excluded-interface case), a /28 beside REMOTE4
CAPTURE_PORTS = (15001, 15006, 15053)
RULES_DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


@dataclass(frozen=True)
class Probe:
    source: str  # "pod", "peer" or "peer2"
    address: str
    port: int
    as_proxy: bool = False  # connect as the pod's proxy UID
    uid: int | None = None  # connect as this UID


PROBES4 = {
    "app -> remote:80": Probe("pod", REMOTE4, 80),
    "app -> remote:443": Probe("pod", REMOTE4, 443),
    "app -> remote:15020": Probe("pod", REMOTE4, 15020),
    "app -> other:80": Probe("pod", OTHER4, 80),
    "app -> remote:53 (tcp)": Probe("pod", REMOTE4, 53),
    "proxy -> remote:80": Probe("pod", REMOTE4, 80, as_proxy=True),
    "uid 1337 -> remote:80": Probe("pod", REMOTE4, 80, uid=1337),
    "app -> 127.0.0.1:8080": Probe("pod", "127.0.0.1", 8080),
    "proxy -> own address:8080": Probe("pod", POD4, 8080, as_proxy=True),
    "remote -> pod:8080": Probe("peer", POD4, 8080),
    "remote -> pod:9090": Probe("peer", POD4, 9090),
    "remote -> pod:15020": Probe("peer", POD4, 15020),
}
PROBES6 = {
    "app -> remote6:80": Probe("pod", REMOTE6, 80),
    "proxy -> remote6:80": Probe("pod", REMOTE6, 80, as_proxy=True),
    "remote6 -> pod:8080": Probe("peer", POD6, 8080),
}
PROBES_ETH1 = {"second network -> pod eth1:8080": Probe("peer2", SECOND4, 8080)}


@dataclass
class Case:
    annotations: dict[str, str] = field(default_factory=dict)
    proxy_env: dict[str, str] = field(default_factory=dict)
    proxy_uid: int | None = None
    native_sidecar: bool = False
    injected: bool = True
    dual_stack: bool = False
    second_interface: bool = False
    # probe -> (meshcni's destination, Istio's destination), each listed in docs/rules.md
    known_differences: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def transparent(self) -> bool:
        return self.annotations.get("sidecar.istio.io/interceptionMode") == "TPROXY"

    def probes(self) -> dict[str, Probe]:
        return {**PROBES4, **(PROBES6 if self.dual_stack else {}), **(PROBES_ETH1 if self.second_interface else {})}


REDIRECTED_80 = f"15001 (orig {REMOTE4}:80)"
CASES: dict[str, Case] = {
    "defaults": Case(),
    "not injected": Case(injected=False),
    "inject disabled": Case(annotations={"sidecar.istio.io/inject": "false"}),
    "tproxy": Case(annotations={"sidecar.istio.io/interceptionMode": "TPROXY"}),
    "include outbound ranges": Case(annotations={"traffic.sidecar.istio.io/includeOutboundIPRanges": "203.0.113.0/24"}),
    "exclude outbound ranges": Case(annotations={"traffic.sidecar.istio.io/excludeOutboundIPRanges": "198.51.100.0/24"}),
    "exclude outbound ports": Case(annotations={"traffic.sidecar.istio.io/excludeOutboundPorts": "80,53"}),
    "include outbound ports": Case(
        annotations={"traffic.sidecar.istio.io/includeOutboundIPRanges": "",
                     "traffic.sidecar.istio.io/includeOutboundPorts": "443"}),
    "include inbound ports": Case(annotations={"traffic.sidecar.istio.io/includeInboundPorts": "9090"}),
    "exclude inbound ports": Case(annotations={"traffic.sidecar.istio.io/excludeInboundPorts": "8080"}),
    "proxy runs as another uid": Case(proxy_uid=1500),
    "native sidecar": Case(native_sidecar=True),
    "dual-stack, ISTIO_DUAL_STACK": Case(dual_stack=True, proxy_env={"ISTIO_DUAL_STACK": "true"}),
    "dual-stack, no ISTIO_DUAL_STACK": Case(
        dual_stack=True,
        known_differences={
            "app -> remote6:80": (f"15001 (orig [{REMOTE6}]:80)", "direct :80"),
            "remote6 -> pod:8080": (f"15006 (orig [{POD6}]:8080)", "direct :8080"),
        }),
    "dns capture": Case(proxy_env={"ISTIO_META_DNS_CAPTURE": "true"}),
    "exclude interfaces": Case(annotations={"traffic.sidecar.istio.io/excludeInterfaces": "eth1"},
                               second_interface=True),
}


# -- the pods -------------------------------------------------------------------------------------

def pod_document(name: str, case: Case) -> dict[str, Any]:
    proxy: dict[str, Any] = {"name": "istio-proxy", "image": "proxyv2:1.30", "args": ["proxy", "sidecar"],
                             "env": [{"name": k, "value": v} for k, v in case.proxy_env.items()]}
    if case.proxy_uid is not None:
        proxy["securityContext"] = {"runAsUser": case.proxy_uid, "runAsGroup": case.proxy_uid}
    init = [{"name": "istio-validation", "image": "proxyv2:1.30"}]
    containers = [{"name": "app", "image": "app:1"}]
    if case.native_sidecar:
        init.append({**proxy, "restartPolicy": "Always"})
    else:
        containers.append(proxy)
    annotations = dict(case.annotations)
    if case.injected:
        listed = ["istio-validation", "istio-proxy"] if case.native_sidecar else ["istio-validation"]
        annotations["sidecar.istio.io/status"] = json.dumps(
            {"initContainers": listed, "containers": None if case.native_sidecar else ["istio-proxy"]})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": "node-live", "initContainers": init, "containers": containers}}


# -- the two plugins ------------------------------------------------------------------------------

@dataclass
class Plugins:
    istio: str
    istio_entry: dict[str, Any]
    ours_entry: dict[str, Any]


PREV_RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
               "ips": [{"address": f"{POD4}/24", "interface": 0}]}


@pytest.fixture(scope="module")
def plugins(control_plane: ControlPlane, tmp_path_factory):
    """Both plugins as the plugin identity that `manifest apply` installs; ours behind its agent."""
    istio = istiocni.binary()
    control_plane.ensure_namespace(INSTALL_NAMESPACE)
    control_plane.ensure_namespace(APPS)
    done = apply(control_plane, [], [])
    assert done.returncode == 0, done.stderr
    work = tmp_path_factory.mktemp("istio-live")
    token = control_plane.mint_token(INSTALL_NAMESPACE, "istio-cni")
    run_dir = istiocni.prepare_run_dir(work / "istio-run", control_plane.url, control_plane.ca, token)
    kubeconfig = control_plane.write_kubeconfig(work / "meshcni-kubeconfig", token=token)
    socket_path = str(work / "agent" / "cni.sock")
    ours = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "agent_socket": socket_path,
            "extensions": ["tproxy", "kubevirt"],
            "kubernetes": {"kubeconfig": str(kubeconfig), "exclude_namespaces": [INSTALL_NAMESPACE, "kube-system"]}}
    agent = start_agent(socket_path, ours)
    try:
        yield Plugins(istio, istiocni.sidecar_entry(run_dir, exclude_namespaces=[INSTALL_NAMESPACE, "kube-system"]),
                      ours)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        apply(control_plane, [], REMOVE)


def pod_lab(case: Case) -> Lab:
    lab = Lab()
    try:
        pod, peer = lab.netns("pod"), lab.netns("peer")
        pod_addrs, peer_addrs = [f"{POD4}/24"], [f"{PEER4}/24"]
        if case.dual_stack:
            pod_addrs.append(f"{POD6}/64")
            peer_addrs.append(f"{PEER6}/64")
        lab.link(pod, pod_addrs, peer, peer_addrs)
        lab.ip(pod, "route", "add", "default", "via", PEER4)
        for remote in (REMOTE4, OTHER4):
            lab.ip(peer, "addr", "add", f"{remote}/32", "dev", "lo")
        if case.dual_stack:
            lab.ip(pod, "-6", "route", "add", "default", "via", PEER6)
            lab.ip(peer, "addr", "add", f"{REMOTE6}/128", "dev", "lo")
        lab.roles = {"pod": pod, "peer": peer}  # type: ignore[attr-defined]
        if case.second_interface:
            peer2 = lab.netns("peer2")
            lab.link(pod, [f"{SECOND4}/28"], peer2, ["198.51.100.65/28"], a_device="eth1")
            lab.roles["peer2"] = peer2  # type: ignore[attr-defined]
        for family, any_address in ((4, "0.0.0.0"), *(((6, "::"),) if case.dual_stack else ())):
            for port in (*CAPTURE_PORTS, 8080, 9090, 15020):
                lab.listen(pod, any_address, port, transparent=family == 4 and port in CAPTURE_PORTS)
        for port in (80, 443, 15020, 53):
            lab.listen(peer, REMOTE4, port)
        lab.listen(peer, OTHER4, 80)
        if case.dual_stack:
            lab.listen(peer, REMOTE6, 80)
        return lab
    except BaseException:
        lab.close()
        raise


def destination(lab: Lab, probe: Probe, proxy_uid: int) -> str:
    """Where one connection landed, in words: ``15001 (orig A:P)`` (NAT redirect), ``15006 TPROXY
    (dst A:P)`` (the destination kept), ``direct :P`` (the listener it was sent to), or the failure."""
    uid = proxy_uid if probe.as_proxy else probe.uid
    try:
        got = lab.connect(lab.roles[probe.source], probe.address, probe.port, uid=uid,  # type: ignore[attr-defined]
                          timeout=2.0)
    except (OSError, queue.Empty) as exc:
        return f"failed ({type(exc).__name__})"
    if got.listener in CAPTURE_PORTS and got.listener != probe.port:
        if got.nat_redirected and got.original_dst is not None:
            host, port = got.original_dst
            return f"{got.listener} (orig {f'[{host}]' if ':' in host else host}:{port})"
        host, port = got.local
        return f"{got.listener} TPROXY (dst {host}:{port})"
    return f"direct :{got.listener}"


def destinations(plugins: Plugins, control_plane: ControlPlane, name: str, case: Case, which: str) -> dict[str, str]:
    lab = pod_lab(case)
    try:
        pod_uid = control_plane.request("GET", f"/api/v1/namespaces/{APPS}/pods/{name}")["metadata"]["uid"]
        entry = plugins.istio_entry if which == "istio" else plugins.ours_entry
        netconf = {**entry, "cniVersion": "1.0.0", "name": "k8s-pod-network", "prevResult": PREV_RESULT}
        proc = cni("ADD", lab.roles["pod"], netconf, pod=name, namespace=APPS, uid=pod_uid,  # type: ignore[attr-defined]
                   container_id=f"live{uuid.uuid4().hex[:8]}", plugin=plugins.istio if which == "istio" else PLUGIN)
        assert proc.returncode == 0, f"{which} ADD failed: {proc.stdout}\n{proc.stderr[-3000:]}"
        assert json.loads(proc.stdout)["ips"] == PREV_RESULT["ips"]
        proxy_uid = case.proxy_uid or 1337
        return {label: destination(lab, probe, proxy_uid) for label, probe in case.probes().items()}
    finally:
        lab.close()


def compare(plugins: Plugins, control_plane: ControlPlane, label: str, case: Case) -> None:
    name = f"live-{uuid.uuid4().hex[:8]}"
    control_plane.request("POST", f"/api/v1/namespaces/{APPS}/pods", pod_document(name, case))
    try:
        ours = destinations(plugins, control_plane, name, case, "meshcni")
        istio = destinations(plugins, control_plane, name, case, "istio")
    finally:
        control_plane.delete_pod_now(APPS, name)
    differing = {probe: (ours[probe], istio[probe]) for probe in ours if ours[probe] != istio[probe]}
    assert differing == case.known_differences, (
        f"{label}: destinations differ from the documented differences\n"
        + "\n".join(f"  {p}: meshcni {o!r}, istio {i!r}" for p, (o, i) in sorted(differing.items()))
        + f"\nmeshcni: {json.dumps(ours, indent=1)}\nistio: {json.dumps(istio, indent=1)}")


@pytest.mark.parametrize("label", list(CASES))
def test_connections_go_where_todays_istio_sends_them(plugins, control_plane, label):
    compare(plugins, control_plane, label, CASES[label])


def test_the_default_pod_is_really_redirected_by_both(plugins, control_plane):
    """The comparison is not vacuous: under both plugins a meshed pod's traffic reaches the proxy."""
    name = f"live-{uuid.uuid4().hex[:8]}"
    control_plane.request("POST", f"/api/v1/namespaces/{APPS}/pods", pod_document(name, Case()))
    try:
        for which in ("meshcni", "istio"):
            seen = destinations(plugins, control_plane, name, Case(), which)
            assert seen["app -> remote:80"] == REDIRECTED_80, which
            assert seen["remote -> pod:8080"] == f"15006 (orig {POD4}:8080)", which
            assert seen["proxy -> remote:80"] == "direct :80", which
            assert seen["remote -> pod:15020"] == "direct :15020", which
    finally:
        control_plane.delete_pod_now(APPS, name)


def test_tproxy_inbound_lands_on_15006_with_its_destination_under_both(plugins, control_plane):
    """The `tproxy` case agrees for the right reason: both deliver inbound, destination kept, to the
    inbound capture port (Istio 1.6's CNI script used 15001; docs/rules.md)."""
    case = CASES["tproxy"]
    name = f"live-{uuid.uuid4().hex[:8]}"
    control_plane.request("POST", f"/api/v1/namespaces/{APPS}/pods", pod_document(name, case))
    try:
        for which in ("meshcni", "istio"):
            seen = destinations(plugins, control_plane, name, case, which)
            assert seen["remote -> pod:8080"] == f"15006 TPROXY (dst {POD4}:8080)", which
            assert seen["app -> remote:80"] == REDIRECTED_80, which
    finally:
        control_plane.delete_pod_now(APPS, name)


def test_every_known_difference_is_listed_in_docs_rules():
    section = RULES_DOC.read_text().split("## Today's Istio, side by side", 1)
    assert len(section) == 2, "docs/rules.md has no section \"Today's Istio, side by side\""
    for label, case in CASES.items():
        if case.known_differences:
            assert f"`{label}`" in section[1], f"docs/rules.md does not list the case {label!r}"
