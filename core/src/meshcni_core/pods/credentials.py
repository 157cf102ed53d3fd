"""Load a kubeconfig whose path came from the CNI configuration, refusing credential plugins.

The plugin (in-process) and the node agent read the kubeconfig named by ``kubernetes.kubeconfig``
in our conf entry, and whoever can write the node's conf dir can name any file, or write one.
The kubernetes client would run a user's ``exec`` command or an ``auth-provider``'s ``cmd-path``
(as root, on the host), and send a ``tokenFile``'s content - any file on the node, e.g. another
pod's service-account token - to the server the kubeconfig names. install-cni writes the token
inline, so a kubeconfig using any of those is refused. The file is read once and the checked
content is what the client is built from, so it cannot be swapped between check and use.
"""

from __future__ import annotations

import os
from typing import Any

from meshcni_hooks.errors import PodLookupError

CREDENTIAL_PLUGINS = ("exec", "auth-provider", "tokenFile")


def credential_plugin_problem(config: Any) -> str:
    """Why a kubeconfig (parsed) must not be used by the plugin ("" when it may)."""
    if not isinstance(config, dict):
        return "it is not a kubeconfig (no mapping at the top)"
    for entry in config.get("users") or []:
        user = entry.get("user") if isinstance(entry, dict) else None
        for key in CREDENTIAL_PLUGINS:
            if isinstance(user, dict) and key in user:
                return (f"user {entry.get('name')!r} uses {key}, which istio-cni never uses: a command would run "
                        "as root on the node, a token file would be sent to the server the kubeconfig names")
    return ""


def load_checked_client(kubeconfig: str, settings: Any) -> Any:
    """An ApiClient from ``kubeconfig`` configured into ``settings``, or PodLookupError."""
    import yaml
    from kubernetes import client
    from kubernetes.config.kube_config import KubeConfigLoader

    try:
        with open(kubeconfig, "rb") as f:
            config = yaml.safe_load(f)
    except OSError as exc:
        raise PodLookupError(f"cannot read kubeconfig {kubeconfig}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        # the parser's message quotes the file: it would carry a line of any file into pod events
        raise PodLookupError(f"cannot load kubeconfig {kubeconfig}: not valid YAML") from None
    problem = credential_plugin_problem(config)
    if problem:
        raise PodLookupError(
            f"kubeconfig {kubeconfig} refused: {problem}",
            "install-cni writes the plugin's kubeconfig with the service account's token inline",
        )
    loader = KubeConfigLoader(config_dict=config, config_base_path=os.path.dirname(os.path.abspath(kubeconfig)))
    loader.load_and_set(settings)
    return client.ApiClient(configuration=settings)
