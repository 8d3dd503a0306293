"""BatchPredictionJob against FakeVertex (in memory, and served over gRPC and REST), and against the local
stack over gRPC and REST with a real scikit-learn model."""

from __future__ import annotations

import io
import json
import logging
import pickle
import threading
import time

import pytest

from bpj import config, errors, types
from bpj.jobs import BatchPredictionJob, JobCancelled, JobExpired, JobFailed, WaitTimeout
from bpj.testing.fake import FakeVertex

S = types.JobState
SRC, OUT = "gs://bpj-in/iris.jsonl", "gs://bpj-out/run"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(BatchPredictionJob, "poll_interval", 0.01)
    monkeypatch.setattr(BatchPredictionJob, "max_poll_interval", 0.05)


@pytest.fixture(params=["memory", "grpc", "rest"])
def fake(request):
    """A FakeVertex that bpj reaches in memory, or through a real gRPC or REST server on 127.0.0.1."""
    f = FakeVertex()
    server = None
    if request.param == "memory":
        f.init()
    elif request.param == "grpc":
        from bpj.local.servers.serve import serve_grpc

        server = serve_grpc(*f.servicers)
        config.init(project=f.project, location=f.location, api_endpoint=server.endpoint, transport="grpc")
    else:
        from bpj.local.servers.gateway import serve_rest

        server = serve_rest(*f.servicers)
        config.init(project=f.project, location=f.location, api_endpoint=server.url, transport="rest")
    yield f
    config.reset()
    if server is not None:
        server.stop(None) if request.param == "grpc" else server.stop()
    f.close()


@pytest.fixture
def mem():
    f = FakeVertex()
    f.init()
    yield f
    config.reset()
    f.close()


def submit(**kw):
    args = {
        "job_display_name": "nightly",
        "model_name": "1",
        "gcs_source": SRC,
        "gcs_destination_prefix": OUT,
    }
    return BatchPredictionJob.submit(**{**args, **kw})


# -- create, submit, retrieve ---------------------------------------------------------------------------


def test_submit_returns_once_the_job_exists_with_one_rpc(fake):
    job = submit(labels={"team": "vision"}, gcs_source=(u for u in [SRC, "gs://bpj-in/more.jsonl"]))
    assert dict(fake.calls) == {"CreateBatchPredictionJob": 1}
    stored = fake.job(job.resource_name)
    assert stored == job.gca_resource and stored.state == S.JOB_STATE_PENDING
    assert list(stored.input_config.gcs_source.uris) == [SRC, "gs://bpj-in/more.jsonl"]
    assert stored.labels["team"] == "vision" and len(stored.labels["bpj_request_id"]) == 32
    assert stored.model == "projects/bpj-test/locations/us-central1/models/1"


def test_create_sets_what_the_official_create_cannot(mem):
    job = BatchPredictionJob.create(
        "cfg",
        None,
        gcs_source=[SRC],
        gcs_destination_prefix=OUT,
        sync=False,
        request_id_label=False,
        instance_config={"instance_type": "array", "included_fields": ["a", "b"]},
        unmanaged_container_model={
            "artifact_uri": "gs://bpj-models/iris",
            "container_spec": {"image_uri": "img"},
        },
        disable_container_logging=True,
        service_account="sa@p.iam.gserviceaccount.com",
    )
    stored = mem.job(job.name)
    assert list(stored.instance_config.included_fields) == ["a", "b"]
    assert stored.unmanaged_container_model.artifact_uri == "gs://bpj-models/iris" and not stored.model
    assert stored.disable_container_logging and not stored.labels


def test_bad_input_fails_before_any_call(mem):
    with pytest.raises(errors.UsageError, match="colour: not an argument of create"):
        submit(colour="red")
    with pytest.raises(errors.UsageError, match=r"labels\['Team'\]"):
        submit(labels={"Team": "x"})
    with pytest.raises(errors.UsageError, match="sync"):
        submit(sync=True)
    with pytest.raises(errors.UsageError, match="model monitoring"):
        submit(model_monitoring_alert_config={"email": "x"})
    assert not mem.calls


