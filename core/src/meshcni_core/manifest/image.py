"""The install-cni image reference from the values, with a digest pin where one is given.

``make image`` writes the built image's digest (build/image/digest) and its full reference
(build/image/reference); either pins the rendered DaemonSet and repair Deployment to that exact
image: ``--set values.cni.image=$(cat build/image/reference)``, or a hub plus
``--set values.cni.tag=$(cat build/image/digest)`` (a bare digest) or ``tag=0.1.0@sha256:...``.
"""

from __future__ import annotations

import re

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def image_reference(hub: str, image: str, tag: str) -> str:
    """``image`` when it is a full reference (holds a ``/``), else ``hub/image`` with the tag,
    a ``tag@digest`` or a bare digest. A digest that is not sha256 and 64 lower-case hex digits
    raises ValueError: kubelet would only fail the pull later, on every node."""
    if "/" in image:
        reference = image
    elif DIGEST.fullmatch(tag):
        reference = f"{hub}/{image}@{tag}"
    else:
        reference = f"{hub}/{image}:{tag}"
    if "@" in reference:
        digest = reference.rsplit("@", 1)[1]
        if not DIGEST.fullmatch(digest):
            raise ValueError(f"{reference!r}: the digest after '@' must be sha256: and 64 lower-case hex digits")
    return reference
