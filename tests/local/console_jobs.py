"""Jobs for the console's tests: custom predictors that echo, fail, or wait at a gate the test opens.

A ``{"gate": "g1"}`` instance makes the echo predictor wait until the file ``g1`` exists in the gate folder, so
a test sees a job part-way through (with the stack's ``executor.progress_interval`` at 0, every answered
message of batches is saved) without any timing assumption.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from bpj import types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj.transport.base import WithMetadata
from bpj.transport.grpc import GrpcTransport
from tests.local.conftest import wait_for

ECHO = """
    import os
    import time

    class Predictor:
        def load(self, path):
            pass

        def predict(self, body):
            for instance in body["instances"]:
                if isinstance(instance, dict) and "gate" in instance:
                    while not os.path.exists(os.path.join({gates!r}, instance["gate"])):
                        time.sleep(0.02)
            return {{"predictions": body["instances"]}}
"""
BROKEN = """
    class Predictor:
        def load(self, path):
            raise RuntimeError({message!r})

        def predict(self, body):
            return {{"predictions": body["instances"]}}
"""


class ConsoleJobs:
    """Upload predictors to a stack and run jobs on them, through its gRPC API."""

    def __init__(self, stack: Any, gates: Path) -> None:
        self.stack = stack
        self.gates = gates
        self.transport: Any = GrpcTransport(stack.api_endpoint)
        if stack.token:
            self.transport = WithMetadata(self.transport, [("authorization", f"Bearer {stack.token}")])
        self.jobs = JobServiceClient(self.transport)
        self.models = ModelServiceClient(self.transport)
        self.parent = f"projects/{stack.project}/locations/{stack.location}"
        for bucket in ("console-models", "console-in", "console-out"):
            stack.gcs.create_bucket(bucket)
        self.echo = self.upload("echo", ECHO.format(gates=str(gates)))

    def upload(self, name: str, source: str) -> str:
        uri = f"gs://console-models/{name}"
        self.stack.gcs.write(f"{uri}/predictor.py", textwrap.dedent(source).encode())
        m = types.Model(display_name=name, artifact_uri=uri)
        m.container_spec.image_uri = "europe-docker.pkg.dev/p/serving/cpr:1"
        m.container_spec.env.append(types.EnvVar(name="BPJ_PREDICTOR", value="predictor:Predictor"))
        op = self.models.upload_model(types.UploadModelRequest(parent=self.parent, model=m))
        response = types.UploadModelResponse()
        op.response.Unpack(response)
        return response.model

    def create(
        self,
        display_name: str,
        lines: list[str],
        *,
        model: str | None = None,
        labels: dict[str, str] | None = None,
        batch_size: int = 1,
        bigquery: bool = False,
    ) -> str:
        """A job over ``lines`` (one jsonl line each, written as given: a malformed one is an error row),
        writing to GCS, or with ``bigquery`` to a new dataset of the stack's BigQuery."""
        source = f"gs://console-in/{len(list(self.stack.gcs.list('gs://console-in/*')))}.jsonl"
        self.stack.gcs.write(source, "".join(line + "\n" for line in lines).encode())
        j = types.BatchPredictionJob(display_name=display_name, model=model or self.echo, labels=labels or {})
        j.input_config.instances_format = "jsonl"
        j.input_config.gcs_source.uris.append(source)
        if bigquery:
            j.output_config.predictions_format = "bigquery"
            j.output_config.bigquery_destination.output_uri = f"bq://{self.stack.project}"
        else:
            j.output_config.predictions_format = "jsonl"
            j.output_config.gcs_destination.output_uri_prefix = "gs://console-out/run"
        j.manual_batch_tuning_parameters.batch_size = batch_size
        request = types.CreateBatchPredictionJobRequest(parent=self.parent, batch_prediction_job=j)
        return self.jobs.create_batch_prediction_job(request).name

    def get(self, name: str) -> Any:
        return self.jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))

    def wait(self, name: str, **kwargs: Any) -> Any:
        return wait_for(self.get, name, **kwargs)

    def open_gate(self, gate: str) -> None:
        (self.gates / gate).write_text("open")

    def close(self) -> None:
        self.transport.close()


def instances(n: int, **gates: int) -> list[str]:
    """``n`` jsonl lines ``[i, i]``; ``gates={"g1": 100}`` puts a ``{"gate": "g1"}`` instance at index 100."""
    at = {i: g for g, i in gates.items()}
    return [json.dumps({"gate": at[i]}) if i in at else json.dumps([i, i]) for i in range(n)]
