"""Testing code that uses bpj, without the cloud: a complete example (the suite runs this file as it is).

The code under test is ``nightly()`` below: it submits a job, waits, and reports the counts. The tests drive
it against ``bpj.testing``'s FakeVertex, an in-memory Vertex AI that bpj's calls reach through
``bpj.init``: jobs stay PENDING until the test moves them (``fake.run``, ``fake.finish``), and errors can be
injected into any RPC (``fake.inject``).

- ``bpj_fake`` is a pytest fixture of ``bpj.testing.plugin`` (``-p bpj.testing.plugin``: this repository's
  pytest settings turn it on);
- under hypothesis's ``@given``, make a fresh fake per example with ``bpj.testing.fake_vertex()``.

Run it with ``pytest -p bpj.testing.plugin examples/test_with_fake.py``.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpj
from bpj.testing import fake_vertex


def nightly(source: str, labels: dict[str, str]) -> tuple[str, int, int]:
    """The code under test: one job over ``source``, waited for; (state, successful, failed)."""
    job = bpj.BatchPredictionJob.create(
        job_display_name="nightly",
        model_name="iris",
        gcs_source=source,
        gcs_destination_prefix="gs://example-out/nightly",
        labels=labels,
    )
    stats = job.completion_stats
    return job.state.name, stats.successful_count, stats.failed_count


def finish_when_created(fake, **counts) -> threading.Thread:
    """Play the service: end the first job made with these counts."""

    def play() -> None:
        while not fake.jobs():
            threading.Event().wait(0.01)
        fake.finish(fake.jobs()[0].name, bpj.types.JobState.JOB_STATE_SUCCEEDED, **counts)

    t = threading.Thread(target=play, daemon=True)
    t.start()
    return t


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(bpj.BatchPredictionJob, "poll_interval", 0.01)


def test_nightly_reports_the_counts(bpj_fake):
    player = finish_when_created(bpj_fake, successful=90, failed=10)
    assert nightly("gs://example-in/rows.jsonl", {"team": "ml"}) == ("JOB_STATE_SUCCEEDED", 90, 10)
    player.join()
    assert bpj_fake.calls["CreateBatchPredictionJob"] == 1
    assert bpj_fake.jobs()[0].labels["team"] == "ml"


def test_a_failed_job_is_a_runtime_error(bpj_fake):
    def fail() -> None:
        while not bpj_fake.jobs():
            threading.Event().wait(0.01)
        bpj_fake.finish(bpj_fake.jobs()[0].name, bpj.types.JobState.JOB_STATE_FAILED)

    threading.Thread(target=fail, daemon=True).start()
    with pytest.raises(RuntimeError, match="JOB_STATE_FAILED"):
        nightly("gs://example-in/rows.jsonl", {})


LABEL_VALUES = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)


@settings(max_examples=20, deadline=None)
@given(labels=st.dictionaries(st.sampled_from(["team", "run", "owner"]), LABEL_VALUES, max_size=3))
def test_every_label_reaches_the_job(labels):
    with fake_vertex() as fake:  # one fresh fake per example
        player = finish_when_created(fake, successful=1)
        nightly("gs://example-in/rows.jsonl", labels)
        player.join()
        sent = dict(fake.jobs()[0].labels)
        assert {k: sent[k] for k in labels} == labels
        assert len(fake.jobs()) == 1
