"""marshmallow fields for meshcni's configuration edges.

Each field checks one kind of value strictly and says what it expected and what it got, so a
problem reads well after its path ("values.cni.chained: expected true or false, got 'ture'").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from marshmallow import ValidationError, fields

from meshcni_core.install.files import plain_name_problem
from meshcni_core.schemas.boolean import parse_bool

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class Checked(fields.Field):
    """A field whose value ``check`` normalises, raising ValueError with the reason."""

    check: Callable[[Any], Any] = staticmethod(lambda value: value)
    default_error_messages = {"null": "expected a value, got null"}

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        try:
            return self.check(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


def text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        hint = "; quote it so YAML keeps it as text" if isinstance(value, int | float) else ""
        raise ValueError(f"expected a string, got {value!r}{hint}")
    return value


class Text(Checked):
    check = staticmethod(text)


class Boolean(Checked):
    check = staticmethod(parse_bool)


class Choice(Checked):
    """One of ``choices``; ``folded`` compares (and returns) the lower-cased text."""

    def __init__(self, choices: Sequence[str], *, folded: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices, self.folded = tuple(choices), folded

    def check(self, value: Any) -> str:
        given = text(value)
        wanted = given.lower() if self.folded else given
        if wanted not in self.choices:
            raise ValueError(f"{given!r} is not one of {', '.join(self.choices)}")
        return wanted


class OptionalText(Checked):
    """Text that ``check_text`` accepts; the empty text too, meaning "not set", when ``empty_ok``."""

    def __init__(self, *, empty_ok: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.empty_ok = empty_ok

    def check(self, value: Any) -> str:
        given = text(value)
        return given if given == "" and self.empty_ok else self.check_text(given)

    def check_text(self, given: str) -> str:
        raise NotImplementedError


class Matching(OptionalText):
    """Text that matches ``pattern``, else "'x' is not <what>"."""

    def __init__(self, pattern: re.Pattern[str], what: str, *, max_length: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pattern, self.what, self.max_length = pattern, what, max_length

    def check_text(self, given: str) -> str:
        if (self.max_length and len(given) > self.max_length) or not self.pattern.match(given):
            raise ValueError(f"{given!r} is not {self.what}")
        return given


class AbsolutePath(Checked):
    @staticmethod
    def check(value: Any) -> str:
        given = text(value)
        if not given.startswith("/") or "\0" in given:
            raise ValueError(f"expected an absolute host path, got {given!r}")
        return given.rstrip("/") or "/"


class PlainFileName(OptionalText):
    """A file name inside one directory: no '/', no '..', not hidden, ending in one of ``suffixes``
    when given."""

    def __init__(self, suffixes: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suffixes = tuple(suffixes)

    def check_text(self, given: str) -> str:
        problem = plain_name_problem(given)
        if not problem and self.suffixes and not given.endswith(self.suffixes):
            problem = f"it does not end in {', '.join(self.suffixes)}"
        if problem:
            raise ValueError(f"{given!r} is refused: {problem}")
        return given


class LabelKey(Checked):
    @staticmethod
    def check(value: Any) -> str:
        given = text(value)
        prefix, _, name = given.rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not _LABEL_NAME.match(name):
            raise ValueError(f"{given!r} is not a valid label key")
        return given


class LabelValue(Checked):
    @staticmethod
    def check(value: Any) -> str:
        given = str(value).lower() if isinstance(value, bool) else text(value)  # YAML's true is the text "true"
        if len(given) > 63 or not _LABEL_VALUE.match(given):
            raise ValueError(f"{given!r} is not a valid label value")
        return given


class TextList(fields.List):
    """A list of strings; an item's problem is reported at its index."""

    def __init__(self, item: fields.Field | None = None, **kwargs: Any) -> None:
        super().__init__(item or Text(), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise ValidationError(f"expected a list of strings, got {value!r}")
        return super()._deserialize(value, attr, data, **kwargs)


class TextMap(Checked):
    """A map of strings (numbers read as their text, as the chart's quote did); null is the empty map."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def deserialize(self, value: Any, attr: str | None = None, data: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> Any:
        return {} if value is None else super().deserialize(value, attr, data, **kwargs)

    @staticmethod
    def check(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a map of strings, got {value!r}")
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError(f"key {key!r}: expected a string, got {item!r}")
            out[str(key)] = item if isinstance(item, str) else str(item)
        return out


class AnyMap(TextMap):
    """A map of anything, keyed by text; null is the empty map."""

    @staticmethod
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a map, got {value!r}")
        return {str(k): v for k, v in value.items()}


class Integer(Checked):
    """A whole number, given as a number or as its decimal text (an environment variable's)."""

    def __init__(self, *, minimum: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"expected a number of at least {self.minimum}, got {value!r}")
        return number


class PositiveSeconds(Checked):
    @staticmethod
    def check(value: Any) -> float:
        try:
            number = float(text(value))
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
        if not number > 0:
            raise ValueError(f"expected a positive number of seconds, got {value!r}")
        return number


class FileMode(Checked):
    """An octal file mode as text ("600"), between 000 and 777."""

    @staticmethod
    def check(value: Any) -> int:
        given = text(value)
        try:
            mode = int(given, 8)
        except ValueError:
            raise ValueError(f"{given!r} is not an octal file mode") from None
        if mode & ~0o777 or mode < 0:
            raise ValueError(f"{given!r} is not a file mode between 000 and 777")
        return mode


class CommaSeparated(Checked):
    """Comma-separated text as a tuple of its non-empty, stripped items; ``absolute`` requires
    each to be an absolute path."""

    def __init__(self, *, absolute: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.absolute = absolute

    def check(self, value: Any) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text(value).split(",") if item.strip())
        relative = [item for item in items if not item.startswith("/")]
        if self.absolute and relative:
            raise ValueError(f"every directory must be absolute, got {', '.join(map(repr, relative))}")
        return items
