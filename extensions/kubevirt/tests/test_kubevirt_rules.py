"""Kubevirt interface rules through the extension-author harness (no kernel involved)."""

import pytest

from meshcni_hooks.errors import AnnotationError

VMS = {"traffic.sidecar.istio.io/kubevirtInterfaces": "net1,net2"}


def prerouting(plan, family=4):
    return [r.text for r in plan.chain_rules(family, "nat", "PREROUTING")]


def test_rules_sit_above_the_inbound_jump_in_istios_order(meshcni_pipeline, pod_factory):
    plan = meshcni_pipeline(extensions=("kubevirt",)).add(pod_factory(annotations=VMS)).plan
    assert prerouting(plan) == [
        "-i net2 -j ISTIO_REDIRECT", "-i net1 -j ISTIO_REDIRECT", "-i net2 -j RETURN", "-i net1 -j RETURN",
        "-p tcp -j ISTIO_INBOUND",
    ]
    assert {r.source for r in plan.rules if r.chain == "PREROUTING" and "-i" in r.args} == {"kubevirt"}


def test_empty_include_list_keeps_only_the_returns(meshcni_pipeline, pod_factory):
    annotations = {**VMS, "traffic.sidecar.istio.io/includeOutboundIPRanges": ""}
    plan = meshcni_pipeline(extensions=("kubevirt",)).add(pod_factory(annotations=annotations)).plan
    assert prerouting(plan)[:2] == ["-i net2 -j RETURN", "-i net1 -j RETURN"]


def test_annotation_without_the_extension_fails_instead_of_being_ignored(meshcni_pipeline, pod_factory):
    with pytest.raises(AnnotationError, match="enable the 'kubevirt' extension"):
        meshcni_pipeline().add(pod_factory(annotations=VMS))


@pytest.mark.parametrize("value", [
    "net1,,net2", "a-very-long-interface-name", "eth0\n", "eth0\x00",
    "eth+",  # an iptables wildcard, not a name
    "\u00e9th0",
])
def test_values_that_are_not_whole_interface_names_are_refused(meshcni_pipeline, pod_factory, value):
    key = "traffic.sidecar.istio.io/kubevirtInterfaces"
    with pytest.raises(AnnotationError) as info:
        meshcni_pipeline(extensions=("kubevirt",)).add(pod_factory(annotations={key: value}))
    assert info.value.annotation == key and "interface name" in info.value.msg


def test_todays_istio_spelling_is_accepted_and_wins_over_the_deprecated_one(meshcni_pipeline, pod_factory):
    """Today's Istio reads istio.io/reroute-virtual-interfaces first and the old key only without it."""
    both = {"istio.io/reroute-virtual-interfaces": "vm0", "traffic.sidecar.istio.io/kubevirtInterfaces": "net1"}
    plan = meshcni_pipeline(extensions=("kubevirt",)).add(pod_factory(annotations=both)).plan
    assert prerouting(plan)[:2] == ["-i vm0 -j ISTIO_REDIRECT", "-i vm0 -j RETURN"]
    alone = {"istio.io/reroute-virtual-interfaces": "net1,net2"}
    plan = meshcni_pipeline(extensions=("kubevirt",)).add(pod_factory(annotations=alone)).plan
    assert prerouting(plan)[:4] == [
        "-i net2 -j ISTIO_REDIRECT", "-i net1 -j ISTIO_REDIRECT", "-i net2 -j RETURN", "-i net1 -j RETURN",
    ]


def test_todays_spelling_without_the_extension_fails_naming_it(meshcni_pipeline, pod_factory):
    with pytest.raises(AnnotationError, match="enable the 'kubevirt' extension"):
        meshcni_pipeline().add(pod_factory(annotations={"istio.io/reroute-virtual-interfaces": "vm0"}))
