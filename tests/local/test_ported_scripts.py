"""Scripts written for the official SDK run unchanged with ``import bpj as aiplatform``.

Each script below is what a user writes against google-cloud-aiplatform's batch prediction surface. It runs
twice against the local stack, each time in a fresh interpreter: once as written (``from google.cloud import
aiplatform``, the control: it shows the script is valid official code) and once with only that import line
changed to ``import bpj as aiplatform``. Both runs must pass.

A script finds the stack the way a user's script would: ``aiplatform.init(project=, location=,
api_endpoint=, api_transport="rest", credentials=AnonymousCredentials(), staging_bucket=)`` and, in the
environment, ``STORAGE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` only (plus PATH and HOME). Its settings
are literals written at its top. The official SDK's gRPC transport always dials TLS, so the scripts use its
REST transport (the official gRPC path is covered by tests/local/test_official_sdk.py).

The official ``sync=True`` and ``wait()`` poll every 5 s, so each script runs at most one job of its own; the
models, inputs and the jobs the list/delete script finds are made once per module, through bpj's generated
clients. The batch_predict script uploads a version that is not the model's default and predicts with it:
a job that named the bare model would run the default version instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from bpj import types
from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes, wait_for

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_IMPORT = "from google.cloud import aiplatform"
IMPORTS = {"official": OFFICIAL_IMPORT, "bpj": "import bpj as aiplatform"}
MODELS, INPUTS, OUTPUTS, STAGING = "ported-models", "ported-in", "ported-out", "ported-staging"
DATASET = "ported_src"
MODEL_DISPLAY_NAME = "ported-iris"

# The top of every script: its imports, then its settings (written in by render()), then init.
PRELUDE = f"""\
from google.auth.credentials import AnonymousCredentials
{OFFICIAL_IMPORT}

