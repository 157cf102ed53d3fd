"""The contract's own values: typed per-extension parameters, settings errors, interface lists."""

from dataclasses import FrozenInstanceError, dataclass

import pytest

from meshcni_hooks.errors import AnnotationError, ConfigError, SettingError
from meshcni_hooks.ruleargs import parse_interfaces
from meshcni_hooks.types import ExtensionParams, PluginConfig, RedirectSpec


@dataclass(frozen=True)
class Mine:
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Theirs:
    mark: int = 1


def test_params_are_found_by_their_type_only():
    spec = RedirectSpec(extension_params=(ExtensionParams("theirs", Theirs(7)), ExtensionParams("mine", Mine(("a",)))))
    assert spec.params(Mine) == Mine(("a",))
    assert spec.params(Theirs) == Theirs(7)
    assert RedirectSpec().params(Mine) is None


def test_spec_and_params_are_frozen():
    with pytest.raises(FrozenInstanceError):
        RedirectSpec().extension_params = ()  # type: ignore[misc]


def test_settings_are_returned_only_as_the_asked_type():
    config = PluginConfig(cni_version="1.0.0", network_name="n", extension_settings={"mine": Mine()})
    assert config.settings("mine", Mine) == Mine()
    assert config.settings("mine", Theirs) is None and config.settings("other", Mine) is None


def test_a_setting_error_is_a_config_error_naming_key_and_value():
    error = SettingError("mark", "0", "out of range")
    assert isinstance(error, ConfigError) and error.code == 7
    assert error.msg == "invalid setting mark='0': out of range"


@pytest.mark.parametrize("value", ["eth0,,eth1", "eth+", "eth0\n", "a-very-long-interface-name", "."])
def test_interface_lists_take_whole_names_only(value):
    with pytest.raises(AnnotationError) as info:
        parse_interfaces("acme.example/ifaces", value)
    assert info.value.annotation == "acme.example/ifaces"


def test_interface_lists_keep_order_without_duplicates():
    assert parse_interfaces("k", "net2,net1,net2") == ("net2", "net1") and parse_interfaces("k", "") == ()
