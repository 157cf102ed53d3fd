"""The node-local spool of plugin log records: bounded, root-only, never through a link, and
nothing lost or torn when plugins append while the agent drains."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshcni_core.cni import spool


@pytest.fixture
def state_dir(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    return directory


def test_no_state_directory_means_no_spool(tmp_path):
    path = str(tmp_path / "absent" / spool.SPOOL_NAME)
    assert spool.append(path, "x") is False
    assert not (tmp_path / "absent").exists(), "the plugin never creates the agent's state directory"
    assert spool.drain(path) == []


def test_rotation_keeps_at_most_two_files_under_the_cap(state_dir):
    path = str(state_dir / spool.SPOOL_NAME)
    line = "r" * 999
    for _ in range(3 * spool.MAX_BYTES // 1000):
        assert spool.append(path, line)
    sizes = [os.path.getsize(path), os.path.getsize(path + spool.ROTATED_SUFFIX)]
    assert all(size <= spool.MAX_BYTES for size in sizes)
    lines = spool.drain(path)
    assert len(lines) == sum(sizes) // 1000 and set(lines) == {line}
    assert os.path.getsize(path) == 0 and not os.path.exists(path + spool.ROTATED_SUFFIX)


def test_a_link_at_the_spool_s_name_is_never_written_through(state_dir, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.symlink(victim, state_dir / spool.SPOOL_NAME)
    with pytest.raises(OSError):
        spool.append(str(state_dir / spool.SPOOL_NAME), "evil")
    assert victim.read_text() == "keep\n"


def test_a_directory_others_may_write_is_refused(state_dir):
    state_dir.chmod(0o777)
    with pytest.raises(spool.SpoolError):
        spool.append(str(state_dir / spool.SPOOL_NAME), "x")
    assert not (state_dir / spool.SPOOL_NAME).exists()


def test_a_line_longer_than_one_atomic_write_is_cut(state_dir):
    path = str(state_dir / spool.SPOOL_NAME)
    spool.append(path, "y" * 10_000)
    assert [len(line) for line in spool.drain(path)] == [spool.MAX_LINE]


def test_concurrent_plugins_and_a_draining_agent_lose_and_tear_nothing(state_dir):
    """Separate processes append (as plugins do) while this one drains (as the agent does)."""
    path = str(state_dir / spool.SPOOL_NAME)
    writer = ("import sys\nfrom meshcni_core.cni import spool\n"
              "for i in range(300): spool.append(sys.argv[1], f'{sys.argv[2]}-{i:04d}-' + 'z' * 200)\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, path, f"w{n}"]) for n in range(4)]
    seen: list[str] = []
    while any(p.poll() is None for p in procs):
        seen += spool.drain(path)
    seen += spool.drain(path)
    assert all(p.returncode == 0 for p in procs)
    assert sorted(seen) == sorted(f"w{n}-{i:04d}-" + "z" * 200 for n in range(4) for i in range(300))
