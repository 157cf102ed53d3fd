"""DNS capture as today's Istio programs it, through the installed ``istio-cni`` in a throwaway netns.

``ISTIO_META_DNS_CAPTURE: "true"`` in the pod's ``proxy.istio.io/config`` annotation (from the
runtime's annotations), in the ``istio-proxy`` container's env (the pod read from the real API
server), or the netconf's mesh-wide ``dns_capture``. Topology: test_redirect_traffic's; the DNS
server is 198.51.100.10:53 in the peer netns, the stand-in proxy's DNS listener 127.0.0.1:15053 in
the pod (where Istio's agent listens), run as the proxy's UID.
"""

from __future__ import annotations

import json

import pytest

from backends import both_backends, rules_text
from dnslab import Responders, udp_query
from meshcni_testing.netlab import cni, run
from test_pod_cache import eventually
from test_redirect_traffic import REMOTE4, REMOTE6, add, lab, lab6, netconf  # noqa: F401 - fixtures

pytestmark = pytest.mark.netns

PROXY_CONFIG = "proxy.istio.io/config"
DNS_ON = 'proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: "true"\n'
OPENSHIFT_UID = 1000650000
ZONE_2 = {"iptables-restore": "-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j CT --zone 2",
          "nftables": "udp dport 53 ct zone set 2"}


@pytest.fixture
def dns(lab):  # noqa: F811
    """UDP: the DNS server and another UDP service in the peer; ``start_proxy_dns(uid)`` starts
    the stand-in proxy's DNS listener. TCP: 15001 and 15053 in the pod, 53 in the peer."""
    responders = Responders()
    lab.listen(lab.pod, "0.0.0.0", 15001)
    lab.listen(lab.pod, "0.0.0.0", 15053)
    lab.listen(lab.peer, REMOTE4, 53)
    responders.start(lab.peer, REMOTE4, 53, "server")
    responders.start(lab.peer, REMOTE4, 5353, "other-udp")
    lab.start_proxy_dns = lambda uid=1337: responders.start(lab.pod, "127.0.0.1", 15053, "proxy-dns", uid=uid)
    try:
        yield lab
    finally:
        responders.close()


def assert_dns_captured(lab, proxy_uid: int = 1337) -> None:  # noqa: F811
    """The app's UDP and TCP DNS land on 15053; the proxy's own reach the server."""
    assert udp_query(lab.pod, REMOTE4, 53) == "proxy-dns"
    assert udp_query(lab.pod, REMOTE4, 53, uid=proxy_uid) == "server"
    got = lab.connect(lab.pod, REMOTE4, 53)
    assert (got.listener, got.original_dst) == (15053, (REMOTE4, 53))
    got = lab.connect(lab.pod, REMOTE4, 53, uid=proxy_uid)
    assert got.listener == 53 and got.local == (REMOTE4, 53)
    assert udp_query(lab.pod, REMOTE4, 5353) == "other-udp"  # only DNS is captured


@both_backends
def test_proxy_config_annotation_from_the_runtime_captures_the_apps_dns(dns):
    dns.start_proxy_dns()
    add(dns, netconf({PROXY_CONFIG: DNS_ON}))
    assert_dns_captured(dns)
    assert ZONE_2[dns.backend] in rules_text(dns, dns.pod)


@both_backends
def test_without_dns_capture_the_apps_dns_goes_to_the_server(dns):
    dns.start_proxy_dns()
    add(dns, netconf())
    assert udp_query(dns.pod, REMOTE4, 53) == "server"
    assert dns.connect(dns.pod, REMOTE4, 53).listener == 15001  # plain TCP capture, as before


@both_backends
@pytest.mark.parametrize("annotation, captured", [(None, True), ('{"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "false"}}', False)])
def test_mesh_wide_default_from_the_netconf_and_the_pods_override(dns, annotation, captured):
    dns.start_proxy_dns()
    add(dns, netconf({PROXY_CONFIG: annotation} if annotation else None, dns_capture=True))
    assert udp_query(dns.pod, REMOTE4, 53) == ("proxy-dns" if captured else "server")


def test_removal_leaves_no_dns_rules_in_any_table(dns):
    dns.start_proxy_dns()
    conf = netconf({PROXY_CONFIG: DNS_ON})
    add(dns, conf)
    add(dns, conf)  # a repeated ADD reconciles to the same rules
    assert cni("CHECK", dns.pod, conf).returncode == 0
    assert cni("DEL", dns.pod, conf).returncode == 0
    assert dns.save(dns.pod) == "" and dns.save(dns.pod, family=6) == ""
    assert udp_query(dns.pod, REMOTE4, 53) == "server"


@pytest.mark.parametrize("value, reason", [
    ("proxyMetadata: [unclosed", "not YAML or JSON"),
    ("proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: true\n", "proxyMetadata entries must be strings"),
    ('{"proxyMetadata": "ISTIO_META_DNS_CAPTURE=true"}', "proxyMetadata must be a mapping"),
    ("- proxyMetadata", "expected a mapping of ProxyConfig fields"),
    ('proxyMetadata: {ISTIO_META_DNS_CAPTURE: "maybe"}', "is not true or false"),
])
def test_malformed_proxy_config_from_the_runtime_fails_the_add_naming_it(dns, value, reason):
    proc = cni("ADD", dns.pod, netconf({PROXY_CONFIG: value}))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)
    assert error["code"] == 103
    assert f"invalid annotation {PROXY_CONFIG}=" in error["msg"] and reason in error["msg"]
    assert dns.save(dns.pod) == "" and dns.save(dns.pod, family=6) == ""


