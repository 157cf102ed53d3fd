"""Extensions own the annotations and settings they claim; the core warns about Istio annotations
nobody reads and refuses settings nobody claims."""

from dataclasses import dataclass

import pytest

from meshcni_core import explain
from meshcni_hooks import hookimpl
from meshcni_hooks.errors import ConfigError, ExtensionError, SettingError
from meshcni_hooks.types import Claim, ExtensionParams
from meshcni_testing.harness import build_harness, make_pod

KEY = "acme.istio.io/colour"


@dataclass(frozen=True)
class Colour:
    name: str


@dataclass(frozen=True)
class Palette:
    default: str = "blue"


def parse_settings(raw):
    if set(raw) - {"default"}:
        raise SettingError("default", raw, "only 'default' is known")
    return Palette(**raw)


def parse(annotations, settings):
    value = annotations.get(KEY, settings.default)
    return ExtensionParams("acme-colour", Colour(value), {"name": f"annotation {KEY}" if KEY in annotations else "default"})


class ColourClaim:
    seen: list = []

    @hookimpl
    def meshcni_register_claims(self):
        return [Claim(extension="acme-colour", annotations=(KEY,), parse=parse, parse_settings=parse_settings)]

    @hookimpl
    def meshcni_extra_rules(self, spec, family):
        ColourClaim.seen.append(spec.params(Colour))
        return []


def test_claimed_annotation_reaches_the_rule_hooks_as_the_extensions_type():
    ColourClaim.seen.clear()
    decision = build_harness(ColourClaim()).add(make_pod(annotations={KEY: "red"}))
    assert decision.spec.params(Colour) == Colour("red") and ColourClaim.seen == [Colour("red")]
    assert decision.warnings == []


def test_settings_are_validated_once_into_the_extensions_type():
    harness = build_harness(ColourClaim(), extension_settings={"acme-colour": {"default": "green"}})
    assert harness.pipeline.config.settings("acme-colour", Palette) == Palette("green")
    assert harness.add(make_pod()).spec.params(Colour) == Colour("green")
    with pytest.raises(SettingError, match="extension_settings.acme-colour.default"):
        build_harness(ColourClaim(), extension_settings={"acme-colour": {"shade": 1}})


def test_a_settings_block_nobody_claims_is_a_config_error():
    with pytest.raises(ConfigError, match="extension_settings.acme-typo: no enabled extension reads"):
        build_harness(extension_settings={"acme-typo": {}})


def test_an_istio_annotation_nobody_reads_is_a_warning_that_explain_shows():
    pod = make_pod(annotations={"traffic.sidecar.istio.io/includeOutbondIPRanges": "10.0.0.0/8",
                                "sidecar.istio.io/proxyCPU": "100m", "example.com/other": "x"})
    harness = build_harness()
    decision = harness.add(pod)
    assert decision.redirect and len(decision.warnings) == 1
    assert "traffic.sidecar.istio.io/includeOutbondIPRanges" in decision.warnings[0]
    report = explain.explain(pod, harness.pipeline)
    assert any("includeOutbondIPRanges is not read" in w for w in report["warnings"])
    assert "WARNING: annotation traffic.sidecar.istio.io/includeOutbondIPRanges" in explain.render_text(report)


def test_an_annotation_claimed_twice_names_both():
    class Again(ColourClaim):
        @hookimpl
        def meshcni_register_claims(self):
            return [Claim(extension="acme-other", annotations=(KEY,), parse=parse)]

    with pytest.raises(ExtensionError, match=f"annotation {KEY} is claimed twice: by acme-colour and by acme-other"):
        build_harness(ColourClaim(), Again())


def test_explain_shows_an_extensions_parameters_with_their_origin():
    pod = make_pod(annotations={KEY: "red"})
    report = explain.explain(pod, build_harness(ColourClaim()).pipeline)
    assert report["parameters"]["acme-colour.name"] == {
        "value": "red", "from": f"annotation {KEY} (extension acme-colour)",
    }
