"""The Vertex emulator's services through bpj's generated clients on the in-memory transport, with a
recording stand-in for the executor (the executor itself is tested with real jobs in test_stack.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj._gen.services.operations import OperationsClient
from bpj.local.filters import compile_filter
from bpj.local.store import Store
from bpj.local.vertex import Jobs, Models, Operations, Vertex, field_value, label_problem
from bpj.transport.memory import InMemoryTransport

PARENT = "projects/p/locations/us-central1"
S = types.JobState


class Recorder:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []


@pytest.fixture
def env(tmp_path):
    rec = Recorder()
    store = Store(tmp_path / "vertex.sqlite3")
    vertex = Vertex(store, rec.started.append, rec.stopped.append)
    t = InMemoryTransport(Jobs(vertex), Models(vertex), Operations(vertex))
    yield JobServiceClient(t), ModelServiceClient(t), OperationsClient(t), rec, store
    store.close()


def job(**overrides):
    j = types.BatchPredictionJob(
        display_name="nightly",
        model=f"{PARENT}/models/1",
        labels={"team": "vision"},
    )
    j.input_config.instances_format = "jsonl"
    j.input_config.gcs_source.uris.append("gs://bpj-in/instances.jsonl")
    j.output_config.predictions_format = "jsonl"
    j.output_config.gcs_destination.output_uri_prefix = "gs://bpj-out/run"
    for k, v in overrides.items():
        if k == "labels":
            j.labels.clear()
            j.labels.update(v)
        else:
            setattr(j, k, v)
    return j


def create(jobs, j=None, parent=PARENT):
    return jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=j or job())
    )


def test_create_sets_output_only_fields_and_starts_the_job(env):
    jobs, _, _, rec, _ = env
    request_job = job()
    request_job.state = S.JOB_STATE_SUCCEEDED  # output-only: ignored
    request_job.completion_stats.successful_count = 99
    created = create(jobs, request_job)
    assert created.name.startswith(f"{PARENT}/batchPredictionJobs/")
    assert created.name.rsplit("/", 1)[-1].isdigit()
    assert created.state == S.JOB_STATE_PENDING
    assert created.completion_stats.successful_count == 0
    assert created.create_time.seconds > 0 and created.update_time == created.create_time
    assert rec.started == [created.name]
    assert jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=created.name)) == created


def test_validation_names_every_field(env):
    jobs = env[0]
    bad = types.BatchPredictionJob(labels={"Team": "x"})
    with pytest.raises(errors.InvalidArgument) as info:
        create(jobs, bad)
    message = info.value.message
    assert message.startswith("List of found errors:")
    for field in (
        "batch_prediction_job.display_name",
        "batch_prediction_job.model",
        "batch_prediction_job.input_config",
        "batch_prediction_job.output_config",
        "batch_prediction_job.labels['Team']",
    ):
        assert field in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda j: (
                j.output_config.SetInParent() or setattr(j.output_config, "predictions_format", "bigquery")
            ),
            "predictions_format",
        ),
        (lambda j: setattr(j.input_config, "instances_format", "parquet"), "instances_format"),
        (
            lambda j: (
                j.instance_config.included_fields.append("a") or j.instance_config.excluded_fields.append("b")
            ),
            "instance_config",
        ),
        (lambda j: setattr(j, "model", "projects/p/locations/europe-west4/models/1"), "model"),
        (lambda j: setattr(j, "model", "models/1"), "model"),
    ],
)
def test_one_bad_field(env, change, field):
    j = job()
    change(j)
    with pytest.raises(errors.InvalidArgument, match=field):
        create(env[0], j)


def test_bad_parent(env):
    with pytest.raises(errors.InvalidArgument, match="parent must be projects"):
        create(env[0], parent="projects/p")


def test_missing_job(env):
    with pytest.raises(errors.NotFound, match="does not exist"):
        env[0].get_batch_prediction_job(
            types.GetBatchPredictionJobRequest(name=f"{PARENT}/batchPredictionJobs/1")
        )


def test_list_filters_pages_and_masks(env):
    jobs, _, _, _, store = env
    names = [create(jobs, job(display_name=f"job-{i}", labels={"n": str(i % 2)})).name for i in range(7)]
    request = types.ListBatchPredictionJobsRequest(parent=PARENT, filter='labels.n="1"', page_size=2)
    seen = []
    while True:
        response = jobs.list_batch_prediction_jobs(request)
        assert len(response.batch_prediction_jobs) <= 2
        seen += [j.display_name for j in response.batch_prediction_jobs]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert seen == ["job-5", "job-3", "job-1"]  # newest first
    masked = jobs.list_batch_prediction_jobs(
        types.ListBatchPredictionJobsRequest(parent=PARENT, read_mask=types.FieldMask(paths=["state"]))
    )
    first = masked.batch_prediction_jobs[0]
    assert first.name == names[-1] and first.state == S.JOB_STATE_PENDING and not first.display_name


def test_bad_filter_is_invalid_argument(env):
    with pytest.raises(errors.InvalidArgument, match="Unsupported filter"):
        env[0].list_batch_prediction_jobs(
            types.ListBatchPredictionJobsRequest(parent=PARENT, filter="state=(")
        )


def test_cancel_and_delete(env):
    jobs, _, ops, rec, store = env
    created = create(jobs)
    jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=created.name))
    assert rec.stopped == [created.name]
    got = jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=created.name))
    assert got.state == S.JOB_STATE_CANCELLING
    with pytest.raises(errors.FailedPrecondition, match="cancel it before deleting"):
        jobs.delete_batch_prediction_job(types.DeleteBatchPredictionJobRequest(name=created.name))

    def done(j):
        j.state = S.JOB_STATE_CANCELLED

    store.update("job", created.name, types.BatchPredictionJob, done)
    with pytest.raises(errors.FailedPrecondition, match="cannot be cancelled"):
        jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=created.name))
    op = jobs.delete_batch_prediction_job(types.DeleteBatchPredictionJobRequest(name=created.name))
    assert op.done and op.name.startswith(f"{PARENT}/operations/")
    meta = types.DeleteOperationMetadata()
    assert op.metadata.Unpack(meta) and meta.generic_metadata.create_time.seconds > 0
    assert ops.get_operation(types.GetOperationRequest(name=op.name)) == op
    with pytest.raises(errors.NotFound):
        jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=created.name))


def test_upload_get_list_delete_model(env):
    _, models, ops, _, _ = env
    model = types.Model(display_name="iris", artifact_uri="gs://models/iris")
    model.container_spec.image_uri = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"
    op = models.upload_model(types.UploadModelRequest(parent=PARENT, model=model))
    assert op.done
    response = types.UploadModelResponse()
    assert op.response.Unpack(response)
    got = models.get_model(types.GetModelRequest(name=response.model))
    assert (got.display_name, got.version_id, list(got.version_aliases)) == ("iris", "1", ["default"])
    assert models.get_model(types.GetModelRequest(name=f"{response.model}@1")) == got
    assert models.get_model(types.GetModelRequest(name=f"{response.model}@default")) == got
    assert ops.get_operation(types.GetOperationRequest(name=op.name)).name == op.name
    listed = models.list_models(
        types.ListModelsRequest(parent=PARENT, filter='display_name="iris"', order_by="create_time desc")
    )
    assert [m.name for m in listed.models] == [got.name]
    models.delete_model(types.DeleteModelRequest(name=got.name))
    with pytest.raises(errors.NotFound):
        models.get_model(types.GetModelRequest(name=got.name))


def upload(models, *, parent_model="", aliases=(), artifact="gs://models/iris"):
    model = types.Model(display_name="iris", artifact_uri=artifact, version_aliases=list(aliases))
    model.container_spec.image_uri = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"
    op = models.upload_model(types.UploadModelRequest(parent=PARENT, model=model, parent_model=parent_model))
    response = types.UploadModelResponse()
    assert op.response.Unpack(response)
    return response


def test_versions_of_a_model(env):
    jobs, models, _, _, _ = env
    first = upload(models, artifact="gs://models/v1")
    name = first.model
    second = upload(models, parent_model=name, aliases=["candidate"], artifact="gs://models/v2")
    third = upload(models, parent_model=name, aliases=["default", "best"], artifact="gs://models/v3")
    assert (second.model, second.model_version_id, third.model_version_id) == (name, "2", "3")

    def get(n):
        return models.get_model(types.GetModelRequest(name=n))

    # The name alone is the default version, now 3; the others by id or alias.
    assert get(name).version_id == "3" and get(f"{name}@default").artifact_uri == "gs://models/v3"
    assert get(f"{name}@best") == get(name)
    assert get(f"{name}@candidate").artifact_uri == "gs://models/v2" and get(f"{name}@2").version_id == "2"
    assert list(get(f"{name}@1").version_aliases) == [] and get(f"{name}@1").artifact_uri == "gs://models/v1"
    assert get(f"{name}@1").create_time == get(name).create_time  # the model's, not the version's
    with pytest.raises(errors.NotFound):
        get(f"{name}@4")
    listed = models.list_models(types.ListModelsRequest(parent=PARENT))
    assert [(m.name, m.version_id) for m in listed.models] == [(name, "3")]
    # A job on a version records it; one on the name runs the default.
    assert create(jobs, job(model=f"{name}@candidate")).model_version_id == "2"
    assert create(jobs, job(model=name)).model_version_id == "3"
    # An alias belongs to one version; the parent must exist, in this location, without a version.
    with pytest.raises(errors.InvalidArgument, match="already used"):
        upload(models, parent_model=name, aliases=["candidate"])
    with pytest.raises(errors.NotFound):
        upload(models, parent_model=f"{PARENT}/models/404")
    for bad in (f"{name}@1", "projects/p/locations/europe-west4/models/1"):
        with pytest.raises(errors.InvalidArgument, match="parent_model"):
            upload(models, parent_model=bad)
    # The default version goes last; the model goes with all of its versions.
    with pytest.raises(errors.FailedPrecondition, match="default version"):
        models.delete_model(types.DeleteModelRequest(name=f"{name}@3"))
    models.delete_model(types.DeleteModelRequest(name=f"{name}@candidate"))
    with pytest.raises(errors.NotFound):
        get(f"{name}@2")
    models.delete_model(types.DeleteModelRequest(name=name))
    for n in (name, f"{name}@1", f"{name}@3"):
        with pytest.raises(errors.NotFound):
            get(n)


def test_upload_validation(env):
    with pytest.raises(errors.InvalidArgument) as info:
        env[1].upload_model(types.UploadModelRequest(parent=PARENT, model=types.Model()))
    assert (
        "model.display_name" in info.value.message and "model.container_spec.image_uri" in info.value.message
    )


def test_everything_survives_a_new_store_on_the_same_file(tmp_path):
    store = Store(tmp_path / "v.sqlite3")
    vertex = Vertex(store, lambda n: None, lambda n: None)
    created = create(JobServiceClient(InMemoryTransport(Jobs(vertex))))
    store.close()
    again = Store(tmp_path / "v.sqlite3")
    assert again.get("job", created.name, types.BatchPredictionJob) == created


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("team", True),
        ("a-b_c", True),
        ("équipe", True),
        ("Team", False),
        ("1team", False),
        ("a" * 65, False),
        ("a.b", False),
    ],
)
def test_label_keys(text, ok):
    assert (label_problem(text, key=True) is None) is ok


labels = st.dictionaries(
    st.sampled_from(["team", "env", "tier"]), st.sampled_from(["a", "b", "c"]), max_size=3
)


@settings(max_examples=200)
@given(labels, st.sampled_from(["team", "env"]), st.sampled_from(["a", "b"]), st.sampled_from(["AND", "OR"]))
def test_label_filters_match_python(ls, key, value, joiner):
    j = types.BatchPredictionJob(display_name="x", labels=ls, state=S.JOB_STATE_RUNNING)
    text = f'labels.{key}="{value}" {joiner} state="JOB_STATE_RUNNING"'
    expected = ls.get(key) == value
    expected = (expected and True) if joiner == "AND" else (expected or True)
    assert compile_filter(text, field_value)(j) is expected
    assert compile_filter(f"labels.{key}:*", field_value)(j) is (key in ls)
    assert compile_filter(f'NOT labels.{key}="{value}"', field_value)(j) is (ls.get(key) != value)
