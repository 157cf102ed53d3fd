"""How the kernel lists a transaction's tables, to compare a pod's live tables with (CHECK).

nftables lists rules as it decompiles them from the kernel (implicit dependencies dropped,
prefixes folded), so the expected listing is obtained the same way: the transaction is loaded
into a throwaway network namespace that only a helper thread enters (``unshare(CLONE_NEWNET)`` on
that thread; the namespace goes away with it) and listed there. Results are cached per
transaction text: pods with the same annotations share one.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from collections import OrderedDict
from typing import Any

from meshcni_backend_nftables.layout import FAMILY, OUR_TABLES
from meshcni_backend_nftables.library import Session
from meshcni_hooks.errors import ApplyError

CLONE_NEWNET = 0x40000000
CACHE_SIZE = 32
_libc = ctypes.CDLL(None, use_errno=True)
_cache: OrderedDict[str, list[str]] = OrderedDict()
_cache_lock = threading.Lock()


def ours(listing: list[dict[str, Any]]) -> list[str]:
    """Our tables' objects in listing order, without handles, as comparable JSON lines."""
    out = []
    for item in listing:
        kind, body = next(iter(item.items()))
        if kind not in ("table", "chain", "rule"):
            continue
        table = body.get("name") if kind == "table" else body.get("table")
        if body.get("family") != FAMILY or table not in OUR_TABLES:
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        out.append(json.dumps({kind: body}, sort_keys=True))
    return out


def expected_listing(commands: list[dict[str, Any]]) -> list[str]:
    key = json.dumps(commands, sort_keys=True)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return list(_cache[key])
    result: dict[str, Any] = {}

    def load_in_scratch_netns() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise ApplyError(f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
            session = Session()
            session.run(commands)
            result["listing"] = ours(session.list({"ruleset": None}))
        except ApplyError as exc:
            result["error"] = exc

    helper = threading.Thread(target=load_in_scratch_netns, name="nft-canonical")
    helper.start()
    helper.join()
    if "error" in result:
        raise result["error"]
    with _cache_lock:
        _cache[key] = result["listing"]
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return list(result["listing"])


def differences(expected: list[str], actual: list[str]) -> list[str]:
    """What of ``expected`` the live listing lacks or has differently, per table and chain."""

    def grouped(lines: list[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for line in lines:
            kind, body = next(iter(json.loads(line).items()))
            where = body["name"] if kind == "table" else f"{body['table']} {body.get('chain', body.get('name'))}"
            groups.setdefault(f"{kind} {where}", []).append(line)
        return groups

    want, have = grouped(expected), grouped(actual)
    problems = []
    for where, lines in want.items():
        if where not in have:
            problems.append(f"{FAMILY} {where} is missing")
        elif have[where] != lines:
            problems.append(f"{FAMILY} {where} differs: expected {len(lines)} entries, found {len(have[where])}")
    for where in have.keys() - want.keys():
        problems.append(f"{FAMILY} {where} is not in the plan")
    return problems
