"""Installer settings from Istio's install-cni environment variables, with their defaults.

Istio treated any boolean text but Go's true spellings as false; here a boolean must read as one
(meshcni_core.schemas.boolean), so a typo ("ture") is an error instead of a silently different
mode. Every problem is reported at once, each named by its variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
OWNED_CONF_NAME = "02-istio-cni.conflist"  # Istio's default: sorts before the usual 05-/10- primaries


class SettingsError(ValueError):
    """Every problem of the environment, one per line, each starting with its variable's name."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class InstallSettings:
    cni_net_dir: str = "/etc/cni/net.d"  # the host's path (for __KUBECONFIG_FILEPATH__)
    mounted_cni_net_dir: str = "/host/etc/cni/net.d"
    cni_conf_name: str = ""  # "" = the file the runtime uses (chained) / YYY-istio-cni.conf (standalone)
    chained: bool = True
    network_config: str = ""  # the template text (CNI_NETWORK_CONFIG)
    network_config_file: str = ""  # wins when the file exists (CNI_NETWORK_CONFIG_FILE)
    kubeconfig_file_name: str = "ZZZ-istio-cni-kubeconfig"
    kubeconfig_mode: int = 0o600
    kube_ca_file: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    skip_tls_verify: bool = False
    service_host: str = ""
    service_port: str = ""
    service_protocol: str = "https"
    node_name: str = ""
    log_level: str = "warn"
    update_binaries: bool = True
    skip_binaries: tuple[str, ...] = ()
    mounted_cni_bin_dir: str = "/host/opt/cni/bin"
    secondary_bin_dir: str = "/host/secondary-bin-dir"
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    plugin_source_dir: str = "/opt/meshcni/bin"  # what is copied into the host's bin dirs
    require_agent: bool = True  # our entry's STATUS reports "not available" while the agent is not ready
    edit_war_rewrites: int = 5  # more re-patches of one file than this within the window: an edit war
    edit_war_window: float = 30.0
    platform: str = ""  # a hosted platform whose extension checks the node (MESHCNI_PLATFORM)
    conf_link_dirs: tuple[str, ...] = ()  # where a symlinked conf file may lead (MESHCNI_CONF_LINK_DIRS)
    repair_enabled: bool = False  # run the repair daemon in the agent, configured by REPAIR_* (REPAIR_ENABLED)
    owned_conf_name: str = ""  # chained into a file of our own, not the primary's (ISTIO_OWNED_CNI_CONFIG)
    readiness_taint: str = ""  # the taint lifted from this node once ready (MESHCNI_READINESS_TAINT)
    readiness_taint_grace: float = 60.0  # not ready this long after the lift: the taint goes back on

    @property
    def standalone_conf_name(self) -> str:
        return self.cni_conf_name or "YYY-istio-cni.conf"

    @property
    def kubeconfig_host_path(self) -> str:
        return os.path.join(self.cni_net_dir, self.kubeconfig_file_name)

    @property
    def kubeconfig_mounted_path(self) -> str:
        return os.path.join(self.mounted_cni_net_dir, self.kubeconfig_file_name)

    @property
    def token_file(self) -> str:
        return os.path.join(self.service_account_dir, "token")

    def bin_dirs(self) -> list[str]:
        return [d for d in (self.mounted_cni_bin_dir, self.secondary_bin_dir) if d]


def from_env(env: Mapping[str, str] | None = None) -> InstallSettings:
    from marshmallow import ValidationError

    from meshcni_core.install.environment import ENVIRONMENT, present
    from meshcni_core.schemas.problems import problems

    env = os.environ if env is None else env
    try:
        loaded: dict[str, Any] = ENVIRONMENT.load(present(env))
    except ValidationError as exc:
        raise SettingsError(problems(exc.messages, ENVIRONMENT)) from None
    loaded.setdefault("node_name", socket.gethostname())
    owned_file_name = loaded.pop("owned_conf_file_name", OWNED_CONF_NAME)
    loaded["owned_conf_name"] = owned_file_name if loaded.pop("owned_conf", False) else ""
    loaded["readiness_taint"] = loaded.get("readiness_taint", "").strip()
    service_account_dir = loaded.get("service_account_dir", SERVICE_ACCOUNT_DIR)
    loaded.setdefault("kube_ca_file", os.path.join(service_account_dir, "ca.crt"))
    return InstallSettings(**loaded)
