"""The plan -> nft translation alone (no kernel): family binding, merging, refusals."""

from __future__ import annotations

import json

import pytest

from meshcni_backend_nftables.ruleexpr import translate
from meshcni_backend_nftables.transaction import plan_commands
from meshcni_hooks.errors import RuleBuildError
from meshcni_hooks.types import ChainDecl, Rule, RulePlan


def rules_of(plan: RulePlan, chain: str) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in plan_commands(plan) if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


NFPROTO = {4: {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
           6: {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}}
RETURN_UID = ("-m", "owner", "--uid-owner", "1337", "-j", "RETURN")


def test_a_rule_both_families_have_is_written_once_and_the_others_are_bound_to_their_family():
    plan = RulePlan(
        chains=(ChainDecl(4, "nat", "ISTIO_OUTPUT"), ChainDecl(6, "nat", "ISTIO_OUTPUT")),
        rules=(Rule(4, "nat", "ISTIO_OUTPUT", ("-d", "127.0.0.1/32", "-j", "RETURN")),
               Rule(4, "nat", "ISTIO_OUTPUT", RETURN_UID),
               Rule(4, "nat", "ISTIO_OUTPUT", ("-j", "ISTIO_REDIRECT")),
               Rule(6, "nat", "ISTIO_OUTPUT", ("-d", "::1/128", "-j", "RETURN")),
               Rule(6, "nat", "ISTIO_OUTPUT", RETURN_UID)),
    )
    rules = rules_of(plan, "istio-output")
    shared = translate(RETURN_UID, 4)[0]
    assert rules.count(shared) == 1  # written once, for both families
    assert [NFPROTO[4], {"jump": {"target": "istio-redirect"}}] in rules  # IPv4 only: bound by nfproto
    assert len(rules) == 4
    # each family's own order is kept: v4 loopback before the shared rule before the v4 jump
    assert rules.index(shared) < rules.index([NFPROTO[4], {"jump": {"target": "istio-redirect"}}])


@pytest.mark.parametrize("args, word", [
    (("-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "RETURN"), "-m multiport"),
    (("-j", "LOG"), "-j LOG"),
    (("-p", "icmp", "-j", "RETURN"), "-p icmp"),
    (("-j", "MARK", "--set-xmark", "0x1/0xff"), "partial mask"),
    (("-j", "REDIRECT", "--to-ports", "15001-15002"), "--to-ports"),
    (("-d", "192.0.2.0/24", "-j", "RETURN", "--bogus", "1"), "--bogus"),
])
def test_words_it_cannot_translate_are_refused_by_name(args, word):
    with pytest.raises(RuleBuildError, match=word):
        translate(args, 4)


def test_a_chain_that_is_neither_builtin_nor_ours_is_refused():
    plan = RulePlan(rules=(Rule(4, "nat", "KUBE-SERVICES", ("-j", "RETURN")),))
    with pytest.raises(RuleBuildError, match="KUBE-SERVICES"):
        plan_commands(plan)


def test_an_address_of_the_other_family_is_refused():
    with pytest.raises(RuleBuildError, match="IPv4 rule"):
        translate(("-d", "2001:db8::/32", "-j", "RETURN"), 4)


def test_a_repeated_add_deletes_only_the_tables_it_found_and_rebuilds():
    plan = RulePlan(chains=(ChainDecl(4, "nat", "ISTIO_REDIRECT"),),
                    rules=(Rule(4, "nat", "ISTIO_REDIRECT", ("-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")),))
    fresh = plan_commands(plan)
    assert fresh[0] == {"create": {"table": {"family": "inet", "name": "istio-proxy-nat"}}}
    again = plan_commands(plan, replacing=["istio-proxy-raw"])
    deleted = [c["delete"]["table"]["name"] for c in again if "delete" in c]
    assert deleted == ["istio-proxy-raw"]
    assert {"add": {"table": {"family": "inet", "name": "istio-proxy-nat"}}} in again
    assert json.dumps(fresh[1:]) == json.dumps(again[3:])  # the same chains and rules
