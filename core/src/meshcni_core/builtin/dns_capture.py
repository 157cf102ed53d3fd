"""Whether a pod's DNS is captured: ``ISTIO_META_DNS_CAPTURE`` wherever today's Istio puts it.

Today's plugin reads it from the ``istio-proxy`` container's env, which the injector fills from
the proxy config: ``meshConfig.defaultConfig.proxyMetadata`` overridden by the pod's
``proxy.istio.io/config`` annotation (the proxy's agent applies the same precedence when it
decides to listen on 15053). The runtime's annotations carry no env, so meshcni decides, first
match wins:

1. the annotation ``proxy.istio.io/config``, key ``proxyMetadata.ISTIO_META_DNS_CAPTURE``;
2. the ``istio-proxy`` container's env ``ISTIO_META_DNS_CAPTURE`` (when the spec is known);
3. the netconf's ``dns_capture``, the mesh-wide default ``meshcni manifest`` copies from
   ``meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE``;
4. off.

A value that is not one of Go's ``strconv.ParseBool`` spellings, and an annotation that is not a
YAML/JSON mapping with string ``proxyMetadata`` values, fail the ADD (today's Istio logs a warning
and leaves DNS alone). PyYAML is imported only when the annotation is present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from meshcni_core.builtin.sidecar import proxy_container
from meshcni_core.schemas.boolean import FALSE_SPELLINGS, TRUE_SPELLINGS
from meshcni_hooks.errors import AnnotationError, MeshcniError
from meshcni_hooks.types import PluginConfig, PodInfo

PROXY_CONFIG = "proxy.istio.io/config"
DNS_CAPTURE = "ISTIO_META_DNS_CAPTURE"


def go_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``: True, False, or None for anything else."""
    if text in TRUE_SPELLINGS:
        return True
    if text in FALSE_SPELLINGS:
        return False
    return None


def proxy_metadata(value: str) -> Mapping[str, str]:
    """``proxyMetadata`` of a ``proxy.istio.io/config`` value (YAML or JSON), checked for type."""
    import yaml  # only pods carrying the annotation pay for it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(value, Loader=loader)  # CSafeLoader/SafeLoader: plain data only
    except (yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnnotationError(PROXY_CONFIG, value, f"not YAML or JSON: {reason}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise AnnotationError(PROXY_CONFIG, value, f"expected a mapping of ProxyConfig fields, got {_kind(document)}")
    metadata = document.get("proxyMetadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise AnnotationError(PROXY_CONFIG, value, f"proxyMetadata must be a mapping, got {_kind(metadata)}")
    for key, item in metadata.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise AnnotationError(
                PROXY_CONFIG, value,
                f"proxyMetadata entries must be strings (quote them: {key}: \"{item}\"), got {_kind(item)} for {key!r}",
            )
    return metadata


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)


def dns_capture_of(pod: PodInfo, config: PluginConfig) -> tuple[bool, str]:
    """Whether the pod's DNS is captured, and where that came from (for explain and the log)."""
    if PROXY_CONFIG in pod.annotations:
        raw = pod.annotations[PROXY_CONFIG]
        metadata = proxy_metadata(raw)
        if DNS_CAPTURE in metadata:
            return _parsed(metadata[DNS_CAPTURE], lambda why: AnnotationError(PROXY_CONFIG, raw, why)), (
                f"annotation {PROXY_CONFIG} (proxyMetadata.{DNS_CAPTURE})"
            )
    proxy = proxy_container(pod)
    if proxy is not None and proxy.env_dns_capture is not None:
        where = f"container {proxy.name}'s env {DNS_CAPTURE}"
        return _parsed(proxy.env_dns_capture, lambda why: MeshcniError(f"{where}: {why}", code=103)), where
    if config.dns_capture:
        return True, "netconf dns_capture (the mesh-wide default)"
    return False, "default"


def _parsed(text: str, error: Callable[[str], MeshcniError]) -> bool:
    parsed = go_bool(text)
    if parsed is None:
        raise error(f"{DNS_CAPTURE}={text!r} is not true or false (Go's ParseBool: 1 t T TRUE true True, "
                    "0 f F FALSE false False)")
    return parsed
