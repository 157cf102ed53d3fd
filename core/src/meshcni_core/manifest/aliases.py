"""The seed page's shorthand ``--set`` spellings, and the IstioOperator paths they stand for.

The seed page mixes three generations of spellings: istioctl's (``values.cni.cniBinDir``), the
istio-cni Helm chart's top-level values (``--set cniBinDir=/home/kubernetes/bin`` in its GKE
step, the option names of its values table) and Istio's old Helm values (``--set cni.enabled=true``
in its sidecar-injection section). This table is the only place a shorthand is accepted: each use
is reported with its canonical path, and any other unknown path stays an error.
``hub`` and ``tag`` are not here: at the top they are the IstioOperator's own ``spec.hub``/``spec.tag``.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshcni_core.manifest.setpath import SetFlag, SetFlagError, format_path, split_path
from meshcni_core.schemas.problems import suggestion

ALIASES: dict[str, str] = {
    "cni.enabled": "components.cni.enabled",  # "the installation with the --set cni.enabled=true option"
    "cniBinDir": "values.cni.cniBinDir",  # the GKE setup step: --set cniBinDir=/home/kubernetes/bin
    "cniConfDir": "values.cni.cniConfDir",
    "cniConfFileName": "values.cni.cniConfFileName",
    "excludeNamespaces": "values.cni.excludeNamespaces",
    "logLevel": "values.cni.logLevel",
    "pullPolicy": "values.cni.pullPolicy",
    "psp_cluster_role": "values.cni.psp_cluster_role",
    "podAnnotations": "values.cni.podAnnotations",
    "chained": "values.cni.chained",
    "repair": "values.cni.repair",  # repair.enabled, repair.deletePods, ... as the table names them
}
_ALIAS_PATHS = {tuple(split_path(short)): tuple(split_path(full)) for short, full in ALIASES.items()}
# Spellings of the first segment that only start an alias (cni.enabled): cni.<other> is refused here.
_ALIAS_HEADS = {short[0] for short in _ALIAS_PATHS if len(short) > 1}
TYPESET_DASHES = ("\u2013", "\u2014")  # en and em dash, as a typeset page shows "--"


def canonical(flags: Sequence[SetFlag]) -> tuple[list[SetFlag], list[str]]:
    """The flags with each shorthand path replaced by its canonical one, and a note per replacement."""
    out: list[SetFlag] = []
    notes: list[str] = []
    for flag in flags:
        short = next((s for s in _ALIAS_PATHS if flag.path[:len(s)] == s), None)
        if short is None:
            if flag.path[0] in _ALIAS_HEADS:
                known = [format_path(s) for s in _ALIAS_PATHS if s[0] == flag.path[0]]
                raise SetFlagError(f"--set {flag.text!r}: {format_path(flag.path)} is no shorthand meshcni knows"
                                   f"{suggestion(format_path(flag.path), known)}")
            out.append(flag)
            continue
        path = _ALIAS_PATHS[short] + flag.path[len(short):]
        out.append(SetFlag(path=path, value=flag.value, text=flag.text))
        notes.append(f"--set {flag.text}: the seed page's shorthand for {format_path(path)}")
    return out, notes


def known_shorthands() -> list[str]:
    return list(ALIASES)


def typeset_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--set`` as the seed page typesets it (one en dash, U+2013): read as ``--set``, with a note.

    Only that option's spelling is rewritten; values are left alone."""
    out: list[str] = []
    notes: list[str] = []
    for word in argv:
        if word[:1] in TYPESET_DASHES and word[1:].lstrip("-").split("=", 1)[0] == "set":
            notes.append(f"{word.split('=', 1)[0]!r} (a typeset dash) read as '--set'")
            word = "--set" + word[1:].lstrip("-")[3:]
        out.append(word)
    return out, notes
