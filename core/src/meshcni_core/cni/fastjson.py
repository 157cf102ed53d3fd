"""json.loads/json.dumps for the plugin's fast path, without importing ``re``.

``import json`` costs ~6 ms of start-up here, nearly all of it ``re`` (json.decoder compiles
regular expressions at import). This calls CPython's ``_json`` accelerator directly - the same
C scanner and encoder ``json`` itself uses - and falls back to ``json`` where ``_json`` is
missing. Results are identical to ``json`` (a property test compares them).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"

try:
    import _json

    class _DecoderSettings:
        """The attributes ``_json.make_scanner`` reads from a JSONDecoder."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int

        @staticmethod
        def parse_constant(name: str) -> float:
            return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]

    _scan = _json.make_scanner(_DecoderSettings())  # type: ignore[arg-type]  # any object with the attributes

    def _exact_error(text: str) -> Any:
        """Malformed input: let json raise its exact error. (CPython 3.11's scanner can only
        raise JSONDecodeError once json.decoder is imported; otherwise it fails with a
        SystemError - so the slow import happens here, on the error path only.)"""
        import json

        return json.loads(text)

    def loads(data: str | bytes) -> Any:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        start, end = 0, len(text)
        while start < end and text[start] in _WHITESPACE:
            start += 1
        try:
            obj, pos = _scan(text, start)
        except (StopIteration, SystemError, ValueError):
            return _exact_error(text)
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos != end:
            return _exact_error(text)
        return obj

    def _unserialisable(obj: object) -> None:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    _encode = _json.make_encoder(
        None, _unserialisable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def dumps(obj: Any) -> str:
        return "".join(_encode(obj, 0))

except (ImportError, AttributeError, TypeError):  # another Python implementation
    from json import dumps, loads  # type: ignore[assignment]  # noqa: F401
