"""The plugin's kubeconfig, made from the agent's service account.

Istio wrote ``https://[10.110.0.1]:443``: Go clients accept a bracketed IPv4 host, Python's URL
parser rejects it. Only IPv6 literals are bracketed here. The token is written into the file and
never logged; the file is rewritten when the token changes (bound tokens expire).
"""

from __future__ import annotations

import base64
import ipaddress
import json


def server_url(protocol: str, host: str, port: str) -> str:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"{protocol}://{host}:{port}"
    shown = f"[{literal}]" if literal.version == 6 else str(literal)
    return f"{protocol}://{shown}:{port}"


def render(server: str, token: str, ca_pem: bytes | None, skip_tls_verify: bool) -> bytes:
    """A kubeconfig (JSON, which every YAML parser reads) with one cluster, user and context."""
    cluster: dict[str, object] = {"server": server}
    if skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    else:
        if not ca_pem:
            raise ValueError("a CA certificate is required unless SKIP_TLS_VERIFY is true")
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "istio-cni", "user": {"token": token}}],
        "contexts": [{"name": "istio-cni-context", "context": {"cluster": "local", "user": "istio-cni"}}],
        "current-context": "istio-cni-context",
    }
    return (json.dumps(config, indent=2) + "\n").encode()
