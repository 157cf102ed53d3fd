"""fastjson must behave exactly like json for everything the plugin reads and writes."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcni_core.cni import fastjson

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(values)
def test_round_trips_like_json(value):
    text = json.dumps(value)
    assert fastjson.dumps(value) == text
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(f" \n{text}\t ".encode()) == value


@given(st.text(max_size=30))
def test_same_verdict_on_arbitrary_text(text):
    try:
        expected = json.loads(text)
    except ValueError as exc:
        with pytest.raises(ValueError) as info:
            fastjson.loads(text)
        assert str(info.value) == str(exc)
    else:
        got = fastjson.loads(text)
        assert got == expected or (isinstance(got, float) and math.isnan(got) and math.isnan(expected))


def test_unserialisable_values_are_type_errors():
    with pytest.raises(TypeError):
        fastjson.dumps({"a": object()})


def test_errors_without_json_imported_first():
    """CPython 3.11's scanner cannot raise its own error until json.decoder is imported."""
    import subprocess
    import sys

    code = "from meshcni_core.cni import fastjson\ntry:\n    fastjson.loads('{bad')\nexcept ValueError as e:\n    print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("JSONDecodeError Expecting property name")
