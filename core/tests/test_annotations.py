"""Istio 1.6's annotation defaults and quirks, and meshcni's strictness about bad values."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcni_core.builtin.annotations import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    INTERCEPTION_MODE,
    redirect_spec_from_annotations,
)
from meshcni_hooks.errors import AnnotationError

ALL_KEYS = [
    INTERCEPTION_MODE, INCLUDE_OUTBOUND_IP_RANGES, EXCLUDE_OUTBOUND_IP_RANGES, INCLUDE_INBOUND_PORTS,
    EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_PORTS,
]


def test_defaults_are_istio_16s():
    spec = redirect_spec_from_annotations({})
    assert spec.mode == "REDIRECT"
    assert spec.include_outbound.all and spec.include_inbound_ports.all
    assert spec.exclude_inbound_ports == (15020, 15021, 15090)
    assert spec.exclude_outbound_ports == (15020,)
    assert spec.origins["mode"] == "default"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", (15020, 15021, 15090)),
        ("3306", (3306, 15020, 15021, 15090)),
        ("3306,", None),  # Istio accepted a trailing comma only through its own augmentation
        ("15090,80", (15090, 80, 15020, 15021)),
        ("80, 81", (80, 81, 15020, 15021, 15090)),
    ],
)
def test_exclude_inbound_ports_augmentation(value, expected):
    if expected is None:
        with pytest.raises(AnnotationError):
            redirect_spec_from_annotations({EXCLUDE_INBOUND_PORTS: value})
    else:
        assert redirect_spec_from_annotations({EXCLUDE_INBOUND_PORTS: value}).exclude_inbound_ports == expected


def test_exclude_outbound_ports_replace_the_default():
    assert redirect_spec_from_annotations({EXCLUDE_OUTBOUND_PORTS: "5432"}).exclude_outbound_ports == (5432,)
    assert redirect_spec_from_annotations({EXCLUDE_OUTBOUND_PORTS: ""}).exclude_outbound_ports == ()


def test_origins_name_the_annotation():
    spec = redirect_spec_from_annotations({INCLUDE_INBOUND_PORTS: "80"})
    assert spec.origins["include_inbound_ports"] == f"annotation {INCLUDE_INBOUND_PORTS}"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 10.1.0.0/16", "not a CIDR"),
        (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0", "not a CIDR"),
        (INCLUDE_OUTBOUND_IP_RANGES, "*,10.0.0.0/8", "not a CIDR"),
        (EXCLUDE_OUTBOUND_IP_RANGES, "*", "not allowed"),
        (EXCLUDE_OUTBOUND_IP_RANGES, "300.0.0.0/8", "not a CIDR"),
        (INCLUDE_INBOUND_PORTS, "80,", "not a port"),
        (INCLUDE_INBOUND_PORTS, "65536", "out of range"),
        (INCLUDE_INBOUND_PORTS, "+80", "not a port"),
        (EXCLUDE_OUTBOUND_PORTS, "*", "not allowed"),
        (INTERCEPTION_MODE, "redirect", "interception mode"),
    ],
)
def test_invalid_values_name_the_annotation_and_value(key, value, reason):
    with pytest.raises(AnnotationError) as info:
        redirect_spec_from_annotations({key: value})
    assert key in str(info.value) and repr(value) in str(info.value) and reason in str(info.value)


def test_validation_order_reports_the_first_bad_value_as_istio_does():
    with pytest.raises(AnnotationError) as info:
        redirect_spec_from_annotations({INCLUDE_INBOUND_PORTS: "x", EXCLUDE_OUTBOUND_IP_RANGES: "y"})
    assert info.value.annotation == INCLUDE_INBOUND_PORTS


@given(st.dictionaries(st.sampled_from(ALL_KEYS), st.text(max_size=40)))
def test_any_annotation_value_gives_a_spec_or_an_annotation_error(annotations):
    try:
        spec = redirect_spec_from_annotations(annotations)
    except AnnotationError as exc:
        assert exc.annotation in annotations
    else:
        assert all(0 <= p <= 65535 for p in spec.exclude_inbound_ports + spec.exclude_outbound_ports)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (EXCLUDE_OUTBOUND_IP_RANGES, "fd00::%1 -j RETURN\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT/64", "zone"),
        (EXCLUDE_OUTBOUND_IP_RANGES, "fe80::1%eth0/64", "zone"),
        (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/255.0.0.0", "decimal prefix"),  # Go's ParseCIDR refuses masks
        (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8\n", "not a CIDR"),
        (INCLUDE_OUTBOUND_IP_RANGES, "\u0661\u0660.0.0.0/8", "not a CIDR"),
        (INCLUDE_INBOUND_PORTS, "80\x00", "not a port"),
        (INCLUDE_INBOUND_PORTS, "\u0668\u0660", "not a port"),  # Arabic-Indic digits: int() takes them
        (INCLUDE_INBOUND_PORTS, "0" * 5000 + "80", "not a port"),  # int() would raise on 4300+ digits
        (INCLUDE_INBOUND_PORTS, "80\u2028", "not a port"),  # str.strip() would take it away
        (INTERCEPTION_MODE, "REDIRECT\n", "interception mode"),
    ],
)
def test_values_that_could_change_a_rule_are_refused(key, value, reason):
    with pytest.raises(AnnotationError) as info:
        redirect_spec_from_annotations({key: value})
    assert info.value.annotation == key and repr(value) in info.value.msg and reason in info.value.msg


def test_networks_are_rebuilt_without_a_zone_and_ports_trimmed_of_ascii_space_only():
    spec = redirect_spec_from_annotations({
        EXCLUDE_OUTBOUND_IP_RANGES: "2001:db8::1/32,10.1.2.3/8", EXCLUDE_OUTBOUND_PORTS: " 5432\n",
    })
    assert [str(n) for n in spec.exclude_outbound.networks] == ["2001:db8::/32", "10.0.0.0/8"]
    assert all(getattr(n.network_address, "scope_id", None) is None for n in spec.exclude_outbound.networks)
    assert spec.exclude_outbound_ports == (5432,)


def test_a_long_list_parses_in_linear_time():
    value = ",".join(f"2001:db8::{i:x}/128" for i in range(5000))
    spec = redirect_spec_from_annotations({EXCLUDE_OUTBOUND_IP_RANGES: value})
    assert len(spec.exclude_outbound.networks) == 5000
