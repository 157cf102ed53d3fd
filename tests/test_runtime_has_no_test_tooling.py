"""The runtime (the `meshcni-core` wheel, the host bundle install-cni copies, the image built from
it) carries none of meshcni's test tooling: that is the `meshcni-testing` wheel's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_SITE_PACKAGES = ROOT / "build" / "plugin-bundle" / "meshcni-istio-cni" / "site-packages"
TEST_TOOLING_DISTRIBUTIONS = ("meshcni_testing", "pytest", "_pytest", "hypothesis")


def _is_test_tooling(relative: str) -> bool:
    parts = relative.split("/")
    if parts[0].split("-")[0].removesuffix(".py") in TEST_TOOLING_DISTRIBUTIONS:
        return True
    if parts[0] != "meshcni_core":
        return False
    module = parts[-1].split(".")[0] if parts[-2:-1] == ["__pycache__"] else parts[-1].removesuffix(".py")
    return "devtools" in parts or (len(parts) <= 3 and module in ("testing", "demo"))


def test_the_host_bundle_and_the_core_wheel_it_installed_carry_no_test_tooling():
    assert BUNDLE_SITE_PACKAGES.is_dir(), "run scripts/build-plugin-bundle.sh (make test does)"
    present = sorted(str(path.relative_to(BUNDLE_SITE_PACKAGES)) for path in BUNDLE_SITE_PACKAGES.rglob("*"))
    assert "meshcni_core/cli/main.py" in present  # the listing is the runtime's, so its silence below means something
    assert [p for p in present if _is_test_tooling(p)] == []
    # The wheel's own record of its files, and its entry points: no pytest plugin is registered
    # wherever meshcni-core is installed.
    (dist_info,) = BUNDLE_SITE_PACKAGES.glob("meshcni_core-*.dist-info")
    recorded = [line.split(",")[0] for line in (dist_info / "RECORD").read_text().splitlines()]
    assert "meshcni_core/pipeline.py" in recorded
    assert [p for p in recorded if _is_test_tooling(p)] == []
    assert "pytest11" not in (dist_info / "entry_points.txt").read_text()


IMPORT_EVERY_RUNTIME_MODULE = """
import json, pkgutil, sys
import meshcni_core
names = [m.name for m in pkgutil.walk_packages(meshcni_core.__path__, "meshcni_core.")]
for name in names:
    __import__(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def test_no_runtime_module_is_or_imports_test_tooling():
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERY_RUNTIME_MODULE], capture_output=True, text=True,
                          timeout=120, check=True)
    found = json.loads(done.stdout)
    assert "meshcni_core.cli.main" in found["modules"] and "meshcni_core.agent.server" in found["modules"]
    assert [m for m in found["modules"] if m.split(".")[1] in ("devtools", "testing", "demo")] == []
    assert [m for m in found["loaded"] if m.split(".")[0] in TEST_TOOLING_DISTRIBUTIONS] == []
