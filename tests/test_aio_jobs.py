"""bpj.aio against FakeVertex (in memory through AsyncInMemoryTransport, and served over gRPC and REST to
grpc.aio and the async REST transport), and against the local stack with a real scikit-learn model.

No pytest-asyncio: each test runs its coroutine with :func:`run`, which also closes the loop's transports.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from bpj import aio, config, errors, jobs, many, states, types
from bpj.aio import BatchPredictionJob, JobCancelled, JobExpired, JobFailed, WaitTimeout
from bpj.outputs.aio import AsyncBigQueryReader, AsyncGcsReader, AsyncReader
from bpj.testing.fake import ENDPOINT, FakeVertex
from bpj.transport.aio import AsyncInMemoryTransport
from tests.gate import Gate, open_when_reached
from tests.local.conftest import SKLEARN_IMAGE, iris, joblib_bytes, stack  # noqa: F401 (fixtures)

T = TypeVar("T")
S = types.JobState
SRC, OUT = "gs://bpj-in/iris.jsonl", "gs://bpj-out/run"
LIST, GET, CREATE = "ListBatchPredictionJobs", "GetBatchPredictionJob", "CreateBatchPredictionJob"


def run(main: Callable[[], Awaitable[T]], limit: float = 20.0) -> T:
    async def bounded() -> T:
        try:
            return await asyncio.wait_for(main(), limit)
        finally:
            await aio.close_transports()

    return asyncio.run(bounded())


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(BatchPredictionJob, "poll_interval", 0.01)
    monkeypatch.setattr(BatchPredictionJob, "max_poll_interval", 0.05)


def point_at(f: FakeVertex) -> None:
    f.init()
    aio.register_transport(ENDPOINT, AsyncInMemoryTransport(*f.servicers))


@pytest.fixture
def mem():
    f = FakeVertex()
    point_at(f)
    yield f
    aio.register_transport(ENDPOINT, None)
    config.reset()
    f.close()


@pytest.fixture(params=["memory", "grpc", "rest"])
def fake(request, mem):
    """The FakeVertex of ``mem``, reached in memory, or over a real gRPC or REST server on 127.0.0.1."""
    if request.param == "memory":
        yield mem
        return
    if request.param == "grpc":
        from bpj.local.servers.serve import serve_grpc

        server: Any = serve_grpc(*mem.servicers)
        endpoint = server.endpoint
    else:
        from bpj.local.servers.gateway import serve_rest

        server = serve_rest(*mem.servicers)
        endpoint = server.url
    config.init(api_endpoint=endpoint, transport=request.param)
    yield mem
    server.stop(None) if request.param == "grpc" else server.stop()


async def submit(**kw: Any) -> BatchPredictionJob:
    args = {
        "job_display_name": "nightly",
        "model_name": "1",
        "gcs_source": SRC,
        "gcs_destination_prefix": OUT,
    }
    return await BatchPredictionJob.submit(**{**args, **kw})


# -- create, submit, retrieve, properties -----------------------------------------------------------------


def test_submit_and_retrieve_cost_one_rpc_each(fake):
    async def main():
        job = await submit(labels={"team": "vision"})
        assert dict(fake.calls) == {CREATE: 1}
        stored = fake.job(job.resource_name)
        assert stored == job.gca_resource and stored.state == S.JOB_STATE_PENDING
        assert stored.labels["team"] == "vision" and len(stored.labels["bpj_request_id"]) == 32
        again = await BatchPredictionJob.retrieve(job.name)
        assert again.gca_resource == job.gca_resource and fake.calls[GET] == 1
        with pytest.raises(errors.NotFound):
            await BatchPredictionJob.retrieve("123")

    run(main)


def test_no_property_does_io_not_even_state(mem):
    async def main():
        job = await submit()
        mem.reset_calls()
        mem.run(job.name, successful=5)
        assert job.state == S.JOB_STATE_PENDING and not job.done()  # as created: no Get
        for prop in (
            "display_name",
            "output_info",
            "completion_stats",
            "partial_failures",
            "error",
            "labels",
        ):
            getattr(job, prop)
        assert job.create_time and job.start_time is None and job.end_time is None
        assert job.to_dict()["displayName"] == "nightly" and job.project == mem.project
        assert not mem.calls
        assert (await job.refresh()) is job and job.state == S.JOB_STATE_RUNNING
        assert job.state.name == "JOB_STATE_RUNNING" and job.completion_stats.successful_count == 5
        assert mem.calls[GET] == 1
        assert job.to_sync().gca_resource == job.gca_resource and mem.calls[GET] == 1
        with pytest.raises(errors.UsageError, match="is not"):
            await job.refresh(types.BatchPredictionJob(name="projects/p/locations/l/batchPredictionJobs/9"))

    run(main)


NEEDS_THE_RESOURCE = (
    "gca_resource",
    "display_name",
    "state",
    "output_info",
    "completion_stats",
    "partial_failures",
    "error",
    "create_time",
    "labels",
    "encryption_spec",
)


def test_a_name_is_held_without_io_and_awaiting_the_object_fetches_it(fake):
    async def main():
        job = await submit()
        fake.reset_calls()
        held = BatchPredictionJob(job.name)
        assert (held.resource_name, held.name) == (job.resource_name, job.name)
        assert (held.project, held.location) == (fake.project, fake.location)
        assert repr(held).endswith("(not fetched)>")
        for prop in NEEDS_THE_RESOURCE:
            with pytest.raises(
                errors.UsageError, match=f"^{prop} needs the job.*await bpj.aio.BatchPredictionJob"
            ):
                getattr(held, prop)
        for method in ("done", "to_dict", "to_sync"):
            with pytest.raises(errors.UsageError, match=rf"^{method}\(\) needs the job"):
                getattr(held, method)()
        assert not fake.calls
        assert await held is held and fake.calls[GET] == 1
        assert held.gca_resource == job.gca_resource and held.state == S.JOB_STATE_PENDING
        assert await held is held and fake.calls[GET] == 1  # it holds the resource: no second Get
        fetched = await BatchPredictionJob(job.resource_name)
        assert fetched.display_name == "nightly" and fake.calls[GET] == 2
        wrapped = BatchPredictionJob(job.gca_resource)
        assert await wrapped is wrapped and fake.calls[GET] == 2
        elsewhere = BatchPredictionJob("7", project="other", location="europe-west4")
        assert elsewhere.resource_name == "projects/other/locations/europe-west4/batchPredictionJobs/7"
        assert fake.calls[GET] == 2
        with pytest.raises(errors.NotFound):
            await BatchPredictionJob("424242")

    run(main)


def test_an_unfetched_job_waits_cancels_deletes_and_is_watched(mem):
    async def main():
        ok, other, gone = [await submit(job_display_name=n) for n in ("ok", "other", "gone")]
        mem.finish(ok.name, successful=2)
        mem.reset_calls()
        waited = BatchPredictionJob(ok.name)
        assert await waited.wait() is waited and waited.completion_stats.successful_count == 2
        assert mem.calls[GET] == 1
        cancelled = BatchPredictionJob(other.name)
        assert await cancelled.cancel() is cancelled and repr(cancelled).endswith("(not fetched)>")
        assert mem.job(other.name).state == S.JOB_STATE_CANCELLED
        await BatchPredictionJob(gone.name).delete()
        assert [j.name for j in mem.jobs()] == [ok.resource_name, other.resource_name]
        watched = [BatchPredictionJob(ok.name), BatchPredictionJob(other.name)]
        assert await aio.wait_all(watched, raise_on_failure=False, poll=0.01) == watched
        assert [j.state for j in watched] == [S.JOB_STATE_SUCCEEDED, S.JOB_STATE_CANCELLED]

    run(main)


def test_outputs_need_a_job_that_succeeded(mem):
    async def main():
        job = await submit()
        with pytest.raises(RuntimeError, match="before it succeeds; it is JOB_STATE_PENDING"):
            await job.outputs()
        mem.finish(job.name, S.JOB_STATE_FAILED)
        mem.reset_calls()
        with pytest.raises(RuntimeError, match="JOB_STATE_FAILED"):
            await job.iter_outputs()  # a Get first, as the sync state does while the job is not terminal
        with pytest.raises(RuntimeError, match="JOB_STATE_FAILED"):
            await BatchPredictionJob(job.name).outputs()
        assert mem.calls[GET] == 2
        with pytest.raises(RuntimeError, match="JOB_STATE_FAILED"):
            await job.outputs()  # terminal already: no Get
        assert mem.calls[GET] == 2

    run(main)


def test_bad_input_fails_before_any_call(mem):
    async def main():
        with pytest.raises(errors.UsageError, match="colour: not an argument of create"):
            await submit(colour="red")
        with pytest.raises(errors.UsageError, match=r"labels\['Team'\]"):
            await submit(labels={"Team": "x"})
        with pytest.raises(errors.UsageError, match="sync"):
            await submit(sync=True)
        with pytest.raises(errors.UsageError, match="model monitoring"):
            await submit(model_monitoring_alert_config={"email": "x"})
        with pytest.raises(errors.UsageError, match="neither"):
            BatchPredictionJob("projects/p/jobs/1")
        with pytest.raises(errors.UsageError, match="project: comes from the resource"):
            BatchPredictionJob(types.BatchPredictionJob(name=f"{mem.parent}/batchPredictionJobs/1"), "p")
        with pytest.raises(errors.UsageError, match="resource: must be a BatchPredictionJob message"):
            BatchPredictionJob.from_resource("123")
        with pytest.raises(errors.UsageError, match="order_by"):
            BatchPredictionJob.list(order_by="colour")

    run(main)
    assert not mem.calls


def test_create_sync_waits_for_the_end():
    with FakeVertex(auto=S.JOB_STATE_SUCCEEDED) as f:
        point_at(f)
        try:
            job = run(
                lambda: BatchPredictionJob.create("sync", "1", gcs_source=SRC, gcs_destination_prefix=OUT)
            )
        finally:
            aio.register_transport(ENDPOINT, None)
            config.reset()
    assert job.state == S.JOB_STATE_SUCCEEDED
    assert job.output_info.gcs_output_directory.startswith(f"{OUT}/prediction-1-")


# Members of the sync job that do I/O: coroutines here.
AWAITED = {
    "create",
    "submit",
    "refresh",
    "wait",
    "wait_for_completion",
    "wait_for_resource_creation",
    "cancel",
    "delete",
    "outputs",
    "iter_outputs",
}


def test_every_public_member_of_the_sync_job_is_here_with_its_parameters():
    theirs = jobs.BatchPredictionJob
    public = sorted(n for n in dir(theirs) if not n.startswith("_"))
    assert not [n for n in public if not hasattr(BatchPredictionJob, n)]
    for name in [*public, "__init__"]:
        sync_member = inspect.getattr_static(theirs, name)
        member = getattr(BatchPredictionJob, name)
        if isinstance(sync_member, property) or not callable(getattr(theirs, name)):
            assert not callable(member) or isinstance(
                inspect.getattr_static(BatchPredictionJob, name), property
            )
            continue
        ours = list(inspect.signature(member).parameters)
        assert ours == list(inspect.signature(getattr(theirs, name)).parameters), name
        assert inspect.iscoroutinefunction(member) == (name in AWAITED), name
    retrieve = list(inspect.signature(BatchPredictionJob.retrieve).parameters)
    assert retrieve == list(inspect.signature(jobs.BatchPredictionJob.__init__).parameters)[1:]


def test_the_members_the_sync_job_gained_for_the_official_sdk(mem):
    async def main():
        job = await submit(labels={"team": "vision"})
        unnamed = await BatchPredictionJob.submit(model_name="1", gcs_source=SRC, gcs_destination_prefix=OUT)
        assert unnamed.display_name.startswith("BatchPredictionJob ")
        assert isinstance(job.state, states.JobState) and job.state.name == "JOB_STATE_PENDING"
        assert job.encryption_spec == types.EncryptionSpec()
        assert job.credentials is None and BatchPredictionJob(job.name, credentials="c").credentials == "c"
        with pytest.raises(NotImplementedError, match="v1beta1"):
            job.preview  # noqa: B018
        mem.reset_calls()
        got = await job.api_client.get_batch_prediction_job(
            types.GetBatchPredictionJobRequest(name=job.resource_name)
        )
        assert got == job.gca_resource and mem.calls[GET] == 1
        assert await job.wait_for_resource_creation() is None and mem.calls[GET] == 1
        held = BatchPredictionJob(job.name)
        await held.wait_for_resource_creation()
        assert held.labels["team"] == "vision" and mem.calls[GET] == 2
        with pytest.raises(errors.NotFound):
            await BatchPredictionJob("424242").wait_for_resource_creation()
        listed = BatchPredictionJob.list(lazy=False)
        assert not isinstance(listed, list) and len([j async for j in listed]) == 2
        with pytest.raises(errors.UsageError, match="lazy"):
            BatchPredictionJob.list(lazy="yes")
        with pytest.raises(errors.UsageError, match="sync"):
            await job.delete(sync="no")
        mem.reset_calls()
        assert await unnamed.delete(sync=False) is None
        assert mem.calls["DeleteBatchPredictionJob"] == 1 and not mem.calls["GetOperation"]

    run(main)
    for name in ("wait_all", "as_completed"):
        ours = list(inspect.signature(getattr(aio, name)).parameters)
        assert ours == [p for p in inspect.signature(getattr(many, name)).parameters if p != "sleep"]


# -- wait -------------------------------------------------------------------------------------------------

OUTCOMES = [
    (S.JOB_STATE_SUCCEEDED, None),
    (S.JOB_STATE_PARTIALLY_SUCCEEDED, None),
    (S.JOB_STATE_FAILED, JobFailed),
    (S.JOB_STATE_CANCELLED, JobCancelled),
    (S.JOB_STATE_EXPIRED, JobExpired),
]


@pytest.mark.parametrize(("state", "raises"), OUTCOMES)
def test_wait_ends_on_every_terminal_state_with_its_outcome(fake, state, raises):
    async def main():
        job = await submit()
        error = (errors.Code.RESOURCE_EXHAUSTED, "no quota") if raises else None
        fake.finish(job.name, state, successful=3, failed=1, error=error)
        if raises is None:
            assert await job.wait() is job
            assert job.completion_stats.failed_count == 1
            return
        with pytest.raises(raises) as caught:
            await job.wait()
        assert type(caught.value) is raises and caught.value.job is job
        assert caught.value.status.code == errors.Code.RESOURCE_EXHAUSTED
        assert f"ended {S.Name(state)}: RESOURCE_EXHAUSTED: no quota" in str(caught.value)

    run(main)


def test_wait_polls_with_asyncio_sleep_through_paused_and_updating(mem, caplog):
    caplog.set_level(logging.INFO, logger="bpj")

    async def main():
        job = await submit()

        async def move():
            for state in (S.JOB_STATE_RUNNING, S.JOB_STATE_PAUSED, S.JOB_STATE_UPDATING, S.JOB_STATE_RUNNING):
                mem.set_state(job.name, state)
                await asyncio.sleep(0.03)
            mem.finish(job.name, S.JOB_STATE_SUCCEEDED, successful=10)

        mover = asyncio.create_task(move())  # runs in the same loop: wait() must not block it
        await job.wait(timeout=10)
        await mover
        return job

    job = run(main)
    assert job.state == S.JOB_STATE_SUCCEEDED and mem.calls[GET] >= 2
    assert any("JOB_STATE_PAUSED" in r.getMessage() for r in caplog.records if r.name == "bpj")


def test_wait_times_out_with_a_timeout_error(mem):
    async def main():
        job = await submit()
        with pytest.raises(TimeoutError) as caught:
            await job.wait(timeout=0.1)
        assert isinstance(caught.value, WaitTimeout) and "still JOB_STATE_PENDING" in str(caught.value)

    run(main)


# -- cancel, delete, list ---------------------------------------------------------------------------------


def test_cancel_and_delete(fake):
    async def main():
        job = await submit()
        assert await job.cancel() is job
        assert fake.job(job.name).state == S.JOB_STATE_CANCELLED
        assert job.state == S.JOB_STATE_PENDING  # cancel() alone does not fetch
        with pytest.raises(JobCancelled):
            await job.wait()
        await job.delete()
        assert fake.calls["DeleteBatchPredictionJob"] == 1 and not fake.jobs()
        with pytest.raises(errors.NotFound):
            await job.refresh()

    run(main)


def test_cancel_wait_returns_when_it_is_cancelled():
    with FakeVertex(cancel_immediately=False) as f:
        point_at(f)

        async def main():
            job = await submit()
            asyncio.get_running_loop().call_later(0.1, f.finish, job.name, S.JOB_STATE_CANCELLED)
            return await job.cancel(wait=True)

        try:
            assert run(main).state == S.JOB_STATE_CANCELLED
        finally:
            aio.register_transport(ENDPOINT, None)
            config.reset()


def test_list_is_lazy_by_pages_and_sorts_on_the_client_only_when_asked(fake):
    async def main():
        for name in ["c", "a", "b", "e", "d"]:
            await submit(job_display_name=name, labels={"batch": "one" if name in "abc" else "two"})
        fake.reset_calls()
        listed = BatchPredictionJob.list(page_size=2)
        assert fake.calls[LIST] == 0
        assert (await listed.__anext__()).display_name == "d"  # newest first, the server's order
        assert fake.calls[LIST] == 1
        assert [j.display_name async for j in listed] == ["e", "b", "a", "c"]
        assert fake.calls[LIST] == 3
        by_name = BatchPredictionJob.list(order_by="display_name desc", filter='labels.batch="one"')
        assert [j.display_name async for j in by_name] == ["c", "b", "a"]

    run(main)


# -- many jobs --------------------------------------------------------------------------------------------


def test_fifty_jobs_watched_with_one_list_per_poll(mem, caplog):
    caplog.set_level(logging.DEBUG, logger="bpj")

    async def main():
        watched = [await submit(job_display_name=f"j{i}", labels={"run": "r1"}) for i in range(50)]
        for job in watched[:20]:
            mem.finish(job.name, successful=1)
        mem.reset_calls()

        async def finish_the_rest():
            for i, job in enumerate(watched[20:]):
                await asyncio.sleep(0.002)
                mem.finish(job.name, S.JOB_STATE_FAILED if i == 0 else S.JOB_STATE_SUCCEEDED)

        ender = asyncio.create_task(finish_the_rest())
        order = [j.display_name async for j in aio.as_completed(watched, poll=0.01, max_poll=0.02)]
        await ender
        assert sorted(order) == sorted(j.display_name for j in watched)
        assert all(j.done() for j in watched)
        polls = sum(1 for r in caplog.records if r.getMessage().startswith("poll:"))
        assert polls >= 2 and mem.calls[LIST] == polls and mem.calls[GET] == 0
        mem.reset_calls()
        with pytest.raises(many.JobsFailed) as caught:
            await aio.wait_all(watched, poll=0.01)
        assert [f.job for f in caught.value.failures] == [watched[20]] and caught.value.jobs == watched
        assert not mem.calls  # every job was terminal already: no RPC
        done = await aio.wait_all(watched, raise_on_failure=False)
        assert done == watched

    run(main)


def test_wait_all_pages_and_times_out(mem, caplog):
    caplog.set_level(logging.DEBUG, logger="bpj")

    async def main():
        watched = [await submit(job_display_name=f"j{i}", labels={"run": "r2"}) for i in range(50)]
        for job in watched[1:]:
            mem.finish(job.name, successful=1)
        mem.reset_calls()
        with pytest.raises(many.NotDone) as caught:
            await aio.wait_all(watched, poll=0.01, timeout=0.05, page_size=20)
        assert caught.value.not_done == [watched[0]] and len(caught.value.done) == 49
        # The first poll: 3 pages of 20; then one job is left and its own label selects it: 1 page.
        polls = sum(1 for r in caplog.records if r.getMessage().startswith("poll:"))
        assert polls >= 2 and mem.calls[LIST] == 3 + (polls - 1) and mem.calls[GET] == 0
        with pytest.raises(errors.UsageError, match="jobs"):
            await aio.wait_all([jobs.BatchPredictionJob.from_resource(watched[0].gca_resource)])

    run(main)


def test_many_waits_at_once_share_one_transport(mem):
    async def main():
        watched = [await submit(job_display_name=f"w{i}") for i in range(50)]
        for job in watched:
            asyncio.get_running_loop().call_later(0.05, mem.finish, job.name)
        await asyncio.gather(*(job.wait(timeout=10) for job in watched))
        assert all(j.state == S.JOB_STATE_SUCCEEDED for j in watched)

    run(main)


# -- the lost reply ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["error", "late"])
def test_a_create_whose_reply_is_lost_makes_exactly_one_job(fake, how):
    async def main():
        if how == "error":
            fake.inject(CREATE, errors.Unavailable("connection reset"), after=True)
            return await submit()
        fake.inject(CREATE, after=True, delay=0.6)  # the server answers after the client's deadline
        return await submit(create_request_timeout=0.2)

    job = run(main)
    assert [j.name for j in fake.jobs()] == [job.resource_name]
    assert fake.calls[CREATE] == 1 and fake.calls[LIST] == 1


# -- transports -------------------------------------------------------------------------------------------


def test_one_transport_per_loop_and_endpoint(mem):
    s = config.settings(api_endpoint="127.0.0.1:9", transport="grpc")

    async def two() -> tuple[Any, Any]:
        return aio.async_transport_for("127.0.0.1:9", s), aio.async_transport_for("127.0.0.1:9", s)

    a, b = run(two)
    c, _ = run(two)
    assert a is b and a is not c
    with pytest.raises(errors.UsageError, match="inside a coroutine"):
        aio.async_transport_for("127.0.0.1:9", s)
    aio.register_transport(ENDPOINT, None)  # FakeVertex.init() registered a sync one only
    with pytest.raises(errors.UsageError, match="sync transport registered"):
        run(lambda: BatchPredictionJob.retrieve("1"))


# -- the local stack, over grpc.aio and async REST ---------------------------------------------------------


@pytest.fixture(scope="module")
def iris_model(stack, iris):  # noqa: F811
    from bpj.models import Model

    model, rows = iris
    for bucket in ("aio-models", "aio-in", "aio-out"):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write("gs://aio-models/iris/model.joblib", joblib_bytes(model))
    stack.gcs.write("gs://aio-in/iris.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    stack.gcs.write("gs://aio-in/big.jsonl", b"\n".join([b"[5.1, 3.5, 1.4, 0.2]"] * 50_000))
    stack.init()
    try:
        uploaded = Model.upload(
            display_name="iris",
            artifact_uri="gs://aio-models/iris",
            serving_container_image_uri=SKLEARN_IMAGE,
        )
    finally:
        config.reset()
    return uploaded.versioned_resource_name, len(rows)


@pytest.fixture(params=["grpc", "rest"])
def on_stack(request, stack, iris_model):  # noqa: F811
    stack.init(transport=request.param)
    yield iris_model
    config.reset()


def test_stack_create_list_retrieve_outputs_delete(on_stack, iris):  # noqa: F811
    model, rows = on_stack
    iris_rows = iris[1]

    async def main():
        job = await BatchPredictionJob.create(
            "iris-aio", model, gcs_source="gs://aio-in/iris.jsonl", gcs_destination_prefix="gs://aio-out/a"
        )
        assert job.state == S.JOB_STATE_SUCCEEDED and job.completion_stats.successful_count == rows
        again = await BatchPredictionJob.retrieve(job.name)
        assert again.gca_resource == job.gca_resource
        assert (await BatchPredictionJob(job.resource_name)).gca_resource == job.gca_resource
        reader = await job.outputs(ordered=True, queue_size=1)
        assert isinstance(reader, AsyncGcsReader) and reader.queue_size == 1 and reader.sync.ordered
        assert (await reader.to_arrow()).num_rows == rows
        assert [r["instance"] async for r in reader][:2] == iris_rows[:2]
        names = [b.name.rsplit("/", 1)[-1] async for b in await job.iter_outputs()]
        assert any(n.startswith("predictions_") for n in names)
        key = job.labels["bpj_request_id"]
        listed = [
            j.resource_name async for j in BatchPredictionJob.list(filter=f'labels.bpj_request_id="{key}"')
        ]
        assert listed == [job.resource_name]
        await job.delete()
        assert job.resource_name not in [j.resource_name async for j in BatchPredictionJob.list()]

    run(main, limit=60)


def test_stack_submit_wait_all_failure_and_cancel(on_stack, stack):  # noqa: F811
    model, rows = on_stack

    async def main():
        ok = await BatchPredictionJob.submit(
            job_display_name="ok", model_name=model, gcs_source="gs://aio-in/iris.jsonl",
            gcs_destination_prefix="gs://aio-out/b",
        )  # fmt: skip
        gone = await BatchPredictionJob.submit(
            job_display_name="gone", model_name=f"projects/{stack.project}/locations/us-central1/models/404",
            gcs_source="gs://aio-in/iris.jsonl", gcs_destination_prefix="gs://aio-out/c",
        )  # fmt: skip
        assert await ok.wait(timeout=60) is ok and ok.completion_stats.successful_count == rows
        with pytest.raises(JobFailed) as caught:
            await gone.wait(timeout=60)
        assert (
            caught.value.status.code == errors.Code.NOT_FOUND
            and "does not exist" in caught.value.status.message
        )
        assert await aio.wait_all([ok, gone], raise_on_failure=False, poll=0.05) == [ok, gone]
        big = await BatchPredictionJob.submit(
            job_display_name="big", model_name=model, gcs_source="gs://aio-in/big.jsonl",
            gcs_destination_prefix="gs://aio-out/d", batch_size=8,
        )  # fmt: skip
        await big.cancel(wait=True)
        assert big.state == S.JOB_STATE_CANCELLED
        with pytest.raises(JobCancelled):
            await big.wait()

    run(main, limit=90)


def test_stack_bigquery_outputs(on_stack, stack):  # noqa: F811
    model, rows = on_stack

    async def main():
        job = await BatchPredictionJob.create(
            "iris-bq-aio",
            model,
            gcs_source="gs://aio-in/iris.jsonl",
            bigquery_destination_prefix=stack.project,
        )
        reader = await job.outputs(selected_fields=["prediction"])
        assert isinstance(reader, AsyncBigQueryReader) and (await reader.schema()).names == ["prediction"]
        assert (await reader.to_arrow()).num_rows == rows
        failed = reader.errors()  # every instance predicted: an empty errors table, with its columns
        assert isinstance(failed, AsyncBigQueryReader) and "errors" in (await failed.schema()).names
        assert (await failed.to_arrow()).num_rows == 0
        assert len([row async for row in await job.iter_outputs()]) == 100
        assert len([row async for row in await job.iter_outputs(bq_max_results=1000)]) == rows

    run(main, limit=60)


def test_stack_outputs_leave_the_event_loop_free(on_stack, stack):  # noqa: F811
    model, rows = on_stack

    async def main():
        job = await BatchPredictionJob.create(
            "iris-gated", model, gcs_source="gs://aio-in/iris.jsonl", gcs_destination_prefix="gs://aio-out/g"
        )
        for read in (
            lambda: _collect(job.iter_outputs()),
            lambda: _table(job.outputs()),
        ):
            gate = Gate(stack.gcs_endpoint)
            config.init(gcs_endpoint=f"http://{gate.address}")
            try:
                task = asyncio.ensure_future(read())
                await open_when_reached(gate, task)
                await task
            finally:
                gate.close()
            assert not gate.forced
        return task.result()

    assert run(main, limit=60).num_rows == rows


async def _collect(listed: Awaitable[AsyncIterator[Any]]) -> list[Any]:
    return [item async for item in await listed]


async def _table(reader: Awaitable[AsyncReader]) -> Any:
    return await (await reader).to_arrow()
