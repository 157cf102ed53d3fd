"""Never both flavours in one pod: find meshcni's or Istio's iptables rules (ISTIO_* chains) in the
current netns, in iptables-nft's tables (seen through nftables) or in legacy x_tables."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from meshcni_backend_nftables.library import Session

IPTABLES_NFT_FAMILIES = ("ip", "ip6")
IPTABLES_TABLES = ("nat", "mangle", "raw", "filter")
LEGACY_NAMES = {4: "/proc/thread-self/net/ip_tables_names", 6: "/proc/thread-self/net/ip6_tables_names"}
LEGACY_SAVE = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}
MARKER = "ISTIO_"


def iptables_rules_here(session: Session, tables: list[dict[str, Any]]) -> list[str]:
    """Where this netns holds ISTIO_* iptables chains; ``tables`` is its ``list tables`` output."""
    found: list[str] = []
    if any(t["table"]["family"] in IPTABLES_NFT_FAMILIES and t["table"]["name"] in IPTABLES_TABLES
           for t in tables if "table" in t):
        for item in session.list({"chains": None}):
            chain = item.get("chain")
            if (chain and chain["family"] in IPTABLES_NFT_FAMILIES and chain["table"] in IPTABLES_TABLES
                    and chain["name"].startswith(MARKER)):
                found.append(f"iptables-nft {chain['family']} {chain['table']} chain {chain['name']}")
    for family, names_file in LEGACY_NAMES.items():
        found += _legacy(family, names_file)
    return found


def _legacy(family: int, names_file: str) -> list[str]:
    try:
        with open(names_file) as f:
            if not f.read().strip():
                return []
    except FileNotFoundError:
        return []
    save = shutil.which(LEGACY_SAVE[family])
    if save is None:
        return [f"legacy ip{'6' if family == 6 else ''}tables tables that cannot be inspected "
                f"({LEGACY_SAVE[family]} is not installed)"]
    proc = subprocess.run([save], capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"{LEGACY_SAVE[family]} failed: {proc.stderr.strip()}"]
    return [f"iptables-legacy IPv{family} chain {line[1:].split()[0]}"
            for line in proc.stdout.splitlines() if line.startswith(":" + MARKER)]
