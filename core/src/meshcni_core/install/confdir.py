"""The node's CNI conf dir as the container runtime sees it.

containerd (go-cni) and CRI-O (ocicni) load ``.conf``, ``.conflist`` and ``.json`` files, sorted
byte-wise, and use the first valid one (containerd: the first ``max_conf_num``, default 1). A
``.conflist`` needs a ``name`` and a non-empty ``plugins`` list whose entries all have a ``type``;
a ``.conf``/``.json`` is one plugin object with a ``type``. containerd fails the whole load when an
invalid file sorts before the first valid one, CRI-O skips it; both are reported here.

A conf file may be a symlink (Calico's operator links ``10-calico.conflist`` into
``/var/lib/calico``). Whoever can write the conf dir chooses the link's target, so a link is
followed - read, and later written through, keeping the link - only when its real target is a
regular conf file directly inside the conf dir or a directory the admin listed in
``MESHCNI_CONF_LINK_DIRS``. Any other link stops discovery: the runtime may be loading it, so
chaining into the next file would leave pods unredirected.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshcni_core.install.files import plain_name_problem

CONF_EXTENSIONS = (".conf", ".conflist", ".json")


@dataclass(frozen=True)
class ConfFile:
    name: str
    path: str
    content: dict[str, Any] | None  # None when the file is not valid
    problem: str = ""
    link_target: str = ""  # the real file behind an allowed symlink: reads and writes go there
    refused_link: bool = False  # a symlink that is not followed (``problem`` says why)

    @property
    def is_list(self) -> bool:
        return self.name.endswith(".conflist")

    @property
    def write_path(self) -> str:
        """Where new content goes: through an allowed link to its target (the link stays)."""
        return self.link_target or self.path

    @property
    def valid(self) -> bool:
        return self.content is not None


@dataclass(frozen=True)
class Discovery:
    """What the runtime would load: the first valid file, and the invalid ones before it."""

    chosen: ConfFile | None
    invalid_before: tuple[ConfFile, ...] = field(default_factory=tuple)
    refused_link: ConfFile | None = None  # a link discovery stopped at

    def warnings(self) -> list[str]:
        warnings = [
            f"{f.name} sorts before {self.chosen.name if self.chosen else 'any valid file'} and is invalid "
            f"({f.problem}): containerd refuses to load any network while it is there; CRI-O skips it"
            for f in self.invalid_before
        ]
        if self.refused_link is not None:
            warnings.append(f"{self.refused_link.name} is {self.refused_link.problem}; the runtime may load it, "
                            "so nothing is chained until it is a plain file or its target is allowed")
        return warnings


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


def followed_link(directory: str, name: str, link_dirs: Iterable[str]) -> tuple[str, str]:
    """(real target, "") for a symlink that may be read and written through, else ("", why not)."""
    path = os.path.join(directory, name)
    try:
        shown = f"a symlink to {os.readlink(path)}"
    except OSError as exc:
        return "", f"an unreadable symlink ({exc.strerror})"
    real = os.path.realpath(path)
    allowed = {os.path.realpath(d) for d in (directory, *link_dirs)}
    if os.path.dirname(real) not in allowed:
        return "", (f"{shown} ({real}), outside the conf dir and MESHCNI_CONF_LINK_DIRS: "
                    "meshcni neither reads nor writes through it")
    target = os.path.basename(real)
    if plain_name_problem(target) or not target.endswith(CONF_EXTENSIONS) or \
            target.endswith(".conflist") != name.endswith(".conflist"):
        return "", f"{shown}, whose target is not a conf file of the same kind as {name}"
    try:
        mode = os.lstat(real).st_mode
    except OSError as exc:
        return "", f"{shown}, which this container cannot reach ({exc.strerror}): mount its directory at the same path"
    if not stat.S_ISREG(mode):
        return "", f"{shown}, which is not a regular file"
    return real, ""


def read_conf(directory: str, name: str, link_dirs: Iterable[str] = ()) -> ConfFile:
    """A conf file, read without following any symlink but an allowed one (``followed_link``)."""
    path = os.path.join(directory, name)
    target = ""
    if os.path.islink(path):
        target, refusal = followed_link(directory, name, link_dirs)
        if refusal:
            return ConfFile(name, path, None, refusal, refused_link=True)
    try:
        fd = os.open(target or path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError as exc:
        return ConfFile(name, path, None, f"unreadable: {exc.strerror}", target)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return ConfFile(name, path, None, f"not valid JSON: {exc}", target)
    problem = validate_list(doc) if name.endswith(".conflist") else validate_single(doc)
    return ConfFile(name, path, None if problem else doc, problem, target)


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


def discover(directory: str, link_dirs: Iterable[str] = (), skip: str = "") -> Discovery:
    """``skip``: our own conf file (ISTIO_OWNED_CNI_CONFIG), never the primary's."""
    invalid: list[ConfFile] = []
    for name in conf_files(directory):
        if name == skip:
            continue
        conf = read_conf(directory, name, link_dirs)
        if conf.valid:
            return Discovery(conf, tuple(invalid))
        if conf.refused_link:
            return Discovery(None, tuple(invalid), conf)
        invalid.append(conf)
    return Discovery(None, tuple(invalid))
