"""install-cni's environment variables as a marshmallow schema: one line per variable.

Attribute names are ``InstallSettings`` fields; a variable that is unset (or empty, except where
empty means something) leaves the dataclass default.
"""

from __future__ import annotations

from collections.abc import Mapping

from marshmallow import EXCLUDE, Schema

from meshcni_core.install.confdir import CONF_EXTENSIONS
from meshcni_core.logs import LEVEL_NAMES
from meshcni_core.schemas.fields import (
    DNS_LABEL,
    Boolean,
    Choice,
    CommaSeparated,
    FileMode,
    Integer,
    Matching,
    PlainFileName,
    PositiveSeconds,
    Text,
)

KEEP_EMPTY = {"SECONDARY_BIN_DIR"}  # "" = no secondary bin dir


class InstallEnvironment(Schema):
    class Meta:
        unknown = EXCLUDE  # the rest of the container's environment

    cni_net_dir = Text(data_key="CNI_NET_DIR")  # the host's path (for __KUBECONFIG_FILEPATH__)
    mounted_cni_net_dir = Text(data_key="MOUNTED_CNI_NET_DIR")
    cni_conf_name = PlainFileName(CONF_EXTENSIONS, data_key="CNI_CONF_NAME")
    chained = Boolean(data_key="CHAINED_CNI_PLUGIN")
    network_config = Text(data_key="CNI_NETWORK_CONFIG")
    network_config_file = Text(data_key="CNI_NETWORK_CONFIG_FILE")
    kubeconfig_file_name = PlainFileName(data_key="KUBECFG_FILE_NAME")
    kubeconfig_mode = FileMode(data_key="KUBECONFIG_MODE")
    kube_ca_file = Text(data_key="KUBE_CA_FILE")
    skip_tls_verify = Boolean(data_key="SKIP_TLS_VERIFY")
    service_host = Text(data_key="KUBERNETES_SERVICE_HOST")
    service_port = Text(data_key="KUBERNETES_SERVICE_PORT")
    service_protocol = Text(data_key="KUBERNETES_SERVICE_PROTOCOL")
    node_name = Text(data_key="KUBERNETES_NODE_NAME")
    log_level = Choice(LEVEL_NAMES, folded=True, data_key="LOG_LEVEL")
    update_binaries = Boolean(data_key="UPDATE_CNI_BINARIES")
    skip_binaries = CommaSeparated(data_key="SKIP_CNI_BINARIES")
    mounted_cni_bin_dir = Text(data_key="MOUNTED_CNI_BIN_DIR")
    secondary_bin_dir = Text(data_key="SECONDARY_BIN_DIR")
    service_account_dir = Text(data_key="SERVICE_ACCOUNT_DIR")
    plugin_source_dir = Text(data_key="MESHCNI_PLUGIN_SOURCE_DIR")
    require_agent = Boolean(data_key="MESHCNI_REQUIRE_AGENT")
    edit_war_rewrites = Integer(minimum=1, data_key="MESHCNI_EDIT_WAR_REWRITES")
    edit_war_window = PositiveSeconds(data_key="MESHCNI_EDIT_WAR_WINDOW")
    platform = Matching(DNS_LABEL, "a platform name", data_key="MESHCNI_PLATFORM")
    conf_link_dirs = CommaSeparated(absolute=True, data_key="MESHCNI_CONF_LINK_DIRS")
    owned_conf = Boolean(data_key="ISTIO_OWNED_CNI_CONFIG")  # folded into owned_conf_name by from_env
    owned_conf_file_name = PlainFileName((".conflist",), data_key="ISTIO_OWNED_CNI_CONFIG_FILENAME")
    readiness_taint = Text(data_key="MESHCNI_READINESS_TAINT")
    readiness_taint_grace = PositiveSeconds(data_key="MESHCNI_READINESS_TAINT_GRACE")
    repair_enabled = Boolean(data_key="REPAIR_ENABLED")  # the other REPAIR_* belong to repair.flags


ENVIRONMENT = InstallEnvironment()
VARIABLES = frozenset(field.data_key for field in ENVIRONMENT.fields.values())


def present(env: Mapping[str, str]) -> dict[str, str]:
    """The schema's variables that are set to something (or empty where that means something)."""
    return {name: value for name, value in env.items()
            if name in VARIABLES and value is not None and (value != "" or name in KEEP_EMPTY)}
