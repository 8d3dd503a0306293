"""Import behaviour, each case in a fresh interpreter: what ``import bpj`` loads, lazy ``bpj.types``, and
bpj beside the official libraries (whose message names are the same) in either import order."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(*parts: str) -> str:
    """Runs the parts of a script in a fresh interpreter; its assertions fail the test with its stderr."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# Modules loaded since `before` (a set of names taken at the start; a google-cloud-* .pth file may
# already have created the bare `google.cloud` namespace package at interpreter start-up).
HEAVY = """
import sys
before = set(sys.modules)

def heavy():
    def loaded(prefix):
        return [m for m in set(sys.modules) - before if m == prefix or m.startswith(prefix + ".")]
    return {
        "grpc": loaded("grpc"),
        "google.cloud": loaded("google.cloud"),
        "messages": loaded("bpj._gen.google"),
        "requests": loaded("requests"),
        "pyarrow": loaded("pyarrow"),
        "hypothesis": loaded("hypothesis"),
    }
"""


def test_import_bpj_is_light() -> None:
    run(
        HEAVY,
        """
        import bpj
        assert not any(heavy().values()), heavy()
        assert "types" in dir(bpj) and "__version__" in dir(bpj)
        """,
    )


def test_import_bpj_testing_is_light() -> None:
    run(
        HEAVY,
        """
        import bpj.testing
        assert not any(heavy().values()), heavy()
        """,
    )


def test_types_are_listed_without_loading_modules() -> None:
    run(
        HEAVY,
        """
        import bpj
        names = dir(bpj.types)
        assert {"BatchPredictionJob", "JobState", "ReadSession", "Model", "Operation"} <= set(names), names
        assert names == sorted(names)
        assert not any(heavy().values()), heavy()

        # One name loads its own module, not every message module.
        state = bpj.types.JobState
        assert state.Name(4) == "JOB_STATE_SUCCEEDED"
        assert "bpj._gen.google.cloud.aiplatform.v1.job_state_pb2" in sys.modules
        assert "bpj._gen.google.cloud.aiplatform.v1.batch_prediction_job_pb2" not in sys.modules
        assert "bpj._gen.google.cloud.bigquery.storage.v1.stream_pb2" not in sys.modules
        assert not heavy()["grpc"] and not heavy()["google.cloud"], heavy()

        try:
            bpj.types.NoSuchMessage
        except AttributeError:
            pass
        else:
            raise AssertionError("bpj.types.NoSuchMessage did not raise AttributeError")
        """,
    )


BPJ_FIRST = """
import bpj.types
Job, Session = bpj.types.BatchPredictionJob, bpj.types.ReadSession
"""
OFFICIAL_FIRST = """
from google.cloud import aiplatform_v1, bigquery_storage_v1
"""
CROSS = """
from google.cloud import aiplatform_v1, bigquery_storage_v1
from google.protobuf import descriptor_pool
import bpj.types
Job, Session = bpj.types.BatchPredictionJob, bpj.types.ReadSession

# The default pool holds the official descriptors, never bpj's.
default = descriptor_pool.Default()
for ours in (Job, Session):
    theirs = default.FindMessageTypeByName(ours.DESCRIPTOR.full_name)
    assert theirs is not ours.DESCRIPTOR

official_job = aiplatform_v1.BatchPredictionJob(
    name="projects/p/locations/us-central1/batchPredictionJobs/1",
    display_name="nightly",
    state=aiplatform_v1.JobState.JOB_STATE_RUNNING,
    labels={"team": "ml"},
)
job = Job.FromString(aiplatform_v1.BatchPredictionJob.serialize(official_job))
assert job.display_name == "nightly" and job.labels["team"] == "ml"
assert job.state == bpj.types.JobState.Value("JOB_STATE_RUNNING")
job.state = bpj.types.JobState.Value("JOB_STATE_SUCCEEDED")
back = aiplatform_v1.BatchPredictionJob.deserialize(job.SerializeToString())
assert back.state == aiplatform_v1.JobState.JOB_STATE_SUCCEEDED and back.name == official_job.name

official_session = bigquery_storage_v1.types.ReadSession(
    name="projects/p/locations/us/sessions/s",
    data_format=bigquery_storage_v1.types.DataFormat.ARROW,
    streams=[bigquery_storage_v1.types.ReadStream(name="projects/p/locations/us/sessions/s/streams/a")],
)
session = Session.FromString(bigquery_storage_v1.types.ReadSession.serialize(official_session))
assert session.streams[0].name.endswith("/streams/a")
assert session.data_format == bpj.types.DataFormat.Value("ARROW")
again = bigquery_storage_v1.types.ReadSession.deserialize(session.SerializeToString())
assert again == official_session
"""


@pytest.mark.parametrize("first", [BPJ_FIRST, OFFICIAL_FIRST], ids=["bpj-first", "official-first"])
def test_bpj_and_official_libraries_import_side_by_side(first: str) -> None:
    run(first + CROSS)
