"""A pytest plugin with bpj fixtures. Turn it on with ``-p bpj.testing.plugin`` (e.g. in ``addopts``) or
``pytest_plugins = ["bpj.testing.plugin"]`` in a top-level ``conftest.py``. It is not a ``pytest11`` entry
point on purpose: pytest rewrites the asserts of every module of an entry point's distribution, so every
test run where bpj is installed would parse all of bpj again.

Fixtures:

- ``bpj_fake``: a :class:`bpj.testing.fake.FakeVertex` (JobService, ModelService and Operations in memory;
  jobs stay PENDING until the test moves them with ``fake.run`` / ``fake.finish``) with ``bpj.init`` pointed at
  it for the test. After the test, ``bpj.config.reset()`` forgets every ``bpj.init`` argument (environment
  variables still apply) and the fake is closed.
- ``bpj_local_stack``: the local stack (:class:`bpj.local.LocalStack`: the Vertex emulator running real
  models, GCS, BigQuery), started once per session, with ``bpj.init`` pointed at it (gRPC) for each test that
  uses it and reset after. Call ``bpj_local_stack.init(transport="rest")`` in a test to use REST.

Under hypothesis's ``@given`` a fixture is made once for all the examples of a test, so a fake that keeps
jobs from one example to the next would make examples depend on each other: there, make a fresh fake per
example with ``with bpj.testing.fake_vertex() as fake:`` inside the test.

The plugin imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bpj.local.stack import LocalStack
    from bpj.testing.fake import FakeVertex


@pytest.fixture
def bpj_fake() -> Iterator[FakeVertex]:
    """A FakeVertex that bpj's calls reach, for one test."""
    from bpj.testing import fake_vertex

    with fake_vertex() as fake:
        yield fake


@pytest.fixture(scope="session")
def _bpj_local_stack_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("bpj-local-stack")) as stack:
        yield stack


@pytest.fixture
def bpj_local_stack(_bpj_local_stack_session: LocalStack) -> Iterator[LocalStack]:
    """The session's LocalStack, with bpj.init pointed at it (gRPC) for this test."""
    from bpj import config

    _bpj_local_stack_session.init()
    try:
        yield _bpj_local_stack_session
    finally:
        config.reset()
