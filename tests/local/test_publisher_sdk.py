"""Gemini batch jobs on the local stack from the official SDKs, unmodified, and from bpj's own job face.

google-cloud-aiplatform's ``BatchPredictionJob.create(model_name="publishers/google/models/...")`` and
vertexai's ``batch_prediction.BatchPredictionJob.submit(...)`` run to SUCCEEDED over REST with anonymous
credentials (``STORAGE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` point the storage clients at the stack),
GCS and BigQuery alike; bpj's ``BatchPredictionJob.create`` does the same over gRPC and REST, and its
``outputs()`` reader gives the rows back. Every output is checked request for request against the stand-in.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.aiplatform_v1.types import JobState

from bpj.local.publisher import stand_in_response

GEMINI = "publishers/google/models/gemini-2.0-flash-001"
MODEL_ID = "gemini-2.0-flash-001"
IN, OUT = "pubsdk-in", "pubsdk-out"
REQUESTS = [{"contents": [{"role": "user", "parts": [{"text": f"tell me about {n}"}]}]} for n in range(5)]
LINES = [json.dumps({"key": f"k{i}", "request": r}) for i, r in enumerate(REQUESTS)]


@pytest.fixture(scope="module")
def env(official_env):
    return official_env


@pytest.fixture(scope="module")
def data(stack):
    for bucket in (IN, OUT):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write(f"gs://{IN}/requests.jsonl", "\n".join(LINES).encode())
    schema = pa.schema([("key", pa.string()), ("request", pa.string())])
    stack.tables.create_dataset(stack.project, "pubsdk_src", exists_ok=True)
    stack.tables.create_table(stack.project, "pubsdk_src", "requests", schema, exists_ok=True)
    rows = [{"key": f"k{i}", "request": json.dumps(r)} for i, r in enumerate(REQUESTS)]
    stack.tables.append(stack.project, "pubsdk_src", "requests", pa.Table.from_pylist(rows, schema))
    stack.tables.create_dataset(stack.project, "pubsdk_dst", exists_ok=True)


@pytest.fixture(scope="module")
def sdk(official_sdk, data):
    return official_sdk


@pytest.fixture(scope="module")
def bq(stack, env):
    client = bigquery.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.bigquery_endpoint},
    )
    yield client
    client.close()


def check_lines(lines):
    assert [line["key"] for line in lines] == [f"k{i}" for i in range(len(REQUESTS))]
    for line, request in zip(lines, REQUESTS, strict=True):
        assert line["status"] == "" and line["request"] == request
        assert line["response"] == stand_in_response(request, MODEL_ID)


def check_rows(rows):
    rows = sorted(rows, key=lambda r: r["key"])
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(len(REQUESTS))]
    for row, request in zip(rows, REQUESTS, strict=True):
        response = row["response"] if isinstance(row["response"], dict) else json.loads(row["response"])
        assert row["status"] == "" and response == stand_in_response(request, MODEL_ID)


def jsonl(data: bytes):
    return [json.loads(x) for x in data.decode().split("\n") if x]


def test_aiplatform_create_on_gemini_gcs(sdk):
    job = sdk.BatchPredictionJob.create(
        job_display_name="gemini-sdk-gcs",
        model_name=GEMINI,
        instances_format="jsonl",
        predictions_format="jsonl",
        gcs_source=f"gs://{IN}/requests.jsonl",
        gcs_destination_prefix=f"gs://{OUT}/aiplatform",
        sync=True,
    )
    assert job.state == JobState.JOB_STATE_SUCCEEDED, job.error
    assert job.completion_stats.successful_count == len(REQUESTS)
    blobs = {b.name.rsplit("/", 1)[1]: b.download_as_bytes() for b in job.iter_outputs()}
    assert list(blobs) == ["predictions.jsonl"]
    check_lines(jsonl(blobs["predictions.jsonl"]))


def test_aiplatform_create_on_gemini_bigquery(stack, sdk, bq):
    job = sdk.BatchPredictionJob.create(
        job_display_name="gemini-sdk-bq",
        model_name=GEMINI,
        instances_format="bigquery",
        predictions_format="bigquery",
        bigquery_source=f"bq://{stack.project}.pubsdk_src.requests",
        bigquery_destination_prefix=f"bq://{stack.project}.pubsdk_dst",
        sync=True,
    )
    assert job.state == JobState.JOB_STATE_SUCCEEDED, job.error
    info = job.output_info
    assert info.bigquery_output_dataset == f"bq://{stack.project}.pubsdk_dst"
    table = bq.get_table(f"{stack.project}.pubsdk_dst.{info.bigquery_output_table}")
    assert [f.name for f in table.schema] == ["key", "request", "status", "processed_time", "response"]
    assert table.schema[3].field_type == "TIMESTAMP"
    check_rows([dict(r.items()) for r in bq.list_rows(table)])


def submitted(job, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not job.has_ended:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job.refresh()
    return job


def test_vertexai_submit_on_gemini_gcs_and_bigquery(stack, sdk, bq):
    from vertexai.batch_prediction import BatchPredictionJob

    job = submitted(
        BatchPredictionJob.submit(
            source_model="gemini-2.0-flash-001",
            input_dataset=f"gs://{IN}/requests.jsonl",
            output_uri_prefix=f"gs://{OUT}/vertexai",
        )
    )
    assert job.has_succeeded, job.error
    assert job.model_name == GEMINI
    directory = job.output_location
    assert directory.startswith(f"gs://{OUT}/vertexai/prediction-model-")
    check_lines(jsonl(stack.gcs.read(f"{directory}/predictions.jsonl")))

    job = submitted(
        BatchPredictionJob.submit(
            source_model=GEMINI,
            input_dataset=f"bq://{stack.project}.pubsdk_src.requests",
            output_uri_prefix=f"bq://{stack.project}.pubsdk_dst",
        )
    )
    assert job.has_succeeded, job.error
    table = job.output_location  # the SDK names the table itself: predictions_<its timestamp>
    assert table.startswith("predictions_")
    check_rows([dict(r.items()) for r in bq.list_rows(f"{stack.project}.pubsdk_dst.{table}")])


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_bpj_create_on_gemini_reads_back_request_for_request(stack, data, transport):
    from bpj import config
    from bpj.jobs import BatchPredictionJob

    stack.init(transport=transport)
    try:
        job = BatchPredictionJob.create(
            job_display_name=f"gemini-bpj-{transport}",
            model_name=GEMINI,
            gcs_source=f"gs://{IN}/requests.jsonl",
            gcs_destination_prefix=f"gs://{OUT}/bpj-{transport}",
        )
        assert job.state == JobState.JOB_STATE_SUCCEEDED, job.error
        check_lines(list(job.outputs().records()))
        bq_job = BatchPredictionJob.create(
            job_display_name=f"gemini-bpj-bq-{transport}",
            model_name=f"projects/{stack.project}/locations/{stack.location}/{GEMINI}",
            instances_format="bigquery",
            predictions_format="bigquery",
            bigquery_source=f"bq://{stack.project}.pubsdk_src.requests",
            bigquery_destination_prefix=f"bq://{stack.project}",
        )
        assert bq_job.state == JobState.JOB_STATE_SUCCEEDED, bq_job.error
        check_rows(list(bq_job.outputs().records()))
    finally:
        config.reset()
