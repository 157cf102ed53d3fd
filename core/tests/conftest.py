import pytest

from meshcni_core import extensions
from meshcni_core.pipeline import Pipeline


@pytest.fixture
def modes():
    """REDIRECT (core) and TPROXY (extension) modes, as a fresh manager registers them."""
    return extensions.redirect_modes(extensions.new_manager(["tproxy"]))


@pytest.fixture
def pipeline_for():
    def make(enabled=("tproxy", "kubevirt"), **netconf):
        conf = {"cniVersion": "1.0.0", "name": "net", "type": "istio-cni", "extensions": list(enabled), **netconf}
        return Pipeline.from_netconf(conf, {})

    return make