def test_create_sync_waits_for_the_end():
    with FakeVertex(auto=S.JOB_STATE_SUCCEEDED) as f:
        f.init()
        try:
            job = BatchPredictionJob.create("sync", "1", gcs_source=SRC, gcs_destination_prefix=OUT)
            assert job.gca_resource.state == S.JOB_STATE_SUCCEEDED
            assert job.output_info.gcs_output_directory.startswith(f"{OUT}/prediction-1-")
        finally:
            config.reset()


def test_retrieve_by_id_or_name_is_one_get(fake):
    made = submit()
    fake.reset_calls()
    by_id = BatchPredictionJob(made.name)
    by_name = BatchPredictionJob(made.resource_name, location="europe-west4")
    assert by_id.gca_resource == by_name.gca_resource == made.gca_resource
    assert by_name.location == "us-central1"
    assert dict(fake.calls) == {"GetBatchPredictionJob": 2}
    with pytest.raises(errors.NotFound):
        BatchPredictionJob("123")
    with pytest.raises(errors.UsageError, match="batch_prediction_job_name"):
        BatchPredictionJob("projects/p/jobs/1")


# -- properties ---------------------------------------------------------------------------------------


def test_only_state_refreshes_and_only_until_terminal(mem):
    job = submit()
    mem.reset_calls()
    mem.run(job.name, successful=5)
    assert job.state == S.JOB_STATE_RUNNING
    assert mem.calls["GetBatchPredictionJob"] == 1
    assert job.completion_stats.successful_count == 5  # as of that Get
    for prop in ("display_name", "output_info", "completion_stats", "partial_failures", "error", "labels"):
        getattr(job, prop)
    assert job.create_time and job.start_time and job.update_time and job.end_time is None
    assert job.to_dict()["displayName"] == "nightly" and job.gca_resource.name == job.resource_name
    assert mem.calls["GetBatchPredictionJob"] == 1
    mem.finish(job.name)
    assert job.done()
    assert job.state == S.JOB_STATE_SUCCEEDED and job.state == S.JOB_STATE_SUCCEEDED
    assert mem.calls["GetBatchPredictionJob"] == 2
    with pytest.raises(errors.UsageError, match="is not"):
        job.refresh(types.BatchPredictionJob(name="projects/p/locations/l/batchPredictionJobs/9"))


# -- wait ---------------------------------------------------------------------------------------------

OUTCOMES = [
    (S.JOB_STATE_SUCCEEDED, None),
    (S.JOB_STATE_PARTIALLY_SUCCEEDED, None),
    (S.JOB_STATE_FAILED, JobFailed),
    (S.JOB_STATE_CANCELLED, JobCancelled),
    (S.JOB_STATE_EXPIRED, JobExpired),
]


@pytest.mark.parametrize(("state", "raises"), OUTCOMES)
def test_wait_ends_on_every_terminal_state_with_its_outcome(fake, state, raises):
    job = submit()
    error = (errors.Code.RESOURCE_EXHAUSTED, "no quota") if raises else None
    fake.finish(job.name, state, successful=3, failed=1, error=error)
    if raises is None:
        assert job.wait() is job
        assert job.gca_resource.completion_stats.failed_count == 1
    else:
        with pytest.raises(raises) as caught:
            job.wait()
        assert type(caught.value) is raises and isinstance(caught.value, JobFailed)
        assert caught.value.status.code == errors.Code.RESOURCE_EXHAUSTED
        assert caught.value.status.message == "no quota" and caught.value.job is job
        assert f"ended {S.Name(state)}: RESOURCE_EXHAUSTED: no quota" in str(caught.value)
        # It crosses processes (a Dask or Ray task, multiprocessing): the same class, message and job.
        back = pickle.loads(pickle.dumps(caught.value))
        assert type(back) is raises and str(back) == str(caught.value)
        assert (back.status, back.state) == (caught.value.status, caught.value.state)
        assert back.job.gca_resource == job.gca_resource and back.job.resource_name == job.resource_name


