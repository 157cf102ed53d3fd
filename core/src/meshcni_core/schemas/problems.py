"""marshmallow's error tree as meshcni reports it: one line per problem, each naming its path.

At each level, unknown keys come first (with a did-you-mean when a known key is close), then the
known keys' problems in the order the schema declares them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from marshmallow import Schema, fields

UNKNOWN_FIELD = "Unknown field."


def suggestion(key: str, known: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the known name ``key`` was probably meant to be, else ""."""
    names = list(known)
    folded = {n.lower().replace("_", "").replace("-", ""): n for n in names}
    match = folded.get(key.lower().replace("_", "").replace("-", ""))
    if match is None:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f" (did you mean {match!r}?)" if match else ""


def join(prefix: str, key: Any) -> str:
    """``prefix.key``; ``prefix[key]`` for a list index; dots inside a key escaped as ``--set`` wants."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    shown = str(key).replace(".", "\\.")
    return f"{prefix}.{shown}" if prefix else shown


def problems(messages: Any, schema: Schema | None, prefix: str = "",
             unknown: Callable[[str, str], str] | None = None) -> list[str]:
    """Flatten ``ValidationError.messages`` of ``schema`` loaded at ``prefix``.

    ``unknown(path, hint)`` words an unknown key's problem (default "path: unknown option<hint>")."""
    word = unknown or (lambda path, hint: f"{path}: unknown option{hint}")
    if not isinstance(messages, Mapping):
        return [f"{prefix}: {m}" if prefix else str(m) for m in _as_list(messages)]
    declared = _declared(schema)
    out: list[str] = []
    strangers = [k for k in messages if k not in declared and _as_list(messages[k]) == [UNKNOWN_FIELD]]
    for key in sorted(strangers, key=str):
        out.append(word(join(prefix, key), suggestion(str(key), declared)))
    order = {name: i for i, name in enumerate(declared)}
    rest = sorted((k for k in messages if k not in strangers), key=lambda k: (order.get(k, len(order)), str(k)))
    for key in rest:
        path = prefix if key == "_schema" else join(prefix, key)
        out.extend(problems(messages[key], _nested_schema(declared.get(key)), path, unknown))
    return out


def _declared(schema: Schema | None) -> dict[str, fields.Field]:
    if schema is None:
        return {}
    return {field.data_key or name: field for name, field in schema.fields.items()}


def _nested_schema(field: fields.Field | None) -> Schema | None:
    if isinstance(field, fields.Nested):
        nested = field.schema
        return nested if isinstance(nested, Schema) else None
    return None


def _as_list(messages: Any) -> list[Any]:
    return list(messages) if isinstance(messages, list | tuple) else [messages]
