"""The TPROXY mode through the extension-author harness (no kernel involved)."""

from meshcni_hooks.types import NetnsFacts
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
