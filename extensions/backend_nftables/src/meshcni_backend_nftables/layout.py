"""Where each iptables table and chain of a rule plan lives in nftables: today's Istio's layout.

Istio (tools/istio-nftables) keeps its rules in ``inet`` tables named ``istio-proxy-<table>``,
one per iptables table, with base chains named after the iptables built-in chains in lower case
at the iptables priorities, and its own chains renamed ``ISTIO_OUTPUT`` -> ``istio-output``.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcni_hooks.errors import RuleBuildError

FAMILY = "inet"  # one table per iptables table, holding both address families
OWNED_CHAIN_PREFIX = "ISTIO_"

TABLES = {
    "nat": "istio-proxy-nat",
    "mangle": "istio-proxy-mangle",
    "raw": "istio-proxy-raw",
    "filter": "istio-proxy-filter",
}
OUR_TABLES = tuple(TABLES.values())


@dataclass(frozen=True)
class BaseChain:
    type: str
    hook: str
    priority: int


# The iptables built-in chains at the priorities iptables-nft registers them with (raw -300,
# mangle -150, dstnat -100, filter 0, srcnat 100); Istio uses type filter for mangle's too.
_NAT_PRIORITY = {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100}
BASE_CHAINS: dict[tuple[str, str], BaseChain] = {
    **{("nat", c): BaseChain("nat", c.lower(), p) for c, p in _NAT_PRIORITY.items()},
    **{("mangle", c): BaseChain("filter", c.lower(), -150)
       for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")},
    **{("raw", c): BaseChain("filter", c.lower(), -300) for c in ("PREROUTING", "OUTPUT")},
    **{("filter", c): BaseChain("filter", c.lower(), 0) for c in ("INPUT", "FORWARD", "OUTPUT")},
}


def table_name(iptables_table: str) -> str:
    try:
        return TABLES[iptables_table]
    except KeyError:
        raise RuleBuildError(
            f"nftables backend: iptables table {iptables_table!r} has no nftables counterpart "
            f"(known: {', '.join(TABLES)})"
        ) from None


def chain_name(iptables_table: str, chain: str) -> str:
    """``PREROUTING`` -> ``prerouting``; ``ISTIO_IN_REDIRECT`` -> ``istio-in-redirect``."""
    if (iptables_table, chain) in BASE_CHAINS:
        return BASE_CHAINS[(iptables_table, chain)].hook
    if chain.startswith(OWNED_CHAIN_PREFIX) and chain.replace("_", "").isalnum():
        return chain.lower().replace("_", "-")
    raise RuleBuildError(
        f"nftables backend: chain {chain!r} of table {iptables_table!r} is neither a built-in chain "
        f"nor one of ours ({OWNED_CHAIN_PREFIX}*)"
    )


def is_base_chain(iptables_table: str, chain: str) -> bool:
    return (iptables_table, chain) in BASE_CHAINS