# -- the pod from the real API server -------------------------------------------------------------

def api_pod(control_plane, name: str, *, proxy_env: list[dict] | None = None,
            annotations: dict[str, str] | None = None) -> str:
    """A pod as today's injector leaves it: istio-proxy with the proxy metadata as env and the
    proxy's UID in its securityContext."""
    control_plane.ensure_namespace("dns")
    proxy = {"name": "istio-proxy", "image": "proxyv2:1", "env": proxy_env or [],
             "securityContext": {"runAsUser": OPENSHIFT_UID, "runAsGroup": OPENSHIFT_UID}}
    pod = control_plane.request("POST", "/api/v1/namespaces/dns/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"sidecar.istio.io/status": "{}", **(annotations or {})}},
        "spec": {"nodeName": "node-dns", "containers": [{"name": "app", "image": "app:1"}, proxy]},
    })
    return str(pod["metadata"]["uid"])


def from_the_api(control_plane) -> dict:
    conf = {k: v for k, v in netconf().items() if k != "runtimeConfig"}
    conf["kubernetes"] = {**conf["kubernetes"], "kubeconfig": str(control_plane.admin_kubeconfig)}
    return conf


def test_istio_proxy_env_from_the_real_api_captures_dns_and_its_uid_bypasses(dns, control_plane):
    """Today's plugin reads ISTIO_META_DNS_CAPTURE from istio-proxy's env (the injector writes it
    there from the proxy config); the proxy's own UID comes from its securityContext."""
    uid = api_pod(control_plane, "env-dns", proxy_env=[{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}])
    dns.start_proxy_dns(uid=OPENSHIFT_UID)
    proc = cni("ADD", dns.pod, from_the_api(control_plane), pod="env-dns", namespace="dns", uid=uid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_dns_captured(dns, proxy_uid=OPENSHIFT_UID)
    assert udp_query(dns.pod, REMOTE4, 53, uid=1337) == "proxy-dns"  # 1337 is an app UID here


def test_malformed_proxy_config_from_the_real_api_fails_the_add_naming_it(dns, control_plane):
    uid = api_pod(control_plane, "bad-config", annotations={PROXY_CONFIG: "proxyMetadata: ["},
                  proxy_env=[{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}])
    proc = cni("ADD", dns.pod, from_the_api(control_plane), pod="bad-config", namespace="dns", uid=uid)
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 103, proc.stdout + proc.stderr
    assert f"invalid annotation {PROXY_CONFIG}='proxyMetadata: ['" in error["msg"]
    assert dns.save(dns.pod) == "" and dns.save(dns.pod, family=6) == ""
    assert run("ip", "netns", "exec", dns.name_of(dns.pod), "iptables-nft-save", "-t", "raw").stdout.count("-A ") == 0


def test_runtime_annotations_take_dns_capture_from_the_agents_pod_cache(dns, install_cni):
    """The runtime's annotations carry no env; the node agent's pod cache has istio-proxy's."""
    api, agent_conf, cached_pods = install_cni
    api.add_pod("default", "app-1", containers=["app", {
        "name": "istio-proxy", "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}],
        "securityContext": {"runAsUser": OPENSHIFT_UID, "runAsGroup": OPENSHIFT_UID}}],
        annotations={"sidecar.istio.io/status": "{}"})
    eventually(lambda: cached_pods() == 1)
    dns.start_proxy_dns(uid=OPENSHIFT_UID)
    conf = netconf({"sidecar.istio.io/status": "{}"}, agent_socket=agent_conf["agent_socket"])
    proc = cni("ADD", dns.pod, conf, uid="uid-default-app-1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_dns_captured(dns, proxy_uid=OPENSHIFT_UID)
    assert not [path for _, path, _ in api.requests if path.endswith("/pods/app-1")]  # the cache answered


@both_backends
def test_ipv6_dns_of_a_dual_stack_pod_is_captured_too(dns, lab6):  # noqa: F811
    """Today's Istio mirrors the DNS rules for IPv6; the agent listens on [::1]:15053 as well."""
    responders = Responders()
    try:
        responders.start(lab6.peer, REMOTE6, 53, "server")
        responders.start(lab6.pod, "::1", 15053, "proxy-dns", uid=1337)
        conf = netconf({PROXY_CONFIG: DNS_ON})
        conf["prevResult"]["ips"].append({"address": "2001:db8:1::2/64", "interface": 0})
        add(lab6, conf)
        assert udp_query(lab6.pod, REMOTE6, 53) == "proxy-dns"
        assert udp_query(lab6.pod, REMOTE6, 53, uid=1337) == "server"
        assert ZONE_2[lab6.backend] in rules_text(lab6, lab6.pod, family=6)
    finally:
        responders.close()


def test_malformed_proxy_config_through_the_node_agent_fails_the_add_naming_it(dns, install_cni):
    _, agent_conf, _ = install_cni
    conf = netconf({PROXY_CONFIG: "proxyMetadata: {ISTIO_META_DNS_CAPTURE: true}"},
                   agent_socket=agent_conf["agent_socket"])
    proc = cni("ADD", dns.pod, conf)
    error = json.loads(proc.stdout)
    assert proc.returncode == 1 and error["code"] == 103, proc.stdout + proc.stderr
    assert f"invalid annotation {PROXY_CONFIG}=" in error["msg"] and "must be strings" in error["msg"]
    assert dns.save(dns.pod) == "" and dns.save(dns.pod, family=6) == ""
