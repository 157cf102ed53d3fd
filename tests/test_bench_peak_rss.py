"""`make bench`'s peak RSS column: measured with GNU time for every subject, never a silent 0 (the
separate Istio bench once reported 0.0 for both plugins: it read the peak of runs that were not
measured)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "add_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("add_latency", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def version_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "CNI_COMMAND": "VERSION"}


def test_a_measured_run_has_a_real_peak(bench):
    run = bench.run_once(bench.PORTMAP, {"cniVersion": "1.0.0"}, version_env(), rss=True)
    assert run.code == 0 and "supportedVersions" in run.out
    assert bench.peak_rss_mib([run]) > 0.5  # a Go binary's runtime alone is several MiB


def test_the_peak_of_unmeasured_runs_is_an_error_not_zero(bench):
    timed = bench.run_once(bench.PORTMAP, {"cniVersion": "1.0.0"}, version_env())
    assert timed.peak_kib is None
    with pytest.raises(bench.BenchError, match="not measured"):
        bench.peak_rss_mib([timed])
    with pytest.raises(bench.BenchError):
        bench.peak_rss_mib([])


@pytest.mark.parametrize("report", ["", "0\n", "Command exited with non-zero status 1\n"])
def test_gnu_time_without_a_peak_is_an_error(bench, report):
    with pytest.raises(bench.BenchError, match="no peak RSS"):
        bench.gnu_time_peak_kib(report, "/x")
