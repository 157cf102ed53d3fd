"""Every logLevel the seed's values table allows is a level the plugin and the installer accept."""

import pytest

from meshcni_core.builtin.config import load_plugin_config
from meshcni_core.install.settings import SettingsError, from_env
from meshcni_hooks.errors import ConfigError

SEED_LOG_LEVELS = ("panic", "fatal", "error", "warn", "info", "debug")


@pytest.mark.parametrize("level", SEED_LOG_LEVELS)
def test_plugin_accepts_every_seed_log_level(level):
    assert load_plugin_config({"type": "istio-cni", "log_level": level.upper()}).log_level == level


@pytest.mark.parametrize("level", SEED_LOG_LEVELS)
def test_installer_accepts_every_seed_log_level(level):
    assert from_env({"LOG_LEVEL": level, "KUBERNETES_NODE_NAME": "node-a"}).log_level == level


def test_unknown_log_level_is_refused_by_name():
    with pytest.raises(ConfigError, match="log_level"):
        load_plugin_config({"type": "istio-cni", "log_level": "verbose"})
    with pytest.raises(SettingsError, match="LOG_LEVEL: 'verbose' is not one of"):
        from_env({"LOG_LEVEL": "verbose", "KUBERNETES_NODE_NAME": "node-a"})
