"""What the Vertex emulator security tests share: the project, a predictor, a job with one URI field set, and a
watch on everything outside the data dir."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import strategies as st

from bpj import types
from tests.local.conftest import SKLEARN_IMAGE

PROJECT = "bpj-local"
PARENT = f"projects/{PROJECT}/locations/us-central1"
PREDICTOR = "class P:\n    def load(self, d): pass\n    def predict(self, body): return body['instances']\n"
SEGMENT = st.text(st.sampled_from("abcxyz019-_"), min_size=1, max_size=8)


def listing(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


class Outside:
    """What exists outside the data dir: the entries of its parent (the pytest base temp dir) and everything
    under the sentinel directory."""

    def __init__(self, stack, sentinel: Path) -> None:
        self.parent = Path(stack.root).resolve().parent
        self.sentinel = sentinel
        self.before = self.take()

    def take(self) -> tuple[set[str], set[str]]:
        return set(os.listdir(self.parent)), listing(self.sentinel)

    def unchanged(self) -> None:
        assert self.take() == self.before


def a_job(field: str, value: str) -> types.BatchPredictionJob:
    """A job whose ``field`` (a key of the tests' FIELDS) holds ``value``; every other field is valid, but its
    model does not exist, so nothing runs even if the emulator took it."""
    job = types.BatchPredictionJob(display_name="hostile")
    if field == "unmanaged_artifact_uri":
        job.unmanaged_container_model.artifact_uri = value
        job.unmanaged_container_model.container_spec.image_uri = SKLEARN_IMAGE
    else:
        job.model = f"{PARENT}/models/does-not-exist"
    if field == "bigquery_source":
        job.input_config.instances_format = "bigquery"
        job.input_config.bigquery_source.input_uri = value
    else:
        job.input_config.instances_format = "jsonl"
        job.input_config.gcs_source.uris.extend(["gs://bpj-in/ok.jsonl", value])
    if field == "bigquery_destination":
        job.output_config.predictions_format = "bigquery"
        job.output_config.bigquery_destination.output_uri = value
    else:
        job.output_config.predictions_format = "jsonl"
        job.output_config.gcs_destination.output_uri_prefix = (
            value if field == "gcs_destination_prefix" else "gs://bpj-out/run"
        )
    return job
