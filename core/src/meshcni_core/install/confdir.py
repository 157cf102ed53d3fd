"""The node's CNI conf dir as the container runtime sees it.

containerd (go-cni) and CRI-O (ocicni) load ``.conf``, ``.conflist`` and ``.json`` files, sorted
byte-wise, and use the first valid one (containerd: the first ``max_conf_num``, default 1). A
``.conflist`` needs a ``name`` and a non-empty ``plugins`` list whose entries all have a ``type``;
a ``.conf``/``.json`` is one plugin object with a ``type``. containerd fails the whole load when an
invalid file sorts before the first valid one, CRI-O skips it; both are reported here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

CONF_EXTENSIONS = (".conf", ".conflist", ".json")


@dataclass(frozen=True)
class ConfFile:
    name: str
    path: str
    content: dict[str, Any] | None  # None when the file is not valid
    problem: str = ""

    @property
    def is_list(self) -> bool:
        return self.name.endswith(".conflist")

    @property
    def valid(self) -> bool:
        return self.content is not None


@dataclass(frozen=True)
class Discovery:
    """What the runtime would load: the first valid file, and the invalid ones before it."""

    chosen: ConfFile | None
    invalid_before: tuple[ConfFile, ...] = field(default_factory=tuple)

    def warnings(self) -> list[str]:
        return [
            f"{f.name} sorts before {self.chosen.name if self.chosen else 'any valid file'} and is invalid "
            f"({f.problem}): containerd refuses to load any network while it is there; CRI-O skips it"
            for f in self.invalid_before
        ]


def conf_files(directory: str) -> list[str]:
    """Names the runtime considers, in its order. Dot-files count, as in libcni."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        (n for n in names if n.endswith(CONF_EXTENSIONS) and not os.path.isdir(os.path.join(directory, n))),
        key=lambda n: os.path.join(directory, n).encode(),
    )


def read_conf(directory: str, name: str) -> ConfFile:
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return ConfFile(name, path, None, f"unreadable: {exc.strerror}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return ConfFile(name, path, None, f"not valid JSON: {exc}")
    problem = validate_list(doc) if name.endswith(".conflist") else validate_single(doc)
    return ConfFile(name, path, None if problem else doc, problem)


def validate_single(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not isinstance(doc.get("type"), str) or not doc["type"]:
        return "missing 'type'"
    return ""


def validate_list(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        return "missing 'name'"
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return "no plugins in the list"
    for index, plugin in enumerate(plugins):
        problem = validate_single(plugin)
        if problem:
            return f"plugins[{index}]: {problem}"
    if "disableCheck" in doc and not isinstance(doc["disableCheck"], bool):
        return "'disableCheck' is not a boolean (libcni before 1.2, e.g. containerd 1.6, rejects the file)"
    return ""


def discover(directory: str) -> Discovery:
    invalid: list[ConfFile] = []
    for name in conf_files(directory):
        conf = read_conf(directory, name)
        if conf.valid:
            return Discovery(conf, tuple(invalid))
        invalid.append(conf)
    return Discovery(None, tuple(invalid))
