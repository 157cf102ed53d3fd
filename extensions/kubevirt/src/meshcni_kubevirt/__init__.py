"""KubeVirt VM interfaces: traffic arriving on them is redirected like outbound traffic.

The extension owns two annotations with the same value format (comma-separated interface
names): today's Istio ``istio.io/reroute-virtual-interfaces`` and the deprecated
``traffic.sidecar.istio.io/kubevirtInterfaces``. As in Istio, the former wins when both are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshcni_hooks import hookimpl
from meshcni_hooks.ruleargs import destination_args, parse_interfaces
from meshcni_hooks.types import (
    Claim,
    DropInOption,
    ExtensionParams,
    NetnsFacts,
    PluginConfig,
    PodInfo,
    RedirectSpec,
    Rule,
)

SOURCE = "kubevirt"
REROUTE_VIRTUAL_INTERFACES = "istio.io/reroute-virtual-interfaces"
KUBEVIRT_INTERFACES = "traffic.sidecar.istio.io/kubevirtInterfaces"  # deprecated spelling


@dataclass(frozen=True)
class VirtualInterfaces:
    """The pod's VM interfaces, in annotation order, de-duplicated."""

    names: tuple[str, ...] = ()


def parse(annotations: Mapping[str, str], settings: object = None) -> ExtensionParams | None:
    key = REROUTE_VIRTUAL_INTERFACES if REROUTE_VIRTUAL_INTERFACES in annotations else KUBEVIRT_INTERFACES
    if key not in annotations:
        return None
    names = parse_interfaces(key, annotations[key])
    return ExtensionParams(SOURCE, VirtualInterfaces(names), {"names": f"annotation {key}"})


def _head(family: int, *args: str) -> Rule:
    return Rule(family=family, table="nat", chain="PREROUTING", args=args, head=True, source=SOURCE)


def kubevirt_rules(spec: RedirectSpec, family: int) -> list[Rule]:
    """Head-inserted nat PREROUTING rules in Istio's insertion order (later ends up higher)."""
    params = spec.params(VirtualInterfaces)
    interfaces = params.names if params else ()
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
    def meshcni_register_claims(self) -> list[Claim]:
        return [
            Claim(
                extension=SOURCE,
                annotations=(REROUTE_VIRTUAL_INTERFACES, KUBEVIRT_INTERFACES),
                parse=parse,
                drop_in=(DropInOption(flag="-k", annotation=KUBEVIRT_INTERFACES, metavar="INTERFACES",
                                      help="virtual machine interfaces whose traffic is captured as outbound"),),
                description="VM interfaces whose inbound traffic is redirected as outbound",
            )
        ]

    @hookimpl
    def meshcni_extra_rules(
        self, pod: PodInfo, spec: RedirectSpec, config: PluginConfig, netns: NetnsFacts, family: int
    ) -> list[Rule]:
        return kubevirt_rules(spec, family)
