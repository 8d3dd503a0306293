"""The official SDKs, unmodified, drive the local stack: google-cloud-aiplatform over REST and over gRPC with
TLS uploads a scikit-learn model and runs batch prediction jobs to SUCCEEDED, its ``iter_outputs`` reads the
predictions from GCS (google-cloud-storage) and BigQuery (google-cloud-bigquery), and the official BigQuery
Storage Read client reads the predictions table, resumed at an offset and split.

Nothing is patched: the SDKs find the stack through their documented knobs only (``aiplatform.init``'s
``api_endpoint``/``api_transport``/``credentials``, ``STORAGE_EMULATOR_HOST``, ``BIGQUERY_EMULATOR_HOST``,
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, ``client_options`` and a channel given to a transport).
``sync=True`` polls every 5 s, so the file runs three SDK jobs and no more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import grpc
import pyarrow as pa
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.aiplatform_v1.types import JobState
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

MODELS, INPUTS, OUTPUTS = "sdk-models", "sdk-in", "sdk-out"
ARTIFACT_URI = f"gs://{MODELS}/iris"
INSTANCES = f"gs://{INPUTS}/iris.jsonl"
BAD_LINE = "{not json"


@pytest.fixture(scope="module")
def env(official_env):
    return official_env


@pytest.fixture(scope="module")
def data(stack, iris):
    """The model artifact, the JSONL instances (plus one malformed line) and a BigQuery source table."""
    model, rows = iris
    for bucket in (MODELS, INPUTS, OUTPUTS):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write(f"{ARTIFACT_URI}/model.joblib", joblib_bytes(model))
    stack.gcs.write(INSTANCES, "\n".join([*(json.dumps(r) for r in rows), BAD_LINE]).encode())
    schema = pa.schema([(c, pa.float64()) for c in "abcd"])
    stack.tables.create_dataset(stack.project, "sdk_src", exists_ok=True)
    stack.tables.create_table(stack.project, "sdk_src", "iris", schema, exists_ok=True)
    table = pa.Table.from_pylist([dict(zip("abcd", r, strict=True)) for r in rows], schema)
    stack.tables.append(stack.project, "sdk_src", "iris", table)
    return model, rows


@pytest.fixture(scope="module")
def sdk(official_sdk, data):
    return official_sdk


@pytest.fixture(scope="module")
def uploaded(sdk):
    return sdk.Model.upload(
        display_name="iris-sdk", artifact_uri=ARTIFACT_URI, serving_container_image_uri=SKLEARN_IMAGE
    )


@pytest.fixture(scope="module")
def bq_job(stack, sdk, uploaded):
    """One BigQuery-in, BigQuery-out job, shared by the tests that read its predictions table."""
    return sdk.BatchPredictionJob.create(
        job_display_name="iris-sdk-bq",
        model_name=uploaded.resource_name,
        instances_format="bigquery",
        predictions_format="bigquery",
        bigquery_source=f"bq://{stack.project}.sdk_src.iris",
        bigquery_destination_prefix=f"bq://{stack.project}",
        sync=True,
    )


@pytest.fixture(scope="module")
def predictions_table(stack, bq_job):
    """(dataset id, table id) of the predictions the BigQuery job wrote, from its output_info."""
    assert bq_job.state == JobState.JOB_STATE_SUCCEEDED, bq_job.error
    dataset = bq_job.output_info.bigquery_output_dataset
    assert dataset.startswith(f"bq://{stack.project}.prediction_iris_sdk_")
    return dataset.removeprefix(f"bq://{stack.project}."), bq_job.output_info.bigquery_output_table


def expected_pairs(model, rows):
    return sorted((tuple(r), p) for r, p in zip(rows, model.predict(rows).tolist(), strict=True))


def jsonl(blob_bytes: bytes) -> list:
    return [json.loads(line) for line in blob_bytes.decode().splitlines() if line]


# -- google-cloud-aiplatform over REST ----------------------------------------------------------------------


def test_rest_upload_returns_a_model_the_sdk_can_get(stack, sdk, uploaded):
    assert uploaded.resource_name.startswith(f"projects/{stack.project}/locations/{stack.location}/models/")
    again = sdk.Model(uploaded.resource_name)
    assert again.display_name == "iris-sdk"
    assert again.uri == ARTIFACT_URI
    assert again.version_id == "1"
    assert "bigquery" in again.supported_input_storage_formats
    assert again.gca_resource.container_spec.image_uri == SKLEARN_IMAGE
    assert uploaded.resource_name in [m.resource_name for m in sdk.Model.list()]


def test_rest_gcs_job_outputs_equal_model_predict(stack, sdk, uploaded, data):
    model, rows = data
    job = sdk.BatchPredictionJob.create(
        job_display_name="iris-sdk-gcs",
        model_name=uploaded.resource_name,
        gcs_source=INSTANCES,
        gcs_destination_prefix=f"gs://{OUTPUTS}/rest",
        instances_format="jsonl",
        predictions_format="jsonl",
        sync=True,
    )
    assert job.state == JobState.JOB_STATE_SUCCEEDED, job.error
    assert job.completion_stats.successful_count == len(rows)
    assert job.completion_stats.failed_count == 1
    assert job.output_info.gcs_output_directory.startswith(f"gs://{OUTPUTS}/rest/prediction-iris-sdk-")

    blobs = {b.name.rsplit("/", 1)[1]: b.download_as_bytes() for b in job.iter_outputs()}
    assert any(n.startswith("predictions_") for n in blobs) and any(n.startswith("errors_") for n in blobs)
    predictions = [p for n, b in blobs.items() if n.startswith("predictions_") for p in jsonl(b)]
    got = sorted((tuple(p["instance"]), p["prediction"]) for p in predictions)
    assert got == expected_pairs(model, rows)
    failures = [f for n, b in blobs.items() if n.startswith("errors_") for f in jsonl(b)]
    assert [f["error"]["status"] for f in failures] == ["INVALID_ARGUMENT"]

    listed = sdk.BatchPredictionJob.list(filter='display_name="iris-sdk-gcs"')
    assert [j.resource_name for j in listed] == [job.resource_name]
    job.delete()
    assert job.resource_name not in [j.resource_name for j in sdk.BatchPredictionJob.list()]


def test_rest_bigquery_job_iter_outputs_reads_the_predictions(bq_job, predictions_table, data):
    model, rows = data
    assert predictions_table[1] == "predictions"
    # iter_outputs builds its own bigquery.Client: BIGQUERY_EMULATOR_HOST points it at the stack.
    first = list(bq_job.iter_outputs())
    assert len(first) == 100  # the SDK's default bq_max_results
    every = list(bq_job.iter_outputs(bq_max_results=1000))
    assert len(every) == len(rows)
    assert sorted((r["a"], r["b"], r["c"], r["d"]) for r in first) == sorted(
        (r["a"], r["b"], r["c"], r["d"]) for r in every[:100]
    )
    got = sorted(((r["a"], r["b"], r["c"], r["d"]), r["prediction"]) for r in every)
    assert got == expected_pairs(model, rows)  # prediction is of the JSON type: parsed by the client


# -- google-cloud-aiplatform over gRPC with TLS, in a fresh process -----------------------------------------

# grpc reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once, when the process first needs the default roots; whatever
# ran before in this process may already have done so, so this part runs in a process of its own.
GRPC_TLS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    project, location, endpoint, artifact_uri, image, source, destination = sys.argv[1:]
    aiplatform.init(project=project, location=location, api_endpoint=endpoint,
                    credentials=AnonymousCredentials())
    model = aiplatform.Model.upload(display_name="iris-grpc", artifact_uri=artifact_uri,
                                    serving_container_image_uri=image)
    job = aiplatform.BatchPredictionJob.create(
        job_display_name="iris-sdk-grpc", model_name=model.resource_name, gcs_source=source,
        gcs_destination_prefix=destination, instances_format="jsonl", predictions_format="jsonl", sync=True)
    outputs = {b.name: b.download_as_bytes().decode() for b in job.iter_outputs()}
    listed = [j.resource_name for j in aiplatform.BatchPredictionJob.list(filter='display_name="iris-sdk-grpc"')]
    result = {
        "transport": type(job.api_client._transport).__name__,
        "model": model.resource_name,
        "job_model": job.gca_resource.model,
        "state": job.state.name,
        "directory": job.output_info.gcs_output_directory,
        "outputs": outputs,
        "listed": listed,
        "job": job.resource_name,
    }
    print("RESULT " + json.dumps(result))
    """
)


