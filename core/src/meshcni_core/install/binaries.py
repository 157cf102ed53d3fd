"""Copy the plugin into the host's CNI bin dirs, atomically.

The source dir (``MESHCNI_PLUGIN_SOURCE_DIR``) may hold:

* files - copied under a temp name, then renamed over the target;
* directories - a self-contained bundle (scripts/build-plugin-bundle.sh): copied to
  ``<name>-<content hash>`` under a temp name and renamed into place, so a bundle is never seen
  half-copied nor changed under a running plugin; older copies are removed once nothing points
  at them and no plugin started from them can still be running;
* symlinks into such a directory (``istio-cni -> meshcni-istio-cni/istio-cni``) - recreated in
  the bin dir pointing into the current bundle, replaced atomically (a temp link, then rename).

A bundle the link no longer points to is removed only after a grace period (see _stale_bundles).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field

from meshcni_core.install.files import TEMP_SUFFIX, same_bytes, write_atomic

# Longer than a plugin run may last (agent_timeout is at most 220 s); install-cni re-checks every 60 s.
RETIRED_GRACE_SECONDS = 300.0


@dataclass
class CopyReport:
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def tree_hash(directory: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode() + b"\0")
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):  # a bundle's files can be large
                        digest.update(chunk)
    return digest.hexdigest()[:12]


def install_into(source: str, target_dir: str, skip: tuple[str, ...], update: bool,
                 bundle_hashes: dict[str, str] | None = None) -> CopyReport:
    """``bundle_hashes`` memoises each bundle's content hash by path: the source is the image's and
    does not change while install-cni runs, and hashing a bundle (tens of MB) on every reconcile
    cost each heal tens of milliseconds and the agent ~20 MiB of memory."""
    report = CopyReport()
    entries = sorted(os.listdir(source))
    bundles: dict[str, str] = {}  # bundle name -> installed versioned name
    hashes = {} if bundle_hashes is None else bundle_hashes
    for name in entries:
        path = os.path.join(source, name)
        if name in skip or os.path.islink(path) or not os.path.isdir(path):
            continue
        if path not in hashes:
            hashes[path] = tree_hash(path)
        versioned = f"{name}-{hashes[path]}"
        bundles[name] = versioned
        final = os.path.join(target_dir, versioned)
        if os.path.isdir(final):
            continue
        temp = os.path.join(target_dir, f".{versioned}{TEMP_SUFFIX}")
        shutil.rmtree(temp, ignore_errors=True)
        shutil.copytree(path, temp, symlinks=True)
        os.rename(temp, final)
        report.actions.append(f"installed bundle {final}")
    for name in entries:
        path = os.path.join(source, name)
        target = os.path.join(target_dir, name)
        if name in skip or (os.path.lexists(target) and not update):
            continue
        if os.path.islink(path):
            bundle, _, inside = os.readlink(path).partition("/")
            if bundle not in bundles:
                report.problems.append(f"{path} points outside a bundle in {source}")
                continue
            wanted = os.path.join(bundles[bundle], inside)
            if os.path.islink(target) and os.readlink(target) == wanted:
                continue
            temp = os.path.join(target_dir, f".{name}{TEMP_SUFFIX}")
            if os.path.lexists(temp):
                os.unlink(temp)
            previous = os.readlink(target).partition("/")[0] if os.path.islink(target) else ""
            os.symlink(wanted, temp)
            os.rename(temp, target)
            _retired_now(target_dir, previous, bundles[bundle])
            report.actions.append(f"installed {target} -> {wanted}")
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            if not same_bytes(target, data) or os.path.islink(target):
                write_atomic(target, data, mode=0o755)
                report.actions.append(f"installed {target}")
    for stale in _stale_bundles(target_dir, bundles):
        shutil.rmtree(os.path.join(target_dir, stale), ignore_errors=True)
        report.actions.append(f"removed old bundle {os.path.join(target_dir, stale)}")
    return report


def _retired_now(target_dir: str, previous: str, current: str) -> None:
    """Stamp the bundle a link pointed to until now: its grace period starts."""
    path = os.path.join(target_dir, previous)
    if previous and previous != current and not os.path.islink(path) and os.path.isdir(path):
        os.utime(path)


def _stale_bundles(target_dir: str, current: dict[str, str]) -> list[str]:
    """Older bundles retired more than RETIRED_GRACE_SECONDS ago. A plugin that started from an
    old bundle just before the link moved still runs from it (and loads files from it lazily):
    removing it at once would fail that pod's ADD in the middle of an upgrade."""
    stale = []
    now = time.time()
    for name in os.listdir(target_dir):
        path = os.path.join(target_dir, name)
        for bundle, versioned in current.items():
            if name.startswith(f"{bundle}-") and name != versioned and os.path.isdir(path) \
                    and now - os.lstat(path).st_mtime > RETIRED_GRACE_SECONDS:
                stale.append(name)
    return stale


def remove_from(source: str, target_dir: str, skip: tuple[str, ...]) -> list[str]:
    """Remove what install_into put there: files, links and every version of each bundle."""
    done: list[str] = []
    try:
        entries = os.listdir(source)
    except FileNotFoundError:
        return done
    for name in entries:
        if name in skip:
            continue
        path, target = os.path.join(source, name), os.path.join(target_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for installed in os.listdir(target_dir):
                if installed.startswith(f"{name}-") and os.path.isdir(os.path.join(target_dir, installed)):
                    shutil.rmtree(os.path.join(target_dir, installed), ignore_errors=True)
                    done.append(f"removed {os.path.join(target_dir, installed)}")
        elif os.path.lexists(target):
            os.unlink(target)
            done.append(f"removed {target}")
    return done
