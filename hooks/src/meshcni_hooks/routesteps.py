"""Running a plan's route steps (:class:`~meshcni_hooks.types.RouteStep`), the same way in every
backend: which ones an apply added (for its rollback), and the error when one fails."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from meshcni_hooks.errors import ApplyError
from meshcni_hooks.types import RouteStep

IpRunner = Callable[[tuple[str, ...]], "subprocess.CompletedProcess[str]"]


def exec_ip(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` in the current network namespace."""
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def run_route_step(step: RouteStep, added: list[RouteStep], routes_were_ours: bool, run: IpRunner = exec_ip) -> None:
    """Run ``step`` with ``run``, appending it to ``added`` (what a rollback undoes) unless an earlier
    ADD of ours already had it in place (``routes_were_ours`` and its ``show`` holds ``expect``)."""
    there_before = routes_were_ours and bool(step.show) and step.expect in run(step.show).stdout
    if step.pre:
        run(step.pre)
    if not there_before:
        added.append(step)
    proc = run(step.args)
    if proc.returncode != 0 and not step.ignore_errors:
        raise ApplyError(f"ip {' '.join(step.args)} failed: {proc.stderr.strip()}")
