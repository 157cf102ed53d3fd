"""Which backend a netconf selects: explicit ``backend``, a backend's netconf switch, ``auto``."""

from __future__ import annotations

import logging

import pytest

from meshcni_core.backend_selection import choose, first_usable
from meshcni_core.builtin.config import load_plugin_config
from meshcni_hooks.errors import ApplyError, ConfigError
from meshcni_hooks.types import BackendInfo, RulePlan, Target


class HostBackend:
    """A backend whose host reports ``problems``; it is never asked to apply anything here."""

    def __init__(self, name: str, problems: list[str]):
        self.name, self.problems = name, problems

    def apply(self, plan: RulePlan, target: Target) -> None:
        raise AssertionError("selection never applies")

    teardown = missing = apply  # type: ignore[assignment]

    def host_problems(self) -> list[str]:
        return self.problems

    def transaction(self, plan: RulePlan) -> str:
        return ""


def registered(*extra: BackendInfo, core_problems: tuple[str, ...] = ()) -> dict[str, BackendInfo]:
    core = BackendInfo(name="iptables-restore", factory=lambda: HostBackend("iptables-restore", list(core_problems)))
    return {info.name: info for info in (core, *extra)}


SWITCHED = BackendInfo(name="acme-nft", factory=lambda: HostBackend("acme-nft", []), provider="acme",
                       netconf_switch="native_nftables")


def config(**netconf):
    return load_plugin_config({"cniVersion": "1.0.0", "name": "n", **netconf})


def test_without_backend_or_switch_the_default_is_iptables_restore():
    assert choose(config(), registered(SWITCHED)).name == "iptables-restore"
    assert choose(config(native_nftables=False), registered(SWITCHED)).name == "iptables-restore"


def test_a_true_switch_selects_the_backend_that_claims_it():
    choice = choose(config(native_nftables=True), registered(SWITCHED))
    assert (choice.name, choice.reason) == ("acme-nft", "netconf key native_nftables=true")


def test_an_explicit_backend_wins_and_must_agree_with_a_true_switch():
    assert choose(config(backend="iptables-restore"), registered(SWITCHED)).name == "iptables-restore"
    assert choose(config(backend="acme-nft", native_nftables=True), registered(SWITCHED)).name == "acme-nft"
    with pytest.raises(ConfigError, match=r"backend='iptables-restore' contradicts native_nftables=true"):
        choose(config(backend="iptables-restore", native_nftables=True), registered(SWITCHED))


def test_an_istio_switch_nothing_enabled_claims_is_a_config_error_not_an_iptables_fallback():
    with pytest.raises(ConfigError) as caught:
        choose(config(native_nftables=True), registered())
    assert "native_nftables=true" in caught.value.msg
    assert "no enabled extension provides" in caught.value.msg
    assert "not programmed with iptables instead" in caught.value.msg


def test_two_switched_backends_at_once_are_refused():
    other = BackendInfo(name="acme-bpf", factory=lambda: HostBackend("acme-bpf", []), netconf_switch="acme_bpf")
    with pytest.raises(ConfigError, match="each select a different backend"):
        choose(config(native_nftables=True, acme_bpf=True), registered(SWITCHED, other))


def test_an_unknown_backend_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"backend='acme' is not registered \(registered: iptables-restore\)"):
        choose(config(backend="acme"), registered())


def test_auto_takes_the_core_first_when_this_host_can_run_it(caplog):
    assert choose(config(backend="auto"), registered(SWITCHED)).name == ""
    with caplog.at_level(logging.INFO, logger="meshcni"):
        chosen = first_usable(registered(SWITCHED), lambda info: info.factory())
    assert chosen.name == "iptables-restore"
    assert "backend auto: using iptables-restore" in caplog.text


def test_auto_takes_the_next_usable_backend_and_says_why(caplog):
    backends = registered(SWITCHED, core_problems=("iptables-restore not found on PATH: install iptables",))
    with caplog.at_level(logging.INFO, logger="meshcni"):
        chosen = first_usable(backends, lambda info: info.factory())
    assert chosen.name == "acme-nft"
    assert "using acme-nft" in caplog.text and "iptables-restore cannot run here: iptables-restore not found" in caplog.text


def test_auto_with_no_usable_backend_lists_every_backend_s_problems():
    broken = BackendInfo(name="acme-nft", factory=lambda: HostBackend("acme-nft", ["libacme missing"]), provider="acme")
    with pytest.raises(ApplyError) as caught:
        first_usable(registered(broken, core_problems=("no iptables",)), lambda info: info.factory())
    assert caught.value.details.splitlines() == ["iptables-restore cannot run here: no iptables",
                                                  "acme-nft cannot run here: libacme missing"]


def test_switches_are_the_netconf_s_top_level_booleans():
    assert config(native_nftables=True, dns_capture=False, log_level="info").switches == {
        "native_nftables": True, "dns_capture": False}
