"""Test helpers for code that uses bpj.

- :func:`fake_vertex`: a :class:`bpj.testing.fake.FakeVertex` with ``bpj.init`` pointed at it, for a ``with``
  block: a fresh fake per hypothesis example (pytest's function-scoped fixtures are made once per test, not
  per example).
- ``bpj.testing.strategies``: hypothesis strategies for every bpj message (and any other protobuf message)
  and for valid resource names (``pip install 'bpj[testing]'``).
- ``bpj.testing.plugin``: the pytest fixtures ``bpj_fake`` and ``bpj_local_stack`` (``-p bpj.testing.plugin``).

Importing this package costs nothing: the fake, hypothesis and pytest are imported when used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpj.testing.fake import FakeVertex

__all__ = ["fake_vertex"]


@contextlib.contextmanager
def fake_vertex(**settings: Any) -> Iterator[FakeVertex]:
    """A FakeVertex that bpj's calls reach inside the block; after it every ``bpj.init`` argument is
    forgotten (``bpj.config.reset()``) and the fake closed. ``settings`` go to ``FakeVertex.init``
    (``gcs_endpoint=``...)."""
    from bpj import config
    from bpj.testing.fake import FakeVertex

    with FakeVertex() as fake:
        fake.init(**settings)
        try:
            yield fake
        finally:
            config.reset()
