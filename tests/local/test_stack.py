"""Real batch prediction jobs on the local stack, driven through bpj's generated clients over gRPC and REST:
a scikit-learn model, every input format, GCS and BigQuery outputs, predictions checked against
``model.predict``, malformed lines in errors, cancel, delete through its operation."""

from __future__ import annotations

import gzip
import json
import struct

import pyarrow as pa
import pytest

from bpj import types
from tests.local.conftest import SKLEARN_IMAGE, S, joblib_bytes, wait_for

PROJECT = "bpj-local"
PARENT = f"projects/{PROJECT}/locations/us-central1"


@pytest.fixture(scope="module")
def model_name(stack, iris, clients):
    model, _ = iris
    for bucket in ("bpj-models", "bpj-in", "bpj-out"):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write("gs://bpj-models/iris/model.joblib", joblib_bytes(model))
    m = types.Model(display_name="iris", artifact_uri="gs://bpj-models/iris")
    m.container_spec.image_uri = SKLEARN_IMAGE
    op = clients[1].upload_model(types.UploadModelRequest(parent=PARENT, model=m))
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model


def run(clients, job):
    jobs = clients[0]
    created = jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
    )
    return wait_for(
        lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)), created.name
    )


def gcs_job(model_name, uris, fmt="jsonl", out="gs://bpj-out/run", **instance_config):
    job = types.BatchPredictionJob(display_name="t", model=model_name)
    job.input_config.instances_format = fmt
    job.input_config.gcs_source.uris.extend(uris)
    job.output_config.predictions_format = "jsonl"
    job.output_config.gcs_destination.output_uri_prefix = out
    for k, v in instance_config.items():
        if isinstance(v, list):
            getattr(job.instance_config, k).extend(v)
        else:
            setattr(job.instance_config, k, v)
    return job


def read_lines(stack, directory, prefix):
    out = []
    for uri in stack.gcs.list(f"{directory}/{prefix}_*"):
        out += [json.loads(line) for line in stack.gcs.read(uri).decode().splitlines() if line]
    return out


def test_jsonl_job_predicts_what_the_model_predicts(stack, iris, clients, model_name):
    model, rows = iris
    lines = [json.dumps(r) for r in rows] + ["{not json", '["a", "b", "c", "d"]']
    stack.gcs.write("gs://bpj-in/iris.jsonl", "\n".join(lines).encode())
    job = run(clients, gcs_job(model_name, ["gs://bpj-in/iris.jsonl"]))
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (len(rows), 2)
    assert job.model_version_id == "1"
    directory = job.output_info.gcs_output_directory
    assert directory.startswith("gs://bpj-out/run/prediction-iris-")
    predictions = read_lines(stack, directory, "predictions")
    expected = model.predict(rows).tolist()
    assert sorted((tuple(p["instance"]), p["prediction"]) for p in predictions) == sorted(
        (tuple(r), e) for r, e in zip(rows, expected, strict=True)
    )
    failures = read_lines(stack, directory, "errors")
    assert len(failures) == 2 and all(f["error"]["status"] == "INVALID_ARGUMENT" for f in failures)
    assert len(job.partial_failures) == 2


def test_a_job_runs_the_version_it_names(stack, iris, clients, model_name):
    from sklearn.dummy import DummyClassifier

    model, rows = iris
    always_two = DummyClassifier(strategy="constant", constant=2).fit(rows, model.predict(rows))
    stack.gcs.write("gs://bpj-models/iris-v2/model.joblib", joblib_bytes(always_two))
    m = types.Model(display_name="iris", artifact_uri="gs://bpj-models/iris-v2", version_aliases=["constant"])
    m.container_spec.image_uri = SKLEARN_IMAGE
    op = clients[1].upload_model(types.UploadModelRequest(parent=PARENT, model=m, parent_model=model_name))
    version = types.UploadModelResponse()
    op.response.Unpack(version)
    stack.gcs.write("gs://bpj-in/versions.jsonl", "\n".join(json.dumps(r) for r in rows[:40]).encode())
    expected = {
        f"{model_name}@{version.model_version_id}": [2] * 40,
        f"{model_name}@constant": [2] * 40,
        model_name: model.predict(rows[:40]).tolist(),  # the default version is still the first
    }
    for name, want in expected.items():
        job = run(clients, gcs_job(name, ["gs://bpj-in/versions.jsonl"], out="gs://bpj-out/versions"))
        assert job.state == S.JOB_STATE_SUCCEEDED, job.error
        got = read_lines(stack, job.output_info.gcs_output_directory, "predictions")
        assert sorted((tuple(p["instance"]), p["prediction"]) for p in got) == sorted(
            (tuple(r), w) for r, w in zip(rows[:40], want, strict=True)
        )
    clients[1].delete_model(types.DeleteModelRequest(name=f"{model_name}@{version.model_version_id}"))


