"""istioctl's ``--set PATH=VALUE`` flags.

A path is dot-separated; a dot inside a key is escaped with a backslash (``k8s\\.v1\\.cni\\.cncf\\.io/networks``)
or the key is double-quoted; ``key[N]`` addresses a list element (``N`` equal to the list's length
appends). Values stay strings here: the schema types them, so ``tag=1.10`` remains ``"1.10"``.
Matching quotes around a value are removed, as a shell would have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from meshcni_hooks.errors import MeshcniError

Segment = str | int
_INDEX = re.compile(r"^(?P<key>.*?)((\[\d+\])+)$")


class SetFlagError(MeshcniError):
    pass


@dataclass(frozen=True)
class SetFlag:
    path: tuple[Segment, ...]
    value: str
    text: str


def parse_set(text: str) -> SetFlag:
    path_text, sep, raw_value = _split_assignment(text)
    if not sep:
        raise SetFlagError(f"--set {text!r}: expected PATH=VALUE")
    path = split_path(path_text, text)
    return SetFlag(path=path, value=_unquote(raw_value), text=text)


def _scan(text: str) -> Iterator[tuple[int, str, bool]]:
    """Each character that is not quoting syntax, with whether it is literal (escaped or quoted).

    Ends with ``(len(text), "", False)``, or ``(len(text), "", True)`` when a quote or escape is left open.
    """
    quoted, escaped = False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
            yield i, ch, True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        else:
            yield i, ch, quoted
    yield len(text), "", quoted or escaped


def _split_assignment(text: str) -> tuple[str, str, str]:
    """Split at the first ``=`` that is outside quotes and not escaped."""
    for i, ch, literal in _scan(text):
        if ch == "=" and not literal:
            return text[:i], "=", text[i + 1:]
    return text, "", ""


def split_path(path_text: str, flag: str = "") -> tuple[Segment, ...]:
    keys: list[str] = []
    current: list[str] = []
    unterminated = False
    for _, ch, literal in _scan(path_text):
        if ch == "":
            unterminated = literal
        elif ch == "." and not literal:
            keys.append("".join(current))
            current = []
        else:
            current.append(ch)
    keys.append("".join(current))
    if unterminated or any(not k for k in keys):
        raise SetFlagError(f"--set {flag or path_text!r}: malformed path {path_text!r}")
    segments: list[Segment] = []
    for key in keys:
        match = _INDEX.match(key)
        if match and match.group("key"):
            segments.append(match.group("key"))
            segments.extend(int(i) for i in re.findall(r"\[(\d+)\]", key[len(match.group("key")):]))
        else:
            segments.append(key)
    return tuple(segments)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def assign(tree: dict[str, Any], flag: SetFlag) -> None:
    """Set the flag's value in ``tree``, creating maps on the way; list indexes must exist or append."""
    node: Any = tree
    for i, segment in enumerate(flag.path):
        last = i == len(flag.path) - 1
        following = None if last else flag.path[i + 1]
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(segment, int):
            if not isinstance(node, list):
                raise SetFlagError(f"--set {flag.text!r}: {_shown(flag.path[:i])} is not a list")
            if segment > len(node):
                raise SetFlagError(f"--set {flag.text!r}: index {segment} is past the end of "
                                   f"{_shown(flag.path[:i])} (length {len(node)})")
            if segment == len(node):
                node.append(flag.value if last else empty)
            elif last:
                node[segment] = flag.value
            node = node[segment]
        else:
            if not isinstance(node, dict):
                raise SetFlagError(f"--set {flag.text!r}: {_shown(flag.path[:i])} is not a map")
            if last:
                node[segment] = flag.value
            else:
                if not isinstance(node.get(segment), dict | list):
                    node[segment] = empty
                node = node[segment]


def _shown(path: tuple[Segment, ...]) -> str:
    return format_path(path) or "the root"


def format_path(path: tuple[Segment, ...]) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            shown = segment.replace(".", "\\.")
            out += f".{shown}" if out else shown
    return out