def test_wait_keeps_polling_through_paused_and_updating(mem, caplog):
    job = submit()

    def move():
        for state in (S.JOB_STATE_RUNNING, S.JOB_STATE_PAUSED, S.JOB_STATE_UPDATING, S.JOB_STATE_RUNNING):
            mem.set_state(job.name, state)
            time.sleep(0.03)
        mem.finish(job.name, S.JOB_STATE_SUCCEEDED, successful=10)

    mover = threading.Thread(target=move)
    caplog.set_level(logging.INFO, logger="bpj")
    root_handlers = list(logging.getLogger().handlers)
    mover.start()
    job.wait(timeout=10)
    mover.join()
    assert job.gca_resource.state == S.JOB_STATE_SUCCEEDED
    assert mem.calls["GetBatchPredictionJob"] >= 2
    assert any("JOB_STATE_SUCCEEDED" in r.getMessage() for r in caplog.records if r.name == "bpj")
    assert logging.getLogger().handlers == root_handlers


def test_wait_times_out_with_a_timeout_error(mem):
    job = submit()
    with pytest.raises(TimeoutError) as caught:
        job.wait(timeout=0.1)
    assert isinstance(caught.value, WaitTimeout) and "still JOB_STATE_PENDING" in str(caught.value)
    back = pickle.loads(pickle.dumps(caught.value))
    assert type(back) is WaitTimeout and str(back) == str(caught.value) and back.timeout == 0.1


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_on_a_terminal_only(mem, monkeypatch, capsys):
    job = submit()
    mem.finish(job.name, successful=7, failed=2)
    job.wait()
    assert capsys.readouterr().err == ""
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    again = submit()
    mem.finish(again.name, successful=7, failed=2)
    again.wait()
    assert "SUCCEEDED: 7 ok, 2 failed" in tty.getvalue() and tty.getvalue().endswith("\n")


# -- cancel, delete, list -------------------------------------------------------------------------------


def test_cancel_and_delete(fake):
    job = submit()
    job.cancel()
    assert fake.job(job.name).state == S.JOB_STATE_CANCELLED
    assert job.gca_resource.state == S.JOB_STATE_PENDING  # cancel() alone does not fetch
    with pytest.raises(JobCancelled):
        job.wait()
    job.delete()
    assert fake.calls["DeleteBatchPredictionJob"] == 1 and not fake.jobs()
    with pytest.raises(errors.NotFound):
        job.refresh()


def test_cancel_wait_returns_when_it_is_cancelled():
    with FakeVertex(cancel_immediately=False) as f:
        f.init()
        try:
            job = submit()
            threading.Timer(0.1, f.finish, (job.name, S.JOB_STATE_CANCELLED)).start()
            assert job.cancel(wait=True).gca_resource.state == S.JOB_STATE_CANCELLED
        finally:
            config.reset()


def test_list_returns_a_list_or_lazily_by_pages_and_sorts_on_the_client_only_when_asked(fake):
    for name in ["c", "a", "b", "e", "d"]:
        submit(job_display_name=name, labels={"batch": "one" if name in "abc" else "two"})
    fake.reset_calls()
    everything = BatchPredictionJob.list(page_size=2)  # the official SDK's list: every page, then a list
    assert isinstance(everything, list) and len(everything) == 5 and everything[0].display_name == "d"
    assert fake.calls["ListBatchPredictionJobs"] == 3
    fake.reset_calls()
    listed = BatchPredictionJob.list(page_size=2, lazy=True)
    assert fake.calls["ListBatchPredictionJobs"] == 0
    assert next(listed).display_name == "d"  # newest first, the server's order
    assert fake.calls["ListBatchPredictionJobs"] == 1
    assert [j.display_name for j in listed] == ["e", "b", "a", "c"]
    assert fake.calls["ListBatchPredictionJobs"] == 3
    desc = BatchPredictionJob.list(order_by=" create_time   DESC ", page_size=2)
    assert [j.display_name for j in desc] == ["d", "e", "b", "a", "c"]
    by_name = BatchPredictionJob.list(order_by="display_name desc", filter='labels.batch="one"')
    assert [j.display_name for j in by_name] == ["c", "b", "a"]
    with pytest.raises(errors.UsageError, match="order_by"):
        BatchPredictionJob.list(order_by="colour")
    with pytest.raises(errors.UsageError, match="lazy"):
        BatchPredictionJob.list(lazy="yes")  # type: ignore[call-overload]


# -- outputs ------------------------------------------------------------------------------------------


def test_outputs_need_a_finished_job(mem):
    job = submit()
    with pytest.raises(RuntimeError, match="before it succeeds"):
        job.iter_outputs()
    with pytest.raises(RuntimeError, match="JOB_STATE_PENDING"):
        job.outputs()


# -- the lost reply -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["error", "late"])
def test_a_create_whose_reply_is_lost_makes_exactly_one_job(fake, how):
    if how == "error":
        fake.inject("CreateBatchPredictionJob", errors.Unavailable("connection reset"), after=True)
        job = submit()
    else:  # the server answers after the client's deadline
        fake.inject("CreateBatchPredictionJob", after=True, delay=0.6)
        job = submit(create_request_timeout=0.2)
    assert [j.name for j in fake.jobs()] == [job.resource_name]
    assert fake.calls["CreateBatchPredictionJob"] == 1 and fake.calls["ListBatchPredictionJobs"] == 1


def test_a_create_lost_before_the_server_is_sent_again(fake):
    fake.inject("CreateBatchPredictionJob", errors.Unavailable("connection refused"))
    job = submit()
    assert [j.name for j in fake.jobs()] == [job.resource_name]
    assert fake.calls["CreateBatchPredictionJob"] == 2


def test_without_the_label_an_ambiguous_failure_is_raised_not_retried(mem):
    mem.inject("CreateBatchPredictionJob", errors.Unavailable("reset"), after=True)
    with pytest.raises(errors.Unavailable):
        submit(request_id_label=False)
    assert mem.calls["CreateBatchPredictionJob"] == 1 and len(mem.jobs()) == 1
    mem.inject("CreateBatchPredictionJob", errors.InvalidArgument("no"))
    with pytest.raises(errors.InvalidArgument):
        submit()
    assert mem.calls["CreateBatchPredictionJob"] == 2


def test_a_request_id_of_yours_makes_create_idempotent_across_processes(mem):
    first = submit(labels={"bpj_request_id": "nightly-2026-11-27"})
    again = submit(labels={"bpj_request_id": "nightly-2026-11-27"})
    assert again.resource_name == first.resource_name and len(mem.jobs()) == 1


# -- the local stack, over gRPC and REST ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    pytest.importorskip("sklearn")
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="module")
def iris_model(stack):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from bpj import clients
    from bpj.transport.grpc import GrpcTransport
    from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    for bucket in ("bpj-models", "bpj-in", "bpj-out"):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write("gs://bpj-models/iris/model.joblib", joblib_bytes(model))
    stack.gcs.write(SRC, "\n".join(json.dumps(r) for r in data.data.tolist()).encode())
    stack.gcs.write("gs://bpj-in/big.jsonl", b"\n".join([b"[5.1, 3.5, 1.4, 0.2]"] * 50_000))
    m = types.Model(display_name="iris", artifact_uri="gs://bpj-models/iris")
    m.container_spec.image_uri = SKLEARN_IMAGE
    transport = GrpcTransport(stack.api_endpoint)
    op = clients.model_service(transport=transport).upload_model(
        types.UploadModelRequest(parent=f"projects/{stack.project}/locations/{stack.location}", model=m)
    )
    transport.close()
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model, len(data.data)


@pytest.fixture(params=["grpc", "rest"])
def on_stack(request, stack, iris_model):
    stack.init(transport=request.param)
    yield iris_model
    config.reset()


def test_stack_create_sync_list_retrieve_outputs_delete(on_stack):
    model, rows = on_stack
    job = BatchPredictionJob.create(
        "iris-bpj", model, gcs_source=SRC, gcs_destination_prefix=OUT, labels={"t": "x"}
    )
    assert job.gca_resource.state == S.JOB_STATE_SUCCEEDED
    assert job.completion_stats.successful_count == rows
    names = [b.name.rsplit("/", 1)[-1] for b in job.iter_outputs()]
    assert any(n.startswith("predictions_") for n in names)
    again = BatchPredictionJob(job.name)
    assert again.gca_resource == job.gca_resource
    listed = [
        j.resource_name
        for j in BatchPredictionJob.list(filter=f'labels.bpj_request_id="{job.labels["bpj_request_id"]}"')
    ]
    assert listed == [job.resource_name]
    job.delete()
    assert job.resource_name not in [j.resource_name for j in BatchPredictionJob.list()]


