from pathlib import Path

import pytest

from meshcni_testing.controlplane import ControlPlane, start_control_plane

# Built by `make control-plane` (scripts/build-control-plane.sh).
CONTROL_PLANE_BIN = Path(__file__).resolve().parent / "build" / "control-plane" / "bin"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    return CONTROL_PLANE_BIN


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory):
    """A real etcd + kube-apiserver for the whole session: tests that share it use their own
    namespaces and names, or put back what they change."""
    plane: ControlPlane
    with start_control_plane(CONTROL_PLANE_BIN, tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane
