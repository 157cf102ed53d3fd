"""Installer settings from Istio's install-cni environment variables, with their defaults.

Istio treated any value other than ``true`` as false; here a boolean must read as one, so a typo
("ture") is an error instead of a silently different mode.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshcni_core.install.confdir import CONF_EXTENSIONS
from meshcni_core.install.files import plain_name_problem
from meshcni_core.logs import LEVEL_NAMES

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
OWNED_CONF_NAME = "02-istio-cni.conflist"  # Istio's default: sorts before the usual 05-/10- primaries


class SettingsError(ValueError):
    pass


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
    owned_conf_name: str = ""  # chained into a file of our own, not the primary's (ISTIO_OWNED_CNI_CONFIG)
    readiness_taint: str = ""  # the taint lifted from this node once ready (MESHCNI_READINESS_TAINT)

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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.strip().lower() in TRUE:
        return True
    if raw.strip().lower() in FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (true or false)")


def from_env(env: Mapping[str, str] | None = None) -> InstallSettings:
    env = os.environ if env is None else env
    defaults = InstallSettings()
    service_account_dir = env.get("SERVICE_ACCOUNT_DIR") or defaults.service_account_dir
    mode_text = env.get("KUBECONFIG_MODE") or "600"
    try:
        mode = int(mode_text, 8)
    except ValueError:
        raise SettingsError(f"KUBECONFIG_MODE={mode_text!r} is not an octal file mode") from None
    if mode & ~0o777:
        raise SettingsError(f"KUBECONFIG_MODE={mode_text!r} is not a file mode between 000 and 777")
    kubeconfig_file_name = _file_name(env, "KUBECFG_FILE_NAME", defaults.kubeconfig_file_name, ())
    cni_conf_name = _file_name(env, "CNI_CONF_NAME", "", CONF_EXTENSIONS)
    link_dirs_text = env.get("MESHCNI_CONF_LINK_DIRS", "")
    link_dirs = tuple(d.strip() for d in link_dirs_text.split(",") if d.strip())
    if any(not os.path.isabs(d) for d in link_dirs):
        raise SettingsError(f"MESHCNI_CONF_LINK_DIRS={link_dirs_text!r}: every directory must be absolute")
    log_level = (env.get("LOG_LEVEL") or defaults.log_level).lower()
    if log_level not in LEVEL_NAMES:
        raise SettingsError(f"LOG_LEVEL={log_level!r} is not one of {', '.join(LEVEL_NAMES)}")
    return InstallSettings(
        cni_net_dir=env.get("CNI_NET_DIR") or defaults.cni_net_dir,
        mounted_cni_net_dir=env.get("MOUNTED_CNI_NET_DIR") or defaults.mounted_cni_net_dir,
        cni_conf_name=cni_conf_name,
        chained=_bool(env, "CHAINED_CNI_PLUGIN", True),
        network_config=env.get("CNI_NETWORK_CONFIG", ""),
        network_config_file=env.get("CNI_NETWORK_CONFIG_FILE", ""),
        kubeconfig_file_name=kubeconfig_file_name,
        kubeconfig_mode=mode,
        kube_ca_file=env.get("KUBE_CA_FILE") or os.path.join(service_account_dir, "ca.crt"),
        skip_tls_verify=_bool(env, "SKIP_TLS_VERIFY", False),
        service_host=env.get("KUBERNETES_SERVICE_HOST", ""),
        service_port=env.get("KUBERNETES_SERVICE_PORT", ""),
        service_protocol=env.get("KUBERNETES_SERVICE_PROTOCOL") or "https",
        node_name=env.get("KUBERNETES_NODE_NAME") or socket.gethostname(),
        log_level=log_level,
        update_binaries=_bool(env, "UPDATE_CNI_BINARIES", True),
        skip_binaries=tuple(n for n in env.get("SKIP_CNI_BINARIES", "").split(",") if n),
        mounted_cni_bin_dir=env.get("MOUNTED_CNI_BIN_DIR") or defaults.mounted_cni_bin_dir,
        secondary_bin_dir=env.get("SECONDARY_BIN_DIR", defaults.secondary_bin_dir),
        service_account_dir=service_account_dir,
        plugin_source_dir=env.get("MESHCNI_PLUGIN_SOURCE_DIR") or defaults.plugin_source_dir,
        require_agent=_bool(env, "MESHCNI_REQUIRE_AGENT", True),
        edit_war_rewrites=_number(env, "MESHCNI_EDIT_WAR_REWRITES", 5, int),
        edit_war_window=_number(env, "MESHCNI_EDIT_WAR_WINDOW", 30.0, float),
        platform=env.get("MESHCNI_PLATFORM", "").strip(),
        conf_link_dirs=link_dirs,
        owned_conf_name=_file_name(env, "ISTIO_OWNED_CNI_CONFIG_FILENAME", OWNED_CONF_NAME, (".conflist",))
        if _bool(env, "ISTIO_OWNED_CNI_CONFIG", False) else "",
        readiness_taint=env.get("MESHCNI_READINESS_TAINT", "").strip(),
    )


def _file_name(env: Mapping[str, str], name: str, default: str, extensions: tuple[str, ...]) -> str:
    """A file name in the conf dir: plain (the installer writes and removes it as root)."""
    raw = env.get(name) or default
    if not raw:
        return raw
    problem = plain_name_problem(raw)
    if not problem and extensions and not raw.endswith(extensions):
        problem = f"it does not end in {', '.join(extensions)}"
    if problem:
        raise SettingsError(f"{name}={raw!r} is not a file name in the conf dir: {problem}")
    return raw


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value
