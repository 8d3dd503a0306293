"""bpj.models.Model against FakeVertex (calls counted by the server) and against the local stack over gRPC
and REST: upload an iris model, get it, list it, run a batch prediction on it to SUCCEEDED, delete it."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from bpj import errors, types
from bpj.clients import OperationsClient
from bpj.models import Model, wait_operation
from bpj.transport.memory import InMemoryTransport
from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

S = types.JobState


def upload(**kw):
    args = {
        "display_name": "iris",
        "artifact_uri": "gs://models/iris",
        "serving_container_image_uri": SKLEARN_IMAGE,
    }
    return Model.upload(**{**args, **kw})


# -- FakeVertex -----------------------------------------------------------------------------------------


def test_upload_sends_every_field_and_waits_for_the_operation(bpj_fake):
    model = upload(
        labels={"team": "vision", "größe": "klein"},
        description="a small model",
        serving_container_environment_variables={"BPJ_PREDICTOR": "mod:Cls", "N": 3},
        serving_container_command=["serve"],
        serving_container_args=["--port", "8080"],
        serving_container_ports=[8080],
        serving_container_predict_route="/predict",
        instance_schema_uri="gs://models/schema.yaml",
        model_id="iris-1",
        version_aliases=["stable"],
    )
    assert bpj_fake.calls["UploadModel"] == 1 and bpj_fake.calls["GetModel"] == 1
    stored = bpj_fake.vertex.model(model.resource_name)
    assert model.gca_resource == stored
    assert model.resource_name == f"{bpj_fake.parent}/models/iris-1"
    assert (model.name, model.project, model.location) == ("iris-1", "bpj-test", "us-central1")
    assert model.versioned_resource_name == f"{model.resource_name}@1"
    assert (model.display_name, model.description, model.version_id) == ("iris", "a small model", "1")
    assert model.labels == {"team": "vision", "größe": "klein"}
    assert model.artifact_uri == "gs://models/iris"
    spec = model.container_spec
    assert spec.image_uri == SKLEARN_IMAGE
    assert [(e.name, e.value) for e in spec.env] == [("BPJ_PREDICTOR", "mod:Cls"), ("N", "3")]
    assert list(spec.command) == ["serve"] and list(spec.args) == ["--port", "8080"]
    assert [p.container_port for p in spec.ports] == [8080] and spec.predict_route == "/predict"
    assert stored.predict_schemata.instance_schema_uri == "gs://models/schema.yaml"
    assert "jsonl" in model.supported_input_storage_formats
    assert isinstance(model.create_time, datetime) and model.create_time.tzinfo is not None
    assert model.update_time == model.create_time
    d = model.to_dict()
    assert d["displayName"] == "iris" and d["containerSpec"]["imageUri"] == SKLEARN_IMAGE
    calls = sum(bpj_fake.calls.values())
    model.display_name, model.labels, model.to_dict(), repr(model)
    assert sum(bpj_fake.calls.values()) == calls  # properties never call


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"display_name": "x" * 129}, "display_name"),
        ({"display_name": ""}, "display_name"),
        ({"labels": {"Team": "x"}}, "labels"),
        ({"labels": {"team": "X"}}, "labels"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"serving_container_image_uri": None}, "serving_container_image_uri"),
        ({"serving_container_image_uri": ""}, "serving_container_image_uri"),
        ({"artifact_uri": "/home/me/model"}, "artifact_uri"),
        ({"serving_container_ports": [0]}, "serving_container_ports"),
        ({"serving_container_command": "serve"}, "serving_container_command"),
        ({"serving_container_environment_variables": {"": "x"}}, "serving_container_environment_variables"),
        ({"explanation_parameters": {"nope": 1}}, "explanation_parameters"),
        ({"model_id": 7}, "model_id"),
        ({"project": "Bad Project"}, "project"),
    ],
)
def test_upload_checks_arguments_before_any_call(bpj_fake, kw, field):
    with pytest.raises(errors.UsageError, match=field):
        upload(**kw)
    assert sum(bpj_fake.calls.values()) == 0


def test_upload_default_display_name_as_the_official_sdk():
    # No server needed: a bad label fails after the display name was made up, before any call.
    with pytest.raises(errors.UsageError, match="labels"):
        Model.upload(serving_container_image_uri=SKLEARN_IMAGE, labels={"A": "b"})


def test_server_errors_name_the_rpc(bpj_fake):
    with pytest.raises(errors.InvalidArgument, match="model_id") as e:
        upload(model_id="-bad")
    assert e.value.rpc == "ModelService.UploadModel"


def test_upload_without_sync_waits_on_first_use(bpj_fake):
    model = upload(sync=False)
    assert repr(model).startswith("<bpj.Model uploading, operation projects/bpj-test/")
    assert bpj_fake.calls["GetModel"] == 0
    assert model.display_name == "iris"  # the first read waits for the operation
    assert bpj_fake.calls["GetModel"] == 1
    assert model.wait() is model and bpj_fake.calls["GetModel"] == 1


def test_get_by_id_full_name_and_version(bpj_fake):
    made = upload(model_id="m1")
    for args, kw in [
        (("m1",), {}),
        ((made.resource_name,), {}),
        (("m1@1",), {}),
        (("m1@default",), {}),
        (("m1",), {"version": "default"}),
        ((f"{made.resource_name}@1",), {}),
    ]:
        got = Model(*args, **kw)
        assert got.resource_name == made.resource_name and got == made
    assert Model("m1", version="default").versioned_resource_name == f"{made.resource_name}@1"
    with pytest.raises(errors.NotFound, match="m2"):
        Model("m2")
    with pytest.raises(errors.NotFound):
        Model("m1@7")
    calls = sum(bpj_fake.calls.values())
    for bad, field in [("no spaces", "model_name"), ("", "model_name"), ("m1@1", "version")]:
        with pytest.raises(errors.UsageError, match=field):
            Model(bad, version="2" if field == "version" else None)
    assert sum(bpj_fake.calls.values()) == calls


def test_model_in_another_project_and_location_goes_there(bpj_fake):
    with pytest.raises(errors.NotFound, match="projects/other/locations/europe-west4/models/1"):
        Model("projects/other/locations/europe-west4/models/1")
    with pytest.raises(errors.NotFound, match="projects/p2/locations/asia-east1/models/9"):
        Model("9", project="p2", location="asia-east1")


def test_list_is_a_list_or_lazy_paged_and_ordered_by_the_server(bpj_fake):
    for name in ["c", "a", "d", "b", "e"]:
        upload(display_name=name, labels={"kind": "vowel" if name in "ae" else "consonant"})
    bpj_fake.reset_calls()
    everything = Model.list(order_by="display_name desc", page_size=2)  # the official list: all pages
    assert isinstance(everything, list) and [m.display_name for m in everything] == ["e", "d", "c", "b", "a"]
    assert bpj_fake.calls["ListModels"] == 3
    bpj_fake.reset_calls()
    models = Model.list(order_by="display_name desc", page_size=2, lazy=True)
    assert bpj_fake.calls["ListModels"] == 0
    assert next(models).display_name == "e"
    assert bpj_fake.calls["ListModels"] == 1
    assert [m.display_name for m in models] == ["d", "c", "b", "a"]
    assert bpj_fake.calls["ListModels"] == 3 and bpj_fake.calls["GetModel"] == 0
    vowels = Model.list(filter='labels.kind="vowel"', order_by="display_name")
    assert [m.display_name for m in vowels] == ["a", "e"]
    with pytest.raises(errors.UsageError, match="page_size"):
        Model.list(page_size=0)
    with pytest.raises(errors.InvalidArgument, match="order_by"):
        Model.list(order_by="artifact_uri")


def test_refresh_and_delete_wait_for_the_operation(bpj_fake):
    model = upload()
    assert model.refresh().display_name == "iris"
    model.delete()
    assert bpj_fake.calls["DeleteModel"] == 1
    with pytest.raises(errors.NotFound):
        Model(model.resource_name)
    with pytest.raises(errors.NotFound, match="DeleteModel"):
        model.delete()


def test_batch_predict_delegates_to_create_with_the_versioned_name(bpj_fake):
    model = upload(model_id="iris")
    job = model.batch_predict(
        job_display_name="nightly",
        gcs_source=("gs://bpj-in/a.jsonl", "gs://bpj-in/b.jsonl"),
        gcs_destination_prefix="gs://out/run",
        machine_type="n1-standard-4",
        batch_size=16,
        labels={"team": "vision"},
        sync=False,
        instance_config={"instanceType": "array"},
    )
    stored = bpj_fake.job(job.resource_name)
    assert stored.model == f"{model.resource_name}@1" and stored.model_version_id == "1"
    assert list(stored.input_config.gcs_source.uris) == ["gs://bpj-in/a.jsonl", "gs://bpj-in/b.jsonl"]
    assert stored.dedicated_resources.machine_spec.machine_type == "n1-standard-4"
    assert stored.manual_batch_tuning_parameters.batch_size == 16
    assert stored.instance_config.instance_type == "array"
    assert stored.labels["team"] == "vision"
    unnamed = model.batch_predict(
        gcs_source="gs://bpj-in/a.jsonl", bigquery_destination_prefix="bq://p", sync=False
    )
    assert unnamed.display_name.startswith("BatchPredictionJob ")
    assert bpj_fake.job(unnamed.resource_name).output_config.predictions_format == "bigquery"
    with pytest.raises(errors.UsageError, match="gcs_source"):
        model.batch_predict(job_display_name="x", gcs_destination_prefix="gs://out", sync=False)


def test_batch_predict_sync_waits_for_the_job(bpj_fake):
    bpj_fake.auto = S.JOB_STATE_SUCCEEDED
    job = upload().batch_predict(
        job_display_name="n", gcs_source="gs://bpj-in/a", gcs_destination_prefix="gs://out"
    )
    assert job.gca_resource.state == S.JOB_STATE_SUCCEEDED


def test_wait_operation_polls_until_done_and_raises_its_error():
    seen = []

    def handler(method, request, context):
        seen.append(request.name)
        if len(seen) < 3 or request.name.endswith("/2"):
            return types.Operation(name=request.name)
        op = types.Operation(name=request.name, done=True)
        op.error.code = int(errors.Code.FAILED_PRECONDITION)
        op.error.message = "the model is deployed"
        return op

    ops = OperationsClient(InMemoryTransport(handler=handler))
    with pytest.raises(errors.FailedPrecondition, match="the model is deployed") as e:
        wait_operation(ops, types.Operation(name="projects/p/locations/l/operations/1"), what="X.Y")
    assert len(seen) == 3 and e.value.rpc == "X.Y" and e.value.resource.endswith("/operations/1")
    with pytest.raises(TimeoutError, match="not done after 0.05s"):
        wait_operation(ops, types.Operation(name="projects/p/locations/l/operations/2"), timeout=0.05)


# -- the local stack, gRPC and REST ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_files(_bpj_local_stack_session):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    stack = _bpj_local_stack_session
    for bucket in ("models-api", "models-api-in", "models-api-out"):
        stack.gcs.create_bucket(bucket)
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    stack.gcs.write("gs://models-api/iris/model.joblib", joblib_bytes(model))
    rows = data.data.tolist()[::10]
    stack.gcs.write("gs://models-api-in/iris.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    return model, rows


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_model_on_the_local_stack(bpj_local_stack, iris_files, transport):
    bpj_local_stack.init(transport=transport)
    sk_model, rows = iris_files
    model = Model.upload(
        display_name=f"iris-{transport}",
        artifact_uri="gs://models-api/iris",
        serving_container_image_uri=SKLEARN_IMAGE,
        labels={"transport": transport},
    )
    assert model.version_id == "1" and model.labels == {"transport": transport}
    assert Model(model.name) == model
    listed = list(Model.list(filter=f'labels.transport="{transport}"', order_by="create_time desc"))
    assert [m.resource_name for m in listed] == [model.resource_name]
    job = model.batch_predict(
        job_display_name=f"iris-{transport}",
        gcs_source="gs://models-api-in/iris.jsonl",
        gcs_destination_prefix=f"gs://models-api-out/{transport}",
    )
    assert job.gca_resource.state == S.JOB_STATE_SUCCEEDED
    assert job.completion_stats.successful_count == len(rows)
    predictions = []
    for uri in bpj_local_stack.gcs.list(f"{job.output_info.gcs_output_directory}/predictions_*"):
        predictions += [json.loads(line) for line in bpj_local_stack.gcs.read(uri).decode().splitlines()]
    assert sorted(p["prediction"] for p in predictions) == sorted(sk_model.predict(rows).tolist())
    job.delete()
    model.delete()
    with pytest.raises(errors.NotFound):
        Model(model.resource_name)
