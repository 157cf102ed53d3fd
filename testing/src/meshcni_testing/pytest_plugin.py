"""The pytest plugin for extension authors (loaded through the ``pytest11`` entry point once
``meshcni-testing`` is installed).

Fixtures:

* ``meshcni_pipeline(*plugins, extensions=(), **netconf)`` - a fresh plugin manager with the
  core's built-ins, the named installed extensions and your plugin objects registered, with a
  recording backend selected; returns a :class:`Harness`.
* ``pod_factory(**overrides)`` - a PodInfo that the seed rules redirect, unless you override.
* ``netns_lab`` - throwaway network namespaces for backend authors (root; see ``netlab``).

Nothing touches the kernel but ``netns_lab``: the recording backend keeps the plans it was asked
to apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meshcni_hooks.types import PodInfo
from meshcni_testing.harness import Harness, build_harness, make_pod


@pytest.fixture
def meshcni_pipeline() -> Callable[..., Harness]:
    return build_harness


@pytest.fixture
def pod_factory() -> Callable[..., PodInfo]:
    return make_pod


@pytest.fixture
def netns_lab() -> Iterator[Any]:
    """A :class:`meshcni_testing.netlab.Lab` (needs root): throwaway network namespaces,
    veth pairs and listeners, all removed afterwards even when the test fails."""
    from meshcni_testing.netlab import Lab

    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
