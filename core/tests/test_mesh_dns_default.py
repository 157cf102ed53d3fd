"""The mesh-wide DNS capture default: ``meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE``
in the install values becomes the netconf's ``dns_capture``, which the plugin applies to pods whose
proxy config does not say otherwise."""

import json

import pytest

from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import ValuesError, resolve

SET = "meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE"


def netconf_of(*sets: str) -> dict:
    objects = render(resolve(sets=list(sets)))
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    return json.loads(config_map["data"]["cni_network_config"])


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("False", None), ("false", None)])
def test_the_values_path_sets_the_netconf_default(value, expected):
    assert netconf_of(f"{SET}={value}").get("dns_capture") is expected


def test_absent_means_no_key():
    assert "dns_capture" not in netconf_of()


def test_operator_file_with_quoted_and_unquoted_values(tmp_path):
    for text in ('"true"', "true"):
        path = tmp_path / "op.yaml"
        path.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n"
                        f"    defaultConfig:\n      proxyMetadata:\n        ISTIO_META_DNS_CAPTURE: {text}\n")
        assert resolve(files=[path]).dns_capture is True


@pytest.mark.parametrize("value", ["maybe", "yes"])
def test_a_value_that_is_not_a_bool_is_named_by_its_path(value):
    with pytest.raises(ValuesError) as caught:
        resolve(sets=[f"{SET}={value}"])
    assert any(p.startswith(f"{SET}: '{value}' is not") for p in caught.value.problems)
