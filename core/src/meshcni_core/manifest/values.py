"""Resolve the layers istioctl's way: defaults, then each ``-f`` IstioOperator file, then each ``--set``.

Maps merge key by key; lists and scalars are replaced; later layers win. The result is validated
as a whole, and every problem is reported at once, each naming its path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcni_core.manifest.image import image_reference
from meshcni_core.manifest.schema import CNI_OPTIONS, Option, boolean, defaults, namespace_name, suggestion
from meshcni_core.manifest.setpath import SetFlag, assign, format_path, parse_set
from meshcni_hooks.errors import MeshcniError

OPERATOR_API_VERSIONS = ("install.istio.io/v1alpha1",)
DEFAULT_HUB = "ghcr.io/meshcni"
DEFAULT_NAMESPACE = "istio-system"
CNI_COMPONENT_KEYS = {"enabled": "whether to render the CNI at all", "namespace": "namespace of its objects"}
# IstioOperator spec keys that configure other Istio components or istioctl itself: accepted, reported.
USED_GLOBALS = ("values.global.hub", "values.global.tag")  # image fallbacks, so not "meant for" anyone else
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

    def as_operator_spec(self) -> dict[str, Any]:
        return {"components": {"cni": {"enabled": self.enabled, "namespace": self.namespace}},
                "values": {"cni": copy.deepcopy(self.cni)}}


def default_spec() -> dict[str, Any]:
    return {"components": {"cni": {"enabled": True, "namespace": DEFAULT_NAMESPACE}},
            "values": {"cni": defaults(CNI_OPTIONS)}}


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
    flags: list[SetFlag] = [parse_set(text) for text in sets]
    spec = _layered(default_spec(), overlays, flags)
    platform = _nested(spec, "values", "cni").get("platform")
    if _is_valid(CNI_OPTIONS["platform"], platform) and platform:  # an invalid name is reported by validate()
        from meshcni_core.platforms import load_platform

        base = default_spec()
        merge(base, dict(load_platform(platform)[1].defaults))
        spec = _layered(base, overlays, flags)
    return validate(spec)


def _is_valid(option: Option, value: Any) -> bool:
    try:
        option.check(value)
    except ValueError:
        return False
    return True


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
        problems.append(f"{key}: unknown IstioOperator key{suggestion(key, known_spec)}")
    for key in OTHER_SPEC_KEYS:
        if key in spec:
            elsewhere.append(f"{key}: {spec[key]!r} (an istioctl setting; meshcni renders only the CNI)")

    components = _map(spec, "components", problems)
    cni_component = _map(components, "cni", problems, "components.")
    for key in sorted(set(cni_component) - set(CNI_COMPONENT_KEYS)):
        problems.append(f"components.cni.{key}: not supported by meshcni{suggestion(key, CNI_COMPONENT_KEYS)}")
    for key in sorted(set(components) - {"cni"}):
        elsewhere.extend(f"{path}: {value!r} (meant for Istio's {key} component)"
                         for path, value in _leaves(("components", key), components[key]))
    enabled = _checked(cni_component, "enabled", Option(boolean, True, ""),
                       "components.cni.", problems)
    namespace = _checked(cni_component, "namespace", Option(namespace_name, DEFAULT_NAMESPACE, ""),
                         "components.cni.", problems)

    values = _map(spec, "values", problems)
    for key in sorted(set(values) - {"cni"}):
        elsewhere.extend(f"{path}: {value!r} (meant for Istio's {key}, not the CNI)"
                         for path, value in _leaves(("values", key), values[key]) if path not in USED_GLOBALS)
    cni = _validate_options(_map(values, "cni", problems, "values."), CNI_OPTIONS, "values.cni.", problems)
    for name in sorted(set(cni.get("extensionSettings", {})) - set(cni.get("extensions", []))):
        problems.append(f"values.cni.extensionSettings.{name}: extension {name!r} is not in values.cni.extensions")
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
    return ResolvedValues(enabled=enabled, namespace=namespace, cni=cni, image=image,
                          repair_image=repair_image, elsewhere=tuple(elsewhere))


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


def _checked(parent: dict[str, Any], key: str, option: Option, prefix: str, problems: list[str]) -> Any:
    if key not in parent:
        return option.default
    try:
        return option.check(parent[key])
    except ValueError as exc:
        problems.append(f"{prefix}{key}: {exc}")
        return option.default


def _validate_options(given: dict[str, Any], options: dict[str, Option], prefix: str,
                      problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(given) - set(options), key=str):
        problems.append(f"{prefix}{key}: unknown option{suggestion(str(key), options)}")
    for name, option in options.items():
        if option.children:
            child = _map(given, name, problems, prefix)
            out[name] = _validate_options(child, option.children, f"{prefix}{name}.", problems)
        else:
            out[name] = _checked(given, name, option, prefix, problems)
    return out


def meshcni_version() -> str:
    from importlib.metadata import version

    return version("meshcni-core")