def test_csv_and_key_field(stack, iris, clients, model_name):
    model, rows = iris
    header = "id,a,b,c,d"
    body = "\n".join(f"{i},{','.join(str(v) for v in r)}" for i, r in enumerate(rows))
    stack.gcs.write("gs://bpj-in/iris.csv", f"{header}\n{body}\n".encode())
    job = run(
        clients,
        gcs_job(model_name, ["gs://bpj-in/iris.csv"], fmt="csv", key_field="id", instance_type="array"),
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    predictions = read_lines(stack, job.output_info.gcs_output_directory, "predictions")
    expected = model.predict(rows).tolist()
    assert sorted((int(p["key"]), p["prediction"]) for p in predictions) == list(enumerate(expected))


def tfrecord(records: list[bytes]) -> bytes:
    import google_crc32c

    def masked(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out = b""
    for r in records:
        length = struct.pack("<Q", len(r))
        out += length + struct.pack("<I", masked(length)) + r + struct.pack("<I", masked(r))
    return out


def test_tf_record_gzip_instances_arrive_as_b64(stack, clients, model_name, tmp_path):
    stack.gcs.write("gs://bpj-in/data.tfrecord.gz", gzip.compress(tfrecord([b"\x00\x01", b"payload"])))
    job = run(clients, gcs_job(model_name, ["gs://bpj-in/data.tfrecord.gz"], fmt="tf-record-gzip"))
    # The iris model cannot predict raw bytes: both instances fail, so the job fails and says why.
    assert job.state == S.JOB_STATE_FAILED
    assert "All 2 instances failed" in job.error.message


def test_bigquery_in_and_out(stack, iris, clients, model_name):
    model, rows = iris
    tables = stack.tables
    tables.create_dataset(PROJECT, "src", exists_ok=True)
    schema = pa.schema([(c, pa.float64()) for c in "abcd"])
    tables.create_table(PROJECT, "src", "iris", schema, exists_ok=True)
    if not tables.num_rows(PROJECT, "src", "iris"):
        tables.append(
            PROJECT,
            "src",
            "iris",
            pa.Table.from_pylist([dict(zip("abcd", r, strict=True)) for r in rows], schema),
        )
    job = types.BatchPredictionJob(display_name="bq", model=model_name)
    job.input_config.instances_format = "bigquery"
    job.input_config.bigquery_source.input_uri = f"bq://{PROJECT}.src.iris"
    job.instance_config.instance_type = "array"
    job.output_config.predictions_format = "bigquery"
    job.output_config.bigquery_destination.output_uri = f"bq://{PROJECT}"
    done = run(clients, job)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    dataset = done.output_info.bigquery_output_dataset
    assert dataset.startswith(f"bq://{PROJECT}.prediction_iris_")
    assert done.output_info.bigquery_output_table == "predictions"
    name = dataset.removeprefix(f"bq://{PROJECT}.")
    table = pa.Table.from_batches(list(tables.scan(PROJECT, name, "predictions")))
    got = sorted(
        zip(
            *(table.column(c).to_pylist() for c in "abcd"),
            table.column("prediction").to_pylist(),
            strict=True,
        )
    )
    expected = sorted(
        (*r, json.loads(json.dumps(p))) for r, p in zip(rows, model.predict(rows).tolist(), strict=True)
    )
    assert [tuple(g[:4]) for g in got] == [tuple(e[:4]) for e in expected]
    assert [str(g[4]) for g in got] == [str(e[4]) for e in expected]


def test_bigquery_and_gcs_outputs_read_with_the_same_types(stack, iris, clients, model_name):
    """The same model's predictions have one Arrow type whichever the destination: the BigQuery table's
    ``prediction`` column is of the JSON type (marked so in the table schema and the Storage Read API's
    Arrow schema), which the reader parses as the GCS reader parses the JSONL files."""
    from bpj import outputs
    from bpj._gen.services.big_query_read import BigQueryReadClient
    from bpj.outputs.json_columns import is_json_field
    from bpj.transport.grpc import GrpcTransport

    model, rows = iris
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    stack.gcs.write("gs://bpj-in/same-types.jsonl", lines)
    to_gcs = run(clients, gcs_job(model_name, ["gs://bpj-in/same-types.jsonl"], out="gs://bpj-out/same"))
    job = gcs_job(model_name, ["gs://bpj-in/same-types.jsonl"])
    job.output_config.ClearField("gcs_destination")
    job.output_config.predictions_format = "bigquery"
    job.output_config.bigquery_destination.output_uri = f"bq://{PROJECT}"
    to_bq = run(clients, job)
    assert to_gcs.state == to_bq.state == S.JOB_STATE_SUCCEEDED, (to_gcs.error, to_bq.error)

    dataset = to_bq.output_info.bigquery_output_dataset.removeprefix("bq://")
    assert is_json_field(
        stack.tables.schema(PROJECT, dataset.split(".")[1], "predictions").field("prediction")
    )
    from_gcs = outputs.read_gcs(
        to_gcs.output_info.gcs_output_directory, endpoint=stack.gcs_endpoint
    ).to_arrow()
    transport = GrpcTransport(stack.bigquery_storage_endpoint)
    try:
        reader = outputs.read_bigquery(f"bq://{dataset}.predictions", client=BigQueryReadClient(transport))
        from_bq = reader.to_arrow()
    finally:
        transport.close()
    expected = model.predict(rows).tolist()
    assert from_gcs.schema.field("prediction").type == from_bq.schema.field("prediction").type == pa.int64()
    assert sorted(from_gcs.column("prediction").to_pylist()) == sorted(expected)
    assert sorted(from_bq.column("prediction").to_pylist()) == sorted(expected)
    assert from_gcs.to_pandas()["prediction"].dtype == from_bq.to_pandas()["prediction"].dtype


def test_missing_model_fails_the_job(stack, clients):
    stack.gcs.write("gs://bpj-in/one.jsonl", b"[1, 2, 3, 4]\n")
    job = run(clients, gcs_job(f"{PARENT}/models/404", ["gs://bpj-in/one.jsonl"]))
    assert job.state == S.JOB_STATE_FAILED
    assert job.error.code == 5 and "does not exist" in job.error.message


def test_missing_input_fails_the_job(stack, clients, model_name):
    job = run(clients, gcs_job(model_name, ["gs://bpj-in/nothing-here.jsonl"]))
    assert job.state == S.JOB_STATE_FAILED
    assert "nothing-here" in job.error.message


def test_cancel_ends_a_running_job_cancelled(stack, clients, model_name):
    jobs = clients[0]
    big = b"\n".join([b"[5.1, 3.5, 1.4, 0.2]"] * 200_000)
    stack.gcs.write("gs://bpj-in/big.jsonl", big)
    job = gcs_job(model_name, ["gs://bpj-in/big.jsonl"], out="gs://bpj-out/cancelled")
    job.manual_batch_tuning_parameters.batch_size = 8
    created = jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
    )
    get = lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n))  # noqa: E731
    wait_for(get, created.name, states={S.JOB_STATE_RUNNING})
    jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=created.name))
    done = wait_for(get, created.name)
    assert done.state == S.JOB_STATE_CANCELLED
    assert done.completion_stats.successful_count < 200_000
    op = jobs.delete_batch_prediction_job(types.DeleteBatchPredictionJobRequest(name=created.name))
    assert op.done
    with pytest.raises(Exception, match="does not exist"):
        get(created.name)
