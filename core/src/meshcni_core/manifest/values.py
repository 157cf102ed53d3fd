"""Resolve the layers istioctl's way: defaults, then each ``-f`` IstioOperator file, then each ``--set``.

Maps merge key by key; lists and scalars are replaced; later layers win. The result is validated
as a whole, and every problem is reported at once, each naming its path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from marshmallow import Schema, ValidationError

from meshcni_core.builtin.dns_capture import go_bool
from meshcni_core.manifest.aliases import canonical, known_shorthands
from meshcni_core.manifest.backend_values import backend_extensions, native_nftables
from meshcni_core.manifest.image import image_reference
from meshcni_core.manifest.schema import CNI_COMPONENT, CNI_VALUES
from meshcni_core.manifest.setpath import SetFlag, assign, format_path, parse_set
from meshcni_core.schemas.problems import problems as named_problems
from meshcni_core.schemas.problems import suggestion
from meshcni_hooks.errors import MeshcniError

OPERATOR_API_VERSIONS = ("install.istio.io/v1alpha1",)
DEFAULT_HUB = "ghcr.io/meshcni"
DEFAULT_NAMESPACE = "istio-system"
# IstioOperator spec keys that configure other Istio components or istioctl itself: accepted, reported.
# Read by meshcni too, so not "meant for" anyone else: image fallbacks, the nftables switch.
USED_GLOBALS = ("values.global.hub", "values.global.tag", "values.global.nativeNftables")
OTHER_SPEC_KEYS = ("profile", "installPackagePath", "revision", "meshConfig", "addonComponents", "unvalidatedValues")


class ValuesError(MeshcniError):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid values:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class ResolvedValues:
    enabled: bool
    namespace: str
    cni: dict[str, Any]  # values.cni, normalised, Istio's key names
    image: str
    repair_image: str
    elsewhere: tuple[str, ...]  # values for other Istio components: "path: value (meant for ...)"
    dns_capture: bool = False  # meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE (netconf dns_capture)
    shorthands: tuple[str, ...] = ()  # each seed shorthand --set used, with its canonical path (aliases.py)
    native_nftables: bool = False  # values.global.nativeNftables (netconf native_nftables)

    def as_operator_spec(self) -> dict[str, Any]:
        return {"components": {"cni": {"enabled": self.enabled, "namespace": self.namespace}},
                "values": {"cni": copy.deepcopy(self.cni)}}


def default_spec() -> dict[str, Any]:
    return {"components": {"cni": CNI_COMPONENT.load({})}, "values": {"cni": CNI_VALUES.load({})}}


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def load_operator_file(path: str | Path) -> dict[str, Any]:
    """The ``spec`` of an IstioOperator file, checked for its apiVersion and kind."""
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except OSError as exc:
        raise MeshcniError(f"-f {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MeshcniError(f"-f {path}: not valid YAML: {exc}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise MeshcniError(f"-f {path}: expected one IstioOperator document, found {len(documents)} documents")
    doc = documents[0]
    problems = []
    if doc.get("apiVersion") not in OPERATOR_API_VERSIONS:
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not one of {', '.join(OPERATOR_API_VERSIONS)}")
    if doc.get("kind") != "IstioOperator":
        problems.append(f"kind {doc.get('kind')!r} is not IstioOperator")
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec"})
    problems.extend(f"unknown top-level key {k!r}{suggestion(k, ['apiVersion', 'kind', 'metadata', 'spec'])}"
                    for k in extra)
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        problems.append(f"spec must be a map, got {spec!r}")
    if problems:
        raise MeshcniError(f"-f {path}: " + "; ".join(problems))
    return spec


def resolve(files: Sequence[str | Path] = (), sets: Sequence[str] = ()) -> ResolvedValues:
    """Layer and validate; when the layers name a platform, its defaults go right above meshcni's."""
    overlays = [load_operator_file(path) for path in files]
    flags, shorthands = canonical([parse_set(text) for text in sets])
    spec = _layered(default_spec(), overlays, flags)
    platform = _platform_name(_nested(spec, "values", "cni").get("platform"))
    if platform:  # an invalid name is reported by validate()
        from meshcni_core.platforms import load_platform

        base = default_spec()
        merge(base, dict(load_platform(platform)[1].defaults))
        spec = _layered(base, overlays, flags)
    return replace(validate(spec), shorthands=tuple(shorthands))


def _platform_name(value: Any) -> str:
    """The valid platform name ``value``, else ""."""
    try:
        return str(CNI_VALUES.fields["platform"].deserialize(value))
    except ValidationError:
        return ""


