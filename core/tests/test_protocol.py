"""CNI protocol details: CNI_ARGS, versions, result conversion, error objects."""

import pytest

from meshcni_core.cni.protocol import (
    SUPPORTED_VERSIONS,
    CniError,
    convert_result,
    parse_cni_args,
    parse_request,
)

PREV_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "veth1", "mac": "aa:bb:cc:dd:ee:ff"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
    "ips": [
        {"version": "4", "address": "192.0.2.5/24", "gateway": "192.0.2.1", "interface": 1},
        {"version": "6", "address": "2001:db8::5/64", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["192.0.2.53"]},
}


def test_cni_args_in_any_order_with_unknown_keys_and_trailing_semicolon():
    args = parse_cni_args("K8S_POD_UID=u-1;IgnoreUnknown=1;K8S_POD_NAME=p;FOO=;K8S_POD_NAMESPACE=ns;IP=192.0.2.9;")
    assert args["K8S_POD_NAME"] == "p" and args["K8S_POD_NAMESPACE"] == "ns" and args["K8S_POD_UID"] == "u-1"


@pytest.mark.parametrize("raw", ["FOO=bar", "K8S_POD_NAME", "IgnoreUnknown=maybe;K8S_POD_NAME=p"])
def test_bad_cni_args_are_code_4(raw):
    with pytest.raises(CniError) as info:
        parse_cni_args(raw)
    assert info.value.code == 4


def test_values_may_contain_equals():
    assert parse_cni_args("IgnoreUnknown=1;X=a=b")["X"] == "a=b"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0x_results_keep_ip_versions(version):
    out = convert_result(PREV_040, version)
    assert out["cniVersion"] == version
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert out["interfaces"] == PREV_040["interfaces"] and out["routes"] == PREV_040["routes"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_1x_results_drop_ip_versions_and_keep_everything_else(version):
    out = convert_result(PREV_040, version)
    assert all("version" not in ip for ip in out["ips"])
    assert [ip["interface"] for ip in out["ips"]] == [1, 1]
    assert out["dns"] == PREV_040["dns"]


def test_1_1_fields_survive_1_1_and_go_below_1_0():
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 1450, "sandbox": "/x"}],
            "ips": [{"address": "192.0.2.5/24", "interface": 0}]}
    assert convert_result(prev, "1.1.0")["interfaces"][0]["mtu"] == 1450
    down = convert_result(prev, "0.4.0")
    assert "mtu" not in down["interfaces"][0] and down["ips"][0]["version"] == "4"


def test_prev_result_without_version_is_taken_as_the_request_version():
    out = convert_result({"ips": [{"address": "2001:db8::5/64"}]}, "0.4.0")
    assert out["ips"] == [{"version": "6", "address": "2001:db8::5/64"}]


def test_old_layout_is_upgraded():
    out = convert_result({"cniVersion": "0.2.0", "ip4": {"ip": "192.0.2.5/24", "gateway": "192.0.2.1"}}, "0.3.1")
    assert out["ips"] == [{"version": "4", "address": "192.0.2.5/24", "gateway": "192.0.2.1"}]


@pytest.mark.parametrize("prev", [[], {"ips": "x"}, {"ips": [{"gateway": "192.0.2.1"}]}])
def test_malformed_prev_result_is_code_6(prev):
    with pytest.raises(CniError) as info:
        convert_result(prev, "1.0.0")
    assert info.value.code == 6


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({**ENV, "CNI_COMMAND": "FOO"}, b"{}", 4),
        ({**ENV, "CNI_NETNS": ""}, b"{}", 4),
        ({k: v for k, v in ENV.items() if k != "CNI_IFNAME"}, b"{}", 4),
        ({**ENV, "CNI_IFNAME": "a/b"}, b"{}", 4),
        (ENV, b"{not json", 6),
        (ENV, b"[1]", 6),
        (ENV, b'{"cniVersion":"1.0.0"}', 7),
        (ENV, b'{"cniVersion":"0.2.1","name":"n"}', 1),
        (ENV, b'{"cniVersion":"1.2.0","name":"n"}', 1),
        ({**ENV, "CNI_COMMAND": "CHECK"}, b'{"cniVersion":"0.3.1","name":"n"}', 1),
        ({**ENV, "CNI_COMMAND": "STATUS"}, b'{"cniVersion":"1.0.0","name":"n"}', 1),
    ],
)
def test_request_errors_have_the_spec_codes(env, stdin, code):
    with pytest.raises(CniError) as info:
        parse_request(env, stdin)
    assert info.value.code == code


def test_del_does_not_need_a_netns():
    request = parse_request({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, b'{"cniVersion":"0.3.1","name":"n"}')
    assert request.netns == ""


def test_supported_versions():
    assert SUPPORTED_VERSIONS == ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def test_missing_cni_version_means_0_1_0_as_in_libcni():
    request = parse_request({**ENV, "CNI_ARGS": ""}, b'{"name":"n"}')
    assert request.cni_version == "0.1.0"


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_old_layout_round_trips_and_newer_results_are_downgraded(version):
    old = {"cniVersion": version, "ip4": {"ip": "192.0.2.5/24", "gateway": "192.0.2.1",
                                          "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]},
           "dns": {"nameservers": ["192.0.2.53"]}}
    assert convert_result(old, version) == old
    down = convert_result(PREV_040, version)
    assert down == {
        "cniVersion": version,
        "ip4": {"ip": "192.0.2.5/24", "gateway": "192.0.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "2001:db8::5/64"},
        "dns": PREV_040["dns"],
    }


def test_a_result_without_addresses_cannot_go_below_0_3_0():
    with pytest.raises(CniError, match="cannot convert prevResult to cniVersion 0.2.0"):
        convert_result({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0"}], "ips": []}, "0.2.0")


def test_null_pod_annotations_mean_none():
    """containerd marshals a pod without annotations as null (seen in the containerd e2e test)."""
    request = parse_request(
        {**ENV, "CNI_ARGS": "IgnoreUnknown=1"},
        b'{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"io.kubernetes.cri.pod-annotations":null}}',
    )
    assert request.runtime_annotations == {}


@pytest.mark.parametrize(
    "raw",
    [
        "K8S_POD_NAMESPACE=default\n;K8S_POD_NAME=p",
        "K8S_POD_NAMESPACE=Default;K8S_POD_NAME=p",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p q",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../x",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=caf\u00e9",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=u\x01",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c 1",
        "K8S_POD_NAMESPACE=" + "a" * 64 + ";K8S_POD_NAME=p",
    ],
)
def test_kubernetes_values_must_have_the_api_servers_shape(raw):
    with pytest.raises(CniError) as info:
        parse_cni_args(raw)
    key, value = next(p.split("=", 1) for p in raw.split(";") if p.split("=", 1)[0] in info.value.msg)
    assert info.value.code == 4 and f"{key}={value!r}" in info.value.msg


def test_real_kubelet_values_pass():
    args = parse_cni_args(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-8x7wq.a;"
        "K8S_POD_INFRA_CONTAINER_ID=" + "a1" * 32 + ";K8S_POD_UID=0f4b2c4e-9a1b-4c8e-a7a3-2e5b1f0d9c11"
    )
    assert args["K8S_POD_NAME"] == "coredns-5d78c9869d-8x7wq.a"
