"""install-cni's check of the plugin's backend on this node, beside the platform's checks.

The backend the node's netconf selects must be usable here (``Backend.host_problems()``): until
it is, our conf entry is not written and ``/readyz`` lists what is missing, so no pod is sent to a
plugin that would fail every ADD. Run on every reconcile: a node fixed later becomes ready.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from meshcni_core.install.installer import NodeCheck
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import NodeFacts

if TYPE_CHECKING:
    from meshcni_core.pipeline import Pipeline



def backend_problems(pipeline: Callable[[], Pipeline]) -> list[str]:
    """What keeps the selected backend from running on this node, each naming the backend."""
    try:
        built = pipeline()
        problems = built.backend_host_problems()
        name = built.backend_choice.name or "auto"
    except MeshcniError as exc:
        return [f"the plugin's configuration cannot be served: {exc.msg}"]
    return [f"backend {name}: {problem}" for problem in problems]


def with_backend_check(node_check: NodeCheck | None, pipeline: Callable[[], Pipeline]) -> NodeCheck:
    """``node_check`` (the platform's, if any) followed by the backend's check."""

    def check(node: NodeFacts) -> list[str]:
        return [*(node_check(node) if node_check is not None else []), *backend_problems(pipeline)]

    return check
