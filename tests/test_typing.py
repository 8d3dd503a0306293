"""What mypy sees of ``bpj.types`` in a user's code: the generated message classes, never Any.

mypy runs in a subprocess on a small script, with bpj found the way an installed wheel is (a directory on
the path with ``bpj/py.typed``; the editable install's import hook is invisible to mypy) and no
configuration of this repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIPLATFORM = "bpj._gen.google.cloud.aiplatform.v1"
BIGQUERY = "bpj._gen.google.cloud.bigquery.storage.v1"

SCRIPT = """
import bpj.types
from bpj import types
from bpj.types import Model

job = bpj.types.BatchPredictionJob(display_name="nightly", labels={"team": "ml"})
job.input_config.gcs_source.uris.append("gs://bucket/in.jsonl")
reveal_type(job)
reveal_type(job.display_name)
reveal_type(job.input_config)
reveal_type(job.input_config.gcs_source.uris)
reveal_type(job.labels["team"])
reveal_type(job.create_time)
reveal_type(Model())
reveal_type(types.ReadSession.TableReadOptions())
reveal_type(types.Status().code)

job.display_name = 3
types.NoSuchMessage
job.no_such_field
"""

REVEALED = [
    f"{AIPLATFORM}.batch_prediction_job_pb2.BatchPredictionJob",
    "str",
    f"{AIPLATFORM}.batch_prediction_job_pb2.BatchPredictionJob.InputConfig",
    "google.protobuf.internal.containers.RepeatedScalarFieldContainer[str]",
    "str",
    "google.protobuf.timestamp_pb2.Timestamp",
    f"{AIPLATFORM}.model_pb2.Model",
    f"{BIGQUERY}.stream_pb2.ReadSession.TableReadOptions",
    "int",
]


def run_mypy(tmp_path: Path, script: str) -> list[str]:
    (tmp_path / "user.py").write_text(textwrap.dedent(script))
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", ".cache", "--strict"]
        + ["--show-error-codes", "--no-pretty", "--no-error-summary", "user.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


def test_bpj_types_are_the_generated_classes_for_mypy(tmp_path):
    lines = run_mypy(tmp_path, SCRIPT)
    revealed = [m[1] for line in lines if (m := re.search(r'note: Revealed type is "(.*)"', line))]
    # older mypy releases spell str "builtins.str"
    assert [re.sub(r"\bbuiltins\.", "", r) for r in revealed] == REVEALED, lines
    assert not any("Any" in r for r in revealed), revealed
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 3, lines
    assert "Incompatible types in assignment" in errors[0] and "[assignment]" in errors[0]
    assert 'Module has no attribute "NoSuchMessage"' in errors[1]
    assert '"BatchPredictionJob" has no attribute "no_such_field"' in errors[2]


FACES = """
import bpj

bpj.init(project="p", location="us-central1", api_transport="rest")
job = bpj.BatchPredictionJob("123")
reveal_type(job.state)
reveal_type(job.state.name)
reveal_type(job.gca_resource)
reveal_type(job.create_time)
reveal_type(job.outputs())
reveal_type(bpj.BatchPredictionJob.list())
reveal_type(bpj.BatchPredictionJob.list(lazy=True))
reveal_type(bpj.Model.list(filter='display_name="iris"'))
reveal_type(bpj.init)

bpj.init(projekt="p")
job.state.nmae
"""

FACES_REVEALED = [
    "bpj.states.JobState",
    "str",
    f"{AIPLATFORM}.batch_prediction_job_pb2.BatchPredictionJob",
    "Union[datetime.datetime, None]",
    "Union[bpj.outputs.gcs.GcsReader, bpj.outputs.bigquery.BigQueryReader]",
    "list[bpj.jobs.BatchPredictionJob]",
    "typing.Iterator[bpj.jobs.BatchPredictionJob]",
    "list[bpj.models.Model]",
]


def test_the_job_faces_are_typed_for_mypy(tmp_path):
    lines = run_mypy(tmp_path, FACES)
    revealed = [m[1] for line in lines if (m := re.search(r'note: Revealed type is "(.*)"', line))]
    normal = [
        re.sub(r"\bbuiltins\.", "", r).replace("datetime.datetime | None", "Union[datetime.datetime, None]")
        for r in revealed
    ]
    normal = [re.sub(r"^(\S+) \| (\S+)$", r"Union[\1, \2]", r) for r in normal]
    assert normal[: len(FACES_REVEALED)] == FACES_REVEALED, lines
    assert "project: str | None" in revealed[-1] or "project: Union[str, None]" in revealed[-1], revealed[-1]
    assert not any(r == "Any" for r in revealed), revealed
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 2 and "projekt" in errors[0] and "nmae" in errors[1], lines