def test_grpc_tls_job_with_certificate_trusted_through_the_environment(stack, env, data, tmp_path):
    model, rows = data
    script = tmp_path / "grpc_tls.py"
    script.write_text(GRPC_TLS_SCRIPT)
    child_env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": stack.tls_cert_path}
    args = [stack.project, stack.location, stack.grpc_tls_endpoint, ARTIFACT_URI, SKLEARN_IMAGE]
    args += [INSTANCES, f"gs://{OUTPUTS}/grpc"]
    done = subprocess.run(
        [sys.executable, str(script), *args], env=child_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    assert result["transport"] == "JobServiceGrpcTransport"
    assert result["state"] == "JOB_STATE_SUCCEEDED"
    assert result["job_model"] == result["model"]
    assert result["listed"] == [result["job"]]
    assert result["directory"].startswith(f"gs://{OUTPUTS}/grpc/prediction-iris-grpc-")
    predictions = [
        p
        for name, text in result["outputs"].items()
        if name.rsplit("/", 1)[1].startswith("predictions_")
        for p in jsonl(text.encode())
    ]
    got = sorted((tuple(p["instance"]), p["prediction"]) for p in predictions)
    assert got == expected_pairs(model, rows)


# -- google-cloud-bigquery and google-cloud-bigquery-storage on the predictions table -----------------------


@pytest.fixture(scope="module")
def bq(stack):
    client = bigquery.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.bigquery_endpoint},
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def read_client(stack):
    channel = grpc.insecure_channel(stack.bigquery_storage_endpoint)
    yield BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    channel.close()