def test_stack_submit_then_wait_and_bigquery_outputs(on_stack, stack):
    model, rows = on_stack
    import pyarrow as pa

    project = stack.project
    stack.tables.create_dataset(project, "src", exists_ok=True)
    schema = pa.schema([(c, pa.float64()) for c in "abcd"])
    stack.tables.create_table(project, "src", "iris", schema, exists_ok=True)
    if not stack.tables.num_rows(project, "src", "iris"):
        from sklearn.datasets import load_iris

        data = [dict(zip("abcd", r, strict=True)) for r in load_iris().data.tolist()]
        stack.tables.append(project, "src", "iris", pa.Table.from_pylist(data, schema))
    job = BatchPredictionJob.submit(
        job_display_name="iris-bq",
        model_name=model,
        bigquery_source=f"bq://{project}.src.iris",
        bigquery_destination_prefix=project,
        instance_config={"instance_type": "array"},
    )
    assert job.wait(timeout=60) is job
    assert len(list(job.iter_outputs())) == 100 and len(list(job.iter_outputs(bq_max_results=1000))) == rows


def test_stack_failed_and_cancelled_jobs_end_wait_with_their_error(on_stack, stack):
    model, _ = on_stack
    with pytest.raises(JobFailed) as caught:
        BatchPredictionJob.create(
            "gone",
            f"projects/{stack.project}/locations/us-central1/models/404",
            gcs_source=SRC,
            gcs_destination_prefix=OUT,
        )
    assert (
        caught.value.status.code == errors.Code.NOT_FOUND and "does not exist" in caught.value.status.message
    )
    job = BatchPredictionJob.submit(
        job_display_name="big",
        model_name=model,
        gcs_source="gs://bpj-in/big.jsonl",
        gcs_destination_prefix=OUT,
        batch_size=8,
    )
    job.cancel(wait=True)
    assert job.gca_resource.state == S.JOB_STATE_CANCELLED
    with pytest.raises(JobCancelled):
        job.wait()


def test_create_keeps_the_official_parameter_order():
    import inspect

    from google.cloud.aiplatform import BatchPredictionJob as Official

    theirs = list(inspect.signature(Official.create).parameters)
    ours = list(inspect.signature(BatchPredictionJob.create).parameters)
    assert ours[: len(theirs)] == theirs
    assert ours[len(theirs) :] == [
        "instance_config",
        "unmanaged_container_model",
        "disable_container_logging",
        "request_id_label",
        "fields",
    ]
    for method in ("__init__", "list", "iter_outputs"):
        names = list(inspect.signature(getattr(Official, method)).parameters)
        assert list(inspect.signature(getattr(BatchPredictionJob, method)).parameters)[: len(names)] == names


# -- the official SDK's surface ------------------------------------------------------------------------------


def test_a_model_object_sends_its_versioned_name(fake):
    # The official SDK sends Model.versioned_resource_name; the unversioned name would run the default
    # version, whatever version the object stands for (a regression: bpj once sent resource_name).
    from bpj.models import Model

    first = Model.upload(display_name="iris", artifact_uri="gs://models/1", serving_container_image_uri="img")
    second = Model.upload(
        display_name="iris",
        artifact_uri="gs://models/2",
        serving_container_image_uri="img",
        parent_model=first.resource_name,
    )
    assert second.version_id == "2" and first.resource_name == second.resource_name
    for model, version in ((first, "1"), (second, "2")):
        job = submit(model_name=model)
        assert job.gca_resource.model == f"{model.resource_name}@{version}"
    older = Model(first.resource_name, version="1")
    assert submit(model_name=older).gca_resource.model == f"{first.resource_name}@1"


def test_submit_names_the_job_when_no_name_is_given(mem):
    job = BatchPredictionJob.submit(model_name="1", gcs_source=SRC, gcs_destination_prefix=OUT)
    assert job.display_name.startswith("BatchPredictionJob 20")


