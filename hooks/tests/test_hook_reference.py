"""Every hook documents when it runs, what its result and its exceptions mean, with an example,
and docs/extensions.md carries exactly that reference."""

from pathlib import Path

import pytest

from meshcni_hooks.reference import BEGIN, END, PARTS, hook_docs, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "extensions.md"


def test_every_hook_spec_is_found():
    names = {d.name for d in hook_docs()}
    assert {"meshcni_load_config", "meshcni_pod_verdict", "meshcni_register_claims", "meshcni_teardown"} <= names
    assert len(names) == 13


@pytest.mark.parametrize("doc", hook_docs(), ids=lambda d: d.name)
def test_each_hook_has_every_part(doc):
    missing = [part for part in PARTS if not doc.parts[part]]
    assert not missing, f"{doc.name} lacks {', '.join(missing)} in its docstring"
    assert doc.name in doc.parts["Example"], "the example implements the hook it documents"


def test_a_hook_without_a_part_is_reported():
    from meshcni_hooks.reference import _parts

    parts = _parts("When: always.\nResult: ignored.\nExample::\n\n    pass")
    assert parts["Errors"] == "" and parts["When"] == "always."


def test_docs_extensions_md_carries_the_generated_reference():
    text = DOC.read_text()
    assert BEGIN in text and END in text, "docs/extensions.md lacks the hook-reference markers"
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    assert current == render_markdown(), "regenerate it: python -m meshcni_hooks.reference"