def _nested(tree: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        child = tree.get(key)
        tree = child if isinstance(child, dict) else {}
    return tree


def _layered(base: dict[str, Any], overlays: Sequence[dict[str, Any]], flags: Sequence[SetFlag]) -> dict[str, Any]:
    spec = base
    for overlay in overlays:
        merge(spec, overlay)
    for flag in flags:
        assign(spec, flag)
    return spec


def validate(spec: dict[str, Any]) -> ResolvedValues:
    problems: list[str] = []
    elsewhere: list[str] = []
    known_spec = ("components", "values", "hub", "tag", *OTHER_SPEC_KEYS)
    for key in sorted(set(spec) - set(known_spec)):
        problems.append(f"{key}: unknown IstioOperator key{suggestion(key, [*known_spec, *known_shorthands()])}")
    for key in OTHER_SPEC_KEYS:
        if key in spec:
            elsewhere.append(f"{key}: {spec[key]!r} (an istioctl setting; meshcni renders only the CNI)")

    components = _map(spec, "components", problems)
    for key in sorted(set(components) - {"cni"}):
        elsewhere.extend(f"{path}: {value!r} (meant for Istio's {key} component)"
                         for path, value in _leaves(("components", key), components[key]))
    component = _loaded(CNI_COMPONENT, _map(components, "cni", problems, "components."), "components.cni",
                        problems, lambda path, hint: f"{path}: not supported by meshcni{hint}")

    values = _map(spec, "values", problems)
    for key in sorted(set(values) - {"cni"}):
        elsewhere.extend(f"{path}: {value!r} (meant for Istio's {key}, not the CNI)"
                         for path, value in _leaves(("values", key), values[key]) if path not in USED_GLOBALS)
    cni = _loaded(CNI_VALUES, _map(values, "cni", problems, "values."), "values.cni", problems)
    dns_capture = mesh_dns_capture(spec, problems)
    nftables = native_nftables(spec, problems)
    if not problems:
        cni["extensions"] = [*cni["extensions"], *backend_extensions(cni, nftables, problems)]
    if problems:
        raise ValuesError(problems)

    global_values: dict[str, Any] = values["global"] if isinstance(values.get("global"), dict) else {}
    hub = cni["hub"] or spec.get("hub") or global_values.get("hub") or DEFAULT_HUB
    tag = cni["tag"] or spec.get("tag") or global_values.get("tag") or meshcni_version()
    repair = cni["repair"]
    try:
        image = image_reference(hub, cni["image"], tag)
        repair_image = image if not (repair["hub"] or repair["tag"]) else \
            image_reference(repair["hub"] or hub, cni["image"], repair["tag"] or tag)
    except ValueError as exc:
        raise ValuesError([f"values.cni.image: {exc}"]) from None
    return ResolvedValues(enabled=component["enabled"], namespace=component["namespace"], cni=cni, image=image,
                          repair_image=repair_image, elsewhere=tuple(elsewhere), dns_capture=dns_capture,
                          native_nftables=nftables)


MESH_DNS_CAPTURE = ("meshConfig", "defaultConfig", "proxyMetadata", "ISTIO_META_DNS_CAPTURE")


def mesh_dns_capture(spec: dict[str, Any], problems: list[str]) -> bool:
    """The mesh-wide DNS capture default, which the plugin cannot read from the mesh config: a
    string in Go's ParseBool spellings, as the injector and the proxy read it."""
    node: Any = spec
    for key in MESH_DNS_CAPTURE:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if isinstance(node, bool):  # unquoted in YAML: unambiguous
        return node
    parsed = go_bool(node) if isinstance(node, str) else None
    if parsed is None:
        problems.append(f"{'.'.join(MESH_DNS_CAPTURE)}: {node!r} is not \"true\" or \"false\" "
                        "(proxyMetadata values are strings: quote them)")
        return False
    return parsed


def _loaded(schema: Schema, given: dict[str, Any], prefix: str, problems: list[str],
            unknown: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """``given`` loaded by ``schema``; its problems, each named by its path, added to ``problems``."""
    try:
        loaded: dict[str, Any] = schema.load(given)
        return loaded
    except ValidationError as exc:
        problems.extend(named_problems(exc.messages, schema, prefix, unknown))
        return {}


def _leaves(path: tuple[str, ...], value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, child in value.items() for leaf in _leaves((*path, str(key)), child)]
    return [(format_path(path), value)]


def _map(parent: dict[str, Any], key: str, problems: list[str], prefix: str = "") -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{prefix}{key}: expected a map, got {value!r}")
        return {}
    return value


def meshcni_version() -> str:
    from importlib.metadata import version

    return version("meshcni-core")
