"""Run a CNI network configuration list the way libcni does, for the demo and benchmarks.

This is scaffolding only: the plugins it executes (Debian's ptp and host-local, our istio-cni)
are the real binaries. For each plugin it derives the request configuration as the spec says
(the plugin's object plus the list's ``name`` and ``cniVersion``, the previous result as
``prevResult``, and ``runtimeConfig`` for the capabilities the plugin declares); a failed ADD is
followed by a DEL of the whole list in reverse, as runtimes do.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from meshcni_core import netns


class ChainError(Exception):
    def __init__(self, plugin: str, command: str, error: dict[str, Any]):
        super().__init__(f"{plugin} {command} failed: {error.get('msg', error)}")
        self.plugin = plugin
        self.error = error


@dataclass
class Attachment:
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    runtime: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass
class CniChain:
    conflist: dict[str, Any]
    bin_dir: str
    node_netns: str = ""  # the namespace the runtime (and so every plugin) runs in
    timings: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, attachment: Attachment) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in self.conflist["plugins"]:
            try:
                prev = self._invoke("ADD", plugin, attachment, prev)
            except ChainError:
                self.delete(attachment)
                raise
        attachment.result = prev
        return prev or {}

    def delete(self, attachment: Attachment) -> None:
        errors = []
        for plugin in reversed(self.conflist["plugins"]):
            try:
                self._invoke("DEL", plugin, attachment, attachment.result)
            except ChainError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _invoke(self, command: str, plugin: dict[str, Any], att: Attachment,
                prev: dict[str, Any] | None) -> dict[str, Any] | None:
        request = {k: v for k, v in plugin.items() if k != "capabilities"}
        request["name"] = self.conflist["name"]
        request["cniVersion"] = self.conflist["cniVersion"]
        if prev is not None:
            request["prevResult"] = prev
        wanted = {k: att.runtime[k] for k, on in plugin.get("capabilities", {}).items() if on and k in att.runtime}
        if wanted:
            request["runtimeConfig"] = wanted
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns,
            "CNI_IFNAME": att.ifname,
            "CNI_PATH": self.bin_dir,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args.items()),
        }
        binary = os.path.join(self.bin_dir, plugin["type"])
        import time

        started = time.perf_counter()
        with netns.entered(self.node_netns):
            proc = subprocess.run([binary], input=json.dumps(request), env=env, capture_output=True, text=True,
                                  timeout=120)
        self.timings.append((plugin["type"], command, (time.perf_counter() - started) * 1000))
        if proc.returncode != 0:
            try:
                error = json.loads(proc.stdout)
            except ValueError:
                error = {"msg": proc.stdout.strip() or proc.stderr.strip()}
            raise ChainError(plugin["type"], command, error)
        return json.loads(proc.stdout) if command == "ADD" and proc.stdout.strip() else prev
