"""KubeVirt VM interfaces: traffic arriving on them is redirected like outbound traffic."""

from __future__ import annotations

from meshcni_hooks import hookimpl
from meshcni_hooks.ruleargs import destination_args
from meshcni_hooks.types import NetnsFacts, PluginConfig, PodInfo, RedirectSpec, Rule

SOURCE = "kubevirt"


def _head(family: int, *args: str) -> Rule:
    return Rule(family=family, table="nat", chain="PREROUTING", args=args, head=True, source=SOURCE)


def kubevirt_rules(spec: RedirectSpec, family: int) -> list[Rule]:
    """Head-inserted nat PREROUTING rules in Istio's insertion order (later ends up higher)."""
    interfaces = spec.kubevirt_interfaces
    if not interfaces:
        return []
    include = spec.include_outbound
    rules: list[Rule] = []
    if family == 4 or include.all:
        rules += [_head(family, "-i", name, "-j", "RETURN") for name in interfaces]
    if include.all:
        rules += [_head(family, "-i", name, "-j", "ISTIO_REDIRECT") for name in interfaces]
    else:
        for network in include.of_family(family):
            destination = destination_args(network)
            rules += [_head(family, *destination, "-i", name, "-j", "ISTIO_REDIRECT") for name in interfaces]
    return rules


class KubevirtInterfaces:
    @hookimpl
    def meshcni_extra_rules(
        self, pod: PodInfo, spec: RedirectSpec, config: PluginConfig, netns: NetnsFacts, family: int
    ) -> list[Rule]:
        return kubevirt_rules(spec, family)