def test_bigquery_list_rows_over_rest(stack, bq, predictions_table, data):
    model, rows = data
    dataset_id, table_id = predictions_table
    assert dataset_id in [d.dataset_id for d in bq.list_datasets()]
    assert table_id in [t.table_id for t in bq.list_tables(dataset_id)]
    table = bq.get_table(f"{stack.project}.{dataset_id}.{table_id}")
    assert [f.name for f in table.schema][:4] == list("abcd")
    assert "prediction" in [f.name for f in table.schema]
    assert table.num_rows == len(rows)

    iterator = bq.list_rows(table, page_size=40)
    listed = list(iterator)
    assert iterator.total_rows == len(rows)
    got = sorted(((r["a"], r["b"], r["c"], r["d"]), r["prediction"]) for r in listed)
    assert got == expected_pairs(model, rows)  # prediction is of the JSON type: parsed by the client

    some = list(bq.list_rows(table, selected_fields=[table.schema[0]], start_index=10, max_results=25))
    assert [r.values() for r in some] == [(r["a"],) for r in listed[10:35]]


def listed_as_storage_read_sends(bq, table: str) -> list[dict]:
    """The rows tabledata.list gives, with the JSON column ``prediction`` as the JSON text the Storage Read
    API sends (the official client parses it)."""
    return [{**dict(r.items()), "prediction": json.dumps(r["prediction"])} for r in bq.list_rows(table)]


def session_for(stack, read_client, predictions_table, **options):
    dataset_id, table_id = predictions_table
    requested = types.ReadSession(
        table=f"projects/{stack.project}/datasets/{dataset_id}/tables/{table_id}",
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(**options),
    )
    return read_client.create_read_session(
        parent=f"projects/{stack.project}", read_session=requested, max_stream_count=4
    )


def read_stream(read_client, session, name: str, offset: int = 0) -> pa.Table:
    """Every row of a stream from ``offset``: the Arrow IPC batches of the ReadRowsResponses, decoded here."""
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    responses = list(read_client.read_rows(name, offset=offset))
    batches = [
        pa.ipc.read_record_batch(pa.py_buffer(r.arrow_record_batch.serialized_record_batch), schema)
        for r in responses
    ]
    assert [b.num_rows for b in batches] == [r.row_count for r in responses]
    return pa.Table.from_batches(batches, schema)


def test_storage_read_api_reads_resumes_and_splits(stack, bq, read_client, predictions_table, data):
    _, rows = data
    dataset_id, table_id = predictions_table
    listed = listed_as_storage_read_sends(bq, f"{stack.project}.{dataset_id}.{table_id}")

    session = session_for(stack, read_client, predictions_table)
    assert session.streams and session.data_format == types.DataFormat.ARROW
    tables = [read_stream(read_client, session, s.name) for s in session.streams]
    whole = pa.concat_tables(tables)
    assert whole.num_rows == len(rows)
    assert whole.to_pylist() == listed  # streams in order cover the table in the order REST lists it

    # ReadRows resumed at an offset serves the rest of the stream, as a reader reconnecting would ask.
    first = session.streams[0].name
    full = tables[0]
    offset = full.num_rows // 3
    assert offset > 0
    assert read_stream(read_client, session, first, offset).to_pylist() == full.slice(offset).to_pylist()

    # SplitReadStream: the primary and the remainder together are the stream, in order.
    split = read_client.split_read_stream(request=types.SplitReadStreamRequest(name=first, fraction=0.5))
    primary = read_stream(read_client, session, split.primary_stream.name)
    remainder = read_stream(read_client, session, split.remainder_stream.name)
    assert primary.num_rows and remainder.num_rows
    assert primary.to_pylist() + remainder.to_pylist() == full.to_pylist()


def test_storage_read_api_selected_fields_and_row_restriction(stack, bq, read_client, predictions_table):
    dataset_id, table_id = predictions_table
    listed = listed_as_storage_read_sends(bq, f"{stack.project}.{dataset_id}.{table_id}")
    session = session_for(
        stack, read_client, predictions_table, selected_fields=["a", "prediction"], row_restriction="a > 6.0"
    )
    got = pa.concat_tables(read_stream(read_client, session, s.name) for s in session.streams)
    assert got.column_names == ["a", "prediction"]
    want = [{"a": r["a"], "prediction": r["prediction"]} for r in listed if r["a"] > 6.0]
    assert want and got.to_pylist() == want