$SETTINGS
aiplatform.init(
    project=PROJECT,
    location=LOCATION,
    api_endpoint=API_ENDPOINT,
    api_transport="rest",
    credentials=AnonymousCredentials(),
    staging_bucket=STAGING_BUCKET,
)
"""

SCRIPTS = {
    # 1. create with a model name, sync=True, then the output files through iter_outputs.
    "create_and_iter_outputs": """
        import json
        from datetime import datetime

        job = aiplatform.BatchPredictionJob.create(
            job_display_name=f"ported-gcs-{RUN}",
            model_name=MODEL_NAME,
            gcs_source=INSTANCES,
            gcs_destination_prefix=f"{OUTPUT_PREFIX}/gcs-{RUN}",
            sync=True,
        )
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        print(f"{job.resource_name} created {job.create_time.isoformat()}")
        assert datetime.fromisoformat(job.create_time.isoformat()).tzinfo is not None
        assert job.output_info.gcs_output_directory.startswith(f"{OUTPUT_PREFIX}/gcs-{RUN}/prediction-")

        predictions = []
        for blob in job.iter_outputs():
            if blob.name.rsplit("/", 1)[-1].startswith("predictions_"):
                predictions += [json.loads(line) for line in blob.download_as_text().splitlines() if line]
        assert len(predictions) == len(EXPECTED), len(predictions)
        assert sorted([p["instance"], p["prediction"]] for p in predictions) == EXPECTED
        assert job.completion_stats.successful_count == len(EXPECTED)
        """,
    # 2. Model by id and from Model.list, a new version that is not the default, batch_predict(sync=False)
    #    on it: the job runs that version (the official SDK sends the Model's versioned name).
    "model_batch_predict": """
        model = aiplatform.Model(MODEL_ID)
        assert model.resource_name == MODEL_NAME, model.resource_name
        assert model.versioned_resource_name == f"{MODEL_NAME}@{model.version_id}"
        listed = aiplatform.Model.list(filter=f'display_name="{MODEL_DISPLAY_NAME}"')
        assert [m.resource_name for m in listed] == [MODEL_NAME]
        assert listed[0].version_id == model.version_id

        candidate = aiplatform.Model.upload(
            display_name=MODEL_DISPLAY_NAME,
            parent_model=listed[0].resource_name,
            is_default_version=False,
            version_aliases=[f"candidate-{RUN}"],
            artifact_uri=ARTIFACT_URI,
            serving_container_image_uri=SERVING_IMAGE,
        )
        assert candidate.resource_name == MODEL_NAME, candidate.resource_name
        assert candidate.version_id != model.version_id
        assert aiplatform.Model(MODEL_ID).version_id == model.version_id  # still the default
        candidate = aiplatform.Model(MODEL_ID, version=f"candidate-{RUN}")

        job = candidate.batch_predict(
            job_display_name=f"ported-batch-predict-{RUN}",
            gcs_source=[INSTANCES],
            instances_format="jsonl",
            gcs_destination_prefix=f"{OUTPUT_PREFIX}/batch-predict-{RUN}",
            predictions_format="jsonl",
            sync=False,
        )
        job.wait_for_resource_creation()
        print(f"created {job.resource_name}")
        assert job.resource_name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/")
        job.wait()
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        assert job.gca_resource.model == candidate.versioned_resource_name, job.gca_resource.model
        assert job.gca_resource.model_version_id == candidate.version_id, job.gca_resource.model_version_id
        assert job.completion_stats.successful_count == len(EXPECTED)
        """,
    # 3. list, get by name and by id, delete (sync and not), NotFound afterwards.
    "list_get_delete": """
        import google.api_core.exceptions

        ours = f'labels.ported_run="{RUN}"'
        jobs = aiplatform.BatchPredictionJob.list(filter=ours, order_by="create_time desc")
        assert len(jobs) == 2, jobs
        assert [j.display_name for j in jobs] == [f"ported-list-{RUN}-2", f"ported-list-{RUN}-1"]
        newest, oldest = jobs[0], jobs[1]

        job = aiplatform.BatchPredictionJob(newest.resource_name)
        assert job.display_name == newest.display_name
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        assert job.create_time > oldest.create_time
        job.delete()

        other = aiplatform.BatchPredictionJob(oldest.name)
        assert other.resource_name == oldest.resource_name
        other.delete(sync=False)
        other.wait()

        for name in (newest.resource_name, oldest.resource_name):
            try:
                aiplatform.BatchPredictionJob(name)
            except google.api_core.exceptions.NotFound as e:
                print(f"deleted: {e}")
            else:
                raise AssertionError(f"{name} was deleted but is still there")
        assert len(aiplatform.BatchPredictionJob.list(filter=ours)) == 0
        """,
    # 4. A job whose model cannot load fails: RuntimeError, and the job says why.
    "failed_job_raises_runtime_error": """
        name = f"ported-broken-{RUN}"
        try:
            aiplatform.BatchPredictionJob.create(
                job_display_name=name,
                model_name=BROKEN_MODEL_NAME,
                gcs_source=INSTANCES,
                gcs_destination_prefix=f"{OUTPUT_PREFIX}/broken-{RUN}",
                sync=True,
            )
        except RuntimeError as e:
            message = str(e)
        else:
            raise AssertionError("a job on a model that cannot load succeeded")
        print(f"failed as expected: {message}")
        assert "cannot load" in message, message

        [job] = aiplatform.BatchPredictionJob.list(filter=f'display_name="{name}"')
        assert job.state.name == "JOB_STATE_FAILED", job.state
        assert "cannot load" in job.error.message, job.error
        """,
    # 5. BigQuery in and out, a Model object as model_name, the predictions table through iter_outputs.
    "bigquery_in_and_out": """
        model = aiplatform.Model(MODEL_NAME)
        job = aiplatform.BatchPredictionJob.create(
            job_display_name=f"ported-bq-{RUN}",
            model_name=model,
            instances_format="bigquery",
            predictions_format="bigquery",
            bigquery_source=BQ_SOURCE,
            bigquery_destination_prefix=f"bq://{PROJECT}",
            sync=True,
        )
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        assert job.gca_resource.model == model.versioned_resource_name, job.gca_resource.model
        assert job.output_info.bigquery_output_dataset.startswith(f"bq://{PROJECT}.prediction_")

        rows = job.iter_outputs()  # a google.cloud.bigquery RowIterator of at most 100 rows
        first = list(rows)
        assert len(first) == 100, len(first)
        assert rows.total_rows == len(EXPECTED), rows.total_rows
        every = list(job.iter_outputs(bq_max_results=1000))
        assert len(every) == len(EXPECTED), len(every)
        got = sorted([[r["a"], r["b"], r["c"], r["d"]], int(r["prediction"])] for r in every)
        assert got == EXPECTED
        """,
    # 6. A Gemini batch job (the stack answers with its stand-in, which says what it is), read back request
    # for request through iter_outputs' blobs.
    "gemini_batch_job": """
        import json

        job = aiplatform.BatchPredictionJob.create(
            job_display_name=f"ported-gemini-{RUN}",
            model_name="publishers/google/models/gemini-2.0-flash-001",
            gcs_source=GEMINI_REQUESTS,
            gcs_destination_prefix=f"{OUTPUT_PREFIX}/gemini-{RUN}",
            sync=True,
        )
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        lines = []
        for blob in job.iter_outputs():
            if blob.name.endswith(".jsonl"):
                lines += [json.loads(line) for line in blob.download_as_text().splitlines() if line]
        assert sorted(json.dumps(line["request"], sort_keys=True) for line in lines) == GEMINI_SENT
        for line in lines:
            assert line["status"] == "", line["status"]
            text = line["response"]["candidates"][0]["content"]["parts"][0]["text"]
            assert "bpj local stand-in" in text and "not a real model" in text, text
        """,
}


def render(body: str, run: str, settings: dict[str, object]) -> str:
    """The script as the user wrote it (``run`` "official") or with only its import line changed ("bpj")."""
    lines = "".join(f"{k} = {v!r}\n" for k, v in {"RUN": run, **settings}.items())
    script = PRELUDE.replace("$SETTINGS", lines) + textwrap.dedent(body)
    assert script.count(OFFICIAL_IMPORT) == 1
    return script.replace(OFFICIAL_IMPORT, IMPORTS[run])


def upload(stack, models, display_name: str, artifact: bytes) -> str:
    """Upload ``artifact`` as model.joblib of a new model; its resource name."""
    artifact_uri = f"gs://{MODELS}/{display_name}"
    stack.gcs.write(f"{artifact_uri}/model.joblib", artifact)
    model = types.Model(display_name=display_name, artifact_uri=artifact_uri)
    model.container_spec.image_uri = SKLEARN_IMAGE
    parent = f"projects/{stack.project}/locations/{stack.location}"
    op = models.upload_model(types.UploadModelRequest(parent=parent, model=model))
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model


def list_jobs_to_find(stack, jobs, model_name: str, instances: str) -> None:
    """Two finished jobs per run, labelled with it, for the list/get/delete script."""
    parent = f"projects/{stack.project}/locations/{stack.location}"
    for run in IMPORTS:
        for n in (1, 2):
            job = types.BatchPredictionJob(display_name=f"ported-list-{run}-{n}", model=model_name)
            job.labels["ported_run"] = run
            job.input_config.instances_format = "jsonl"
            job.input_config.gcs_source.uris.append(instances)
            job.output_config.predictions_format = "jsonl"
            job.output_config.gcs_destination.output_uri_prefix = f"gs://{OUTPUTS}/list-{run}"
            created = jobs.create_batch_prediction_job(
                types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
            )
            done = wait_for(
                lambda name: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name)),
                created.name,
            )
            assert done.state == types.JobState.JOB_STATE_SUCCEEDED, done.error


@pytest.fixture(scope="module")
def settings(stack, iris):
    """The settings every script starts with: the stack's endpoint, models, inputs and what to expect."""
    from bpj._gen.services.job_service import JobServiceClient
    from bpj._gen.services.model_service import ModelServiceClient
    from bpj.transport.grpc import GrpcTransport

    model, rows = iris
    for bucket in (MODELS, INPUTS, OUTPUTS, STAGING):
        stack.gcs.create_bucket(bucket)
    instances = f"gs://{INPUTS}/iris.jsonl"
    stack.gcs.write(instances, "\n".join(json.dumps(r) for r in rows).encode())
    schema = pa.schema([(c, pa.float64()) for c in "abcd"])
    stack.tables.create_dataset(stack.project, DATASET)
    stack.tables.create_table(stack.project, DATASET, "iris", schema)
    table = pa.Table.from_pylist([dict(zip("abcd", r, strict=True)) for r in rows], schema)
    stack.tables.append(stack.project, DATASET, "iris", table)
    prompts = [
        {"contents": [{"role": "user", "parts": [{"text": f"Name this iris: {r}"}]}]} for r in rows[:20]
    ]
    gemini_requests = f"gs://{INPUTS}/gemini.jsonl"
    stack.gcs.write(gemini_requests, "".join(json.dumps({"request": p}) + "\n" for p in prompts).encode())

    # bpj's generated clients, for the set-up only (closed before any script runs).
    with contextlib.closing(GrpcTransport(stack.api_endpoint)) as transport:
        models = ModelServiceClient(transport)
        model_name = upload(stack, models, MODEL_DISPLAY_NAME, joblib_bytes(model))
        broken_model_name = upload(stack, models, "ported-broken", b"\x00not a joblib file")
        list_jobs_to_find(stack, JobServiceClient(transport), model_name, instances)
    return {
        "PROJECT": stack.project,
        "LOCATION": stack.location,
        "API_ENDPOINT": stack.rest_endpoint,
        "STAGING_BUCKET": f"gs://{STAGING}",
        "MODEL_DISPLAY_NAME": MODEL_DISPLAY_NAME,
        "ARTIFACT_URI": f"gs://{MODELS}/{MODEL_DISPLAY_NAME}",
        "SERVING_IMAGE": SKLEARN_IMAGE,
        "MODEL_NAME": model_name,
        "MODEL_ID": model_name.rsplit("/", 1)[-1],
        "BROKEN_MODEL_NAME": broken_model_name,
        "INSTANCES": instances,
        "OUTPUT_PREFIX": f"gs://{OUTPUTS}",
        "BQ_SOURCE": f"bq://{stack.project}.{DATASET}.iris",
        "EXPECTED": sorted([r, p] for r, p in zip(rows, model.predict(rows).tolist(), strict=True)),
        "GEMINI_REQUESTS": gemini_requests,
        "GEMINI_SENT": sorted(json.dumps(p, sort_keys=True) for p in prompts),
    }


def run_script(path: Path, env: dict[str, str], timeout: float = 90.0) -> tuple[int, str]:
    """Run ``path`` in a fresh interpreter; (exit status, its output). One that hangs is stopped with
    SIGABRT, which faulthandler (``-X faulthandler``, no change to the script) answers with every thread's
    stack, and fails the test with it."""
    command = [sys.executable, "-X", "faulthandler", str(path)]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        try:
            output, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGABRT)
            try:
                output, _ = child.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                output, _ = child.communicate()
            pytest.fail(f"{path.name} did not finish in {timeout}s:\n{output[-8000:]}")
    return child.returncode, output


@pytest.mark.parametrize("run", list(IMPORTS))
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_script_runs_unchanged(stack, settings, script, run, tmp_path):
    path = tmp_path / f"{script}_{run}.py"
    path.write_text(render(SCRIPTS[script], run, settings))
    # What a user's shell has, and the emulator variables: nothing else of this process leaks in.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "STORAGE_EMULATOR_HOST": stack.gcs_endpoint,
        "BIGQUERY_EMULATOR_HOST": stack.bigquery_endpoint,
    }
    status, output = run_script(path, env)
    assert status == 0, f"the {run} run of {script} failed:\n{output[-8000:]}"