def test_state_is_an_enum_with_names_for_every_number(mem):
    from bpj import states

    job = submit()
    assert job.state.name == "JOB_STATE_PENDING" and job.state == S.JOB_STATE_PENDING
    assert str(job.state) == str(int(S.JOB_STATE_PENDING))  # as the official IntEnum prints
    mem.finish(job.resource_name, S.JOB_STATE_SUCCEEDED)
    assert job.state is states.JobState.JOB_STATE_SUCCEEDED
    unknown = states.as_enum(42)
    assert unknown == 42 and unknown.name == "JOB_STATE_42" and isinstance(unknown, states.JobState)
    with pytest.raises(ValueError):
        states.JobState("JOB_STATE_RUNNING")


def test_credentials_api_client_encryption_spec_and_preview(mem):
    job = submit()
    assert job.credentials is None  # none given, none set by init: ADC for a real endpoint
    assert (
        job.api_client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job.resource_name))
        == job.gca_resource
    )
    assert job.encryption_spec == types.EncryptionSpec()  # an empty message, as the official property
    with pytest.raises(NotImplementedError, match="v1beta1"):
        _ = job.preview
    job.wait_for_resource_creation()  # it exists: returns at once, no call
    assert mem.calls["GetBatchPredictionJob"] == 1  # the one api_client made


def test_delete_with_or_without_waiting(fake):
    a, b = submit(), submit()
    for job in (a, b):
        fake.finish(job.resource_name, S.JOB_STATE_SUCCEEDED)
    a.delete(sync=False)
    b.delete()
    for job in (a, b):
        with pytest.raises(errors.NotFound):
            BatchPredictionJob(job.resource_name)
    with pytest.raises(errors.UsageError, match="sync"):
        submit().delete(sync="no")  # type: ignore[arg-type]


def test_init_defaults_for_encryption_and_service_account_apply_to_create(mem):
    key = f"projects/{mem.project}/locations/{mem.location}/keyRings/r/cryptoKeys/k"
    config.init(encryption_spec_key_name=key, service_account="runner@p.iam.gserviceaccount.com")
    job = submit()
    assert job.gca_resource.encryption_spec.kms_key_name == key
    assert job.gca_resource.service_account == "runner@p.iam.gserviceaccount.com"
    given = submit(service_account="other@p.iam.gserviceaccount.com")
    assert given.gca_resource.service_account == "other@p.iam.gserviceaccount.com"
    config.init(encryption_spec_key_name="not a key")
    with pytest.raises(errors.UsageError, match="encryption_spec_key_name"):
        submit()


# -- progress ----------------------------------------------------------------------------------------------


def test_wait_progress_shows_counts_rate_share_and_time_left(mem):
    from bpj.progress import WaitProgress

    job = submit()
    out = io.StringIO()
    progress = WaitProgress(job, live=False, every=10.0, stream=out)
    progress.show(0.0)
    mem.run(job.resource_name, successful=100, failed=0)
    job.refresh()
    progress.show(5.0)  # a state change: shown at once
    mem.run(job.resource_name, successful=300, failed=100, incomplete=600)
    job.refresh()
    progress.show(9.0)  # same state, under `every` since the last line: not shown
    progress.show(15.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("PENDING: 0 ok, 0 failed [00:00]")
    assert "RUNNING: 100 ok, 0 failed 20/s [00:05]" in lines[1]
    # 400 done of 1000 at 400/15 s: 40%, 600 left at ~26.7/s: about 22 s
    assert "300 ok, 100 failed 27/s 40% of 1000 ~00:22 left [00:15]" in lines[2]


def test_progress_is_asked_for_off_a_terminal(mem, monkeypatch):
    from bpj.progress import WaitProgress

    job = submit()
    monkeypatch.delenv("BPJ_PROGRESS", raising=False)
    assert WaitProgress.wanted(job) is None  # pytest's stderr is not a terminal
    monkeypatch.setenv("BPJ_PROGRESS", "1")
    shown = WaitProgress.wanted(job)
    assert shown is not None and not shown.live
    monkeypatch.setenv("BPJ_PROGRESS", "0")
    assert WaitProgress.wanted(job) is None
