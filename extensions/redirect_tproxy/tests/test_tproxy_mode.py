"""The TPROXY mode through the extension-author harness (no kernel involved)."""

import pytest

from meshcni_hooks.types import NetnsFacts, RedirectSpec
from meshcni_redirect_tproxy import TproxyMode

MODE = {"sidecar.istio.io/interceptionMode": "TPROXY"}


def texts(plan, table, chain, family=4):
    return [r.text for r in plan.chain_rules(family, table, chain)]


def test_registered_by_name_and_programs_mangle(meshcni_pipeline, pod_factory):
    harness = meshcni_pipeline(extensions=("tproxy",))
    plan = harness.add(pod_factory(annotations=MODE)).plan
    assert texts(plan, "mangle", "PREROUTING") == ["-p tcp -j ISTIO_INBOUND"]
    assert texts(plan, "mangle", "ISTIO_INBOUND")[-2:] == [
        "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
        "-p tcp -j ISTIO_TPROXY",
    ]
    assert [s.args[:4] for s in plan.routes] == [("-f", "inet", "rule", "add"), ("-f", "inet", "route", "replace")]


def test_inbound_goes_to_the_inbound_capture_port_not_the_outbound_one():
    """Today's Istio (istio-iptables `tproxy.golden`): TPROXY delivers to the inbound capture port;
    Istio 1.6's CNI script used the outbound port. The istio-iptables drop-in's -z sets it."""
    from meshcni_redirect_tproxy import tproxy_inbound

    _, rules, _ = tproxy_inbound(RedirectSpec(mode="TPROXY", proxy_port=15101, inbound_capture_port=15106), 4)
    targets = [r.text for r in rules if r.chain == "ISTIO_TPROXY"]
    assert targets == ["! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15106 --on-ip 0.0.0.0 "
                       "--tproxy-mark 0x539/0xffffffff"]


def test_ipv6_inbound_stays_nat_redirect(meshcni_pipeline, pod_factory):
    harness = meshcni_pipeline(TproxyMode())
    facts = NetnsFacts(interfaces=("lo", "eth0"), ipv6_addresses=("2001:db8::5",))
    plan = harness.add(pod_factory(annotations=MODE), facts).plan
    assert texts(plan, "mangle", "PREROUTING", family=6) == []
    assert texts(plan, "nat", "PREROUTING", family=6) == ["-p tcp -j ISTIO_INBOUND"]


def test_without_the_extension_tproxy_is_a_named_error(meshcni_pipeline, pod_factory):
    import pytest

    from meshcni_hooks.errors import AnnotationError

    with pytest.raises(AnnotationError, match="enable the 'tproxy' extension"):
        meshcni_pipeline().add(pod_factory(annotations=MODE))


def test_mark_and_route_table_come_from_the_extensions_settings(meshcni_pipeline, pod_factory):
    harness = meshcni_pipeline(extensions=("tproxy",), extension_settings={"tproxy": {"mark": 1536, "route_table": 200}})
    plan = harness.add(pod_factory(annotations=MODE)).plan
    assert "--tproxy-mark 0x600/0xffffffff" in texts(plan, "mangle", "ISTIO_TPROXY")[0]
    assert plan.routes[0].args[-4:] == ("fwmark", "1536", "lookup", "200")
    assert plan.routes[1].args[-2:] == ("table", "200")





@pytest.mark.parametrize(("settings", "named"), [
    ({"route_table": 254}, "extension_settings.tproxy.route_table=254"),  # the main table: flushed on DEL
    ({"mark": 0}, "extension_settings.tproxy.mark=0"),
    ({"mark": "133 "}, "extension_settings.tproxy.mark='133 '"),
    ({"colour": 1}, "extension_settings.tproxy.colour=1"),
])
def test_bad_settings_fail_the_pipeline_naming_the_key(meshcni_pipeline, settings, named):
    from meshcni_hooks.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        meshcni_pipeline(extensions=("tproxy",), extension_settings={"tproxy": settings})
    assert named in info.value.msg and info.value.code == 7
