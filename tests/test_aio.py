"""The behaviour suite of tests/test_transport_behaviour.py for the asyncio transports: a real gRPC server and a
real HTTP server on 127.0.0.1 and the in-memory transport, serving the same servicers, through the generated
async clients. Errors are compared with what the sync transport of the same kind raises for the same call.

No pytest-asyncio: each test runs its coroutine with :func:`run`. A transport is made inside the loop that
uses it (a grpc.aio channel serves one event loop).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from bpj import errors, types
from bpj._gen.services.big_query_read import READ_ROWS, AsyncBigQueryReadClient, BigQueryReadServicer
from bpj._gen.services.job_service import (
    GET_BATCH_PREDICTION_JOB,
    AsyncJobServiceClient,
    JobServiceClient,
    JobServiceServicer,
)
from bpj.transport.aio import AsyncGrpcTransport, AsyncInMemoryTransport, AsyncRestTransport
from bpj.transport.base import AsyncTransport, RetryPolicy
from tests.servicers import PARENT, job_name, stream_name

T = TypeVar("T")
FAST_RETRY = RetryPolicy(
    initial=0.01, maximum=0.02, multiplier=2.0, deadline=5.0, codes=frozenset({"UNAVAILABLE"})
)
CODES = [c for c in errors.Code if c != errors.Code.OK]


def run(main: Awaitable[T], limit: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main, limit)

    return asyncio.run(bounded())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def get(name: str) -> types.GetBatchPredictionJobRequest:
    return types.GetBatchPredictionJobRequest(name=name)


def read(stream: str, offset: int = 0) -> types.ReadRowsRequest:
    return types.ReadRowsRequest(read_stream=stream_name(stream), offset=offset)


async def row_counts(stream: Any) -> list[int]:
    return [r.row_count async for r in stream]


@pytest.fixture
def new_transport(kind, servers, servicers) -> Callable[[], AsyncTransport]:
    """Makes an async transport of this test's kind (call it inside the loop that will use it)."""

    def make() -> AsyncTransport:
        if kind == "grpc":
            return AsyncGrpcTransport(servers["grpc"].endpoint)
        if kind == "rest":
            return AsyncRestTransport(servers["rest"].url)
        return AsyncInMemoryTransport(*servicers)

    return make


@pytest.fixture
def jobs(new_transport):
    """``jobs(body)`` runs ``await body(client)`` with an AsyncJobServiceClient in a fresh loop."""

    def call(body: Callable[[AsyncJobServiceClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncJobServiceClient(new_transport()) as client:
                return await body(client)

        return run(main())

    return call


@pytest.fixture
def reads(new_transport):
    """``reads(body)`` runs ``await body(client)`` with an AsyncBigQueryReadClient in a fresh loop."""

    def call(body: Callable[[AsyncBigQueryReadClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncBigQueryReadClient(new_transport()) as client:
                return await body(client)

        return run(main())

    return call


def caught(jobs: Any, body: Callable[[AsyncJobServiceClient], Awaitable[Any]]) -> errors.ApiError:
    async def expect(client: AsyncJobServiceClient) -> errors.ApiError:
        with pytest.raises(errors.ApiError) as info:
            await body(client)
        return info.value

    return jobs(expect)  # type: ignore[no-any-return]


def summary(err: errors.ApiError) -> tuple[Any, ...]:
    return (type(err), err.code, err.message, err.rpc, err.resource, err.details, str(err))


# -- unary calls ----------------------------------------------------------------------------------------


def test_async_transports_implement_the_protocol(new_transport):
    async def check() -> None:
        transport = new_transport()
        assert isinstance(transport, AsyncTransport)
        await transport.close()

    run(check())


def test_unary_round_trip(jobs):
    name = job_name(unique("plain"))
    job = jobs(lambda c: c.get_batch_prediction_job(get(name)))
    assert isinstance(job, types.BatchPredictionJob)
    assert (job.name, job.state, dict(job.labels)) == (
        name,
        types.JobState.JOB_STATE_RUNNING,
        {"team": "bpj"},
    )


def test_routing_header_reaches_the_servicer(jobs, servicers):
    name = job_name(unique("routed"))
    jobs(lambda c: c.get_batch_prediction_job(get(name), metadata=[("x-trace", "t2")]))
    seen = [dict(md) for md in servicers[0].metadata if dict(md).get("x-trace") == "t2"]
    assert any(md.get("x-goog-request-params") == f"name={name}" for md in seen)


@pytest.mark.parametrize("kind", ["grpc", "rest"])  # the wire transports; in-memory sends no such header
def test_api_client_header_is_the_sync_transports(kind, jobs, servicers, sync_transports):
    name = job_name(unique("client"))
    jobs(lambda c: c.get_batch_prediction_job(get(name), metadata=[("x-trace", name)]))
    JobServiceClient(sync_transports[kind]).get_batch_prediction_job(get(name), metadata=[("x-trace", name)])
    sent = [
        dict(md).get("x-goog-api-client") for md in servicers[0].metadata if dict(md).get("x-trace") == name
    ]
    assert len(sent) == 2 and sent[0] == sent[1] and "bpj/" in sent[0]


def test_body_and_query_fields_arrive(jobs):
    async def body(c: AsyncJobServiceClient) -> tuple[Any, Any]:
        created = await c.create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(
                parent=PARENT,
                batch_prediction_job=types.BatchPredictionJob(display_name="nightly", labels={"a": "b"}),
            )
        )
        page = await c.list_batch_prediction_jobs(
            types.ListBatchPredictionJobsRequest(parent=PARENT, filter="f", page_size=2)
        )
        return created, page

    created, page = jobs(body)
    assert (created.name, created.display_name, dict(created.labels)) == (
        f"{PARENT}/batchPredictionJobs/123",
        "nightly",
        {"a": "b"},
    )
    assert [j.name.rsplit("/", 1)[-1] for j in page.batch_prediction_jobs] == ["0", "1"]
    assert page.next_page_token == "2"


@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
def test_server_error_is_the_sync_transports_error(kind, jobs, sync_transports, code):
    name = job_name(f"err-{code.name}")
    err = caught(jobs, lambda c: c.get_batch_prediction_job(get(name), retry=None))
    with pytest.raises(errors.ApiError) as info:
        JobServiceClient(sync_transports[kind]).get_batch_prediction_job(get(name), retry=None)
    assert summary(err) == summary(info.value)
    assert type(err) is errors.error_class(code)
    assert (err.message, err.rpc, err.resource) == (
        f"{code.name.lower()} for err-{code.name}",
        "JobService.GetBatchPredictionJob",
        name,
    )


@pytest.mark.parametrize("code", ["NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"])
def test_context_abort_maps_like_a_raised_error(jobs, code):
    err = caught(jobs, lambda c: c.get_batch_prediction_job(get(job_name(f"abort-{code}"))))
    assert type(err) is errors.error_class(errors.Code[code])
    assert err.message == f"aborted abort-{code}"


def test_retry_info_detail_survives(kind, jobs, sync_transports):
    err = caught(jobs, lambda c: c.get_batch_prediction_job(get(job_name("hint")), retry=None))
    assert isinstance(err, errors.ResourceExhausted)
    assert err.retry_delay == pytest.approx(0.05)
    with pytest.raises(errors.ResourceExhausted) as info:
        JobServiceClient(sync_transports[kind]).get_batch_prediction_job(get(job_name("hint")), retry=None)
    assert summary(err) == summary(info.value)


def test_unimplemented_method(jobs):
    request = types.DeleteBatchPredictionJobRequest(name=job_name("x"))
    err = caught(jobs, lambda c: c.delete_batch_prediction_job(request))
    assert isinstance(err, errors.Unimplemented)
    assert err.rpc == "JobService.DeleteBatchPredictionJob"


def test_idempotent_call_is_retried_on_unavailable(jobs, servicers):
    name = job_name(unique("flaky-2"))
    job = jobs(lambda c: c.get_batch_prediction_job(get(name), retry=FAST_RETRY))
    assert job.name == name
    assert servicers[0].calls[name] == 3


def test_retry_gives_up_with_the_last_error(jobs, servicers):
    name = job_name(unique("flaky-1000"))
    policy = RetryPolicy(
        initial=0.01, maximum=0.01, multiplier=1.0, deadline=0.3, codes=frozenset({"UNAVAILABLE"})
    )
    err = caught(jobs, lambda c: c.get_batch_prediction_job(get(name), retry=policy))
    assert isinstance(err, errors.Unavailable)
    assert 2 <= servicers[0].calls[name] < 1000


def test_non_idempotent_call_is_never_retried_blindly(jobs, servicers):
    before = servicers[0].calls["create"]
    request = types.CreateBatchPredictionJobRequest(
        parent=PARENT, batch_prediction_job=types.BatchPredictionJob(display_name="unavailable")
    )
    err = caught(jobs, lambda c: c.create_batch_prediction_job(request, retry=FAST_RETRY))
    assert isinstance(err, errors.Unavailable)
    assert servicers[0].calls["create"] == before + 1


def test_deadline_ends_the_call_without_waiting_for_the_servicer(jobs):
    # The servicer sleeps 1.5 s in a thread; the loop stays free and the caller hears at the deadline.
    async def body(c: AsyncJobServiceClient) -> tuple[errors.ApiError, float]:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as info:
            await c.get_batch_prediction_job(get(job_name("slow")), timeout=0.2, retry=None)
        return info.value, time.monotonic() - started

    err, took = jobs(body)
    assert (err.message, err.rpc, err.resource) == (
        "Deadline Exceeded",
        "JobService.GetBatchPredictionJob",
        job_name("slow"),
    )
    assert took < 1.0


def test_many_concurrent_calls(jobs):
    names = [job_name(unique(f"many{i}")) for i in range(50)]

    async def body(c: AsyncJobServiceClient) -> list[str]:
        got = await asyncio.gather(*(c.get_batch_prediction_job(get(n)) for n in names))
        return [j.name for j in got]

    assert jobs(body) == names


def test_request_from_another_pool_is_refused_before_the_network(jobs):
    from google.cloud.aiplatform_v1.types import GetBatchPredictionJobRequest as Official

    with pytest.raises(errors.UsageError, match="bpj.types"):
        jobs(lambda c: c.get_batch_prediction_job(Official.pb()(name=job_name("x"))))


def test_a_closed_transport_refuses_calls(new_transport):
    async def body() -> None:
        transport = new_transport()
        client = AsyncJobServiceClient(transport)
        await client.get_batch_prediction_job(get(job_name("before-close")))
        await transport.close()
        with pytest.raises(errors.UsageError, match="closed"):
            await client.get_batch_prediction_job(get(job_name("after-close")))

    run(body())


# -- server streams -------------------------------------------------------------------------------------


def test_server_stream_yields_every_message_in_order(reads):
    async def body(c: AsyncBigQueryReadClient) -> list[Any]:
        return [r async for r in c.read_rows(read("5"))]

    responses = reads(body)
    assert [r.row_count for r in responses] == [1, 2, 3, 4, 5]
    assert responses[3].arrow_record_batch.serialized_record_batch == bytes([3]) * 10


def test_server_stream_from_an_offset(reads):
    assert reads(lambda c: row_counts(c.read_rows(read("5", offset=3)))) == [4, 5]


def test_a_method_variant_with_decode_gets_the_wire_form_of_each_response(reads):
    variant = dataclasses.replace(READ_ROWS, decode=lambda data: ("wire", type(data), data))

    async def body(c: AsyncBigQueryReadClient) -> tuple[list[Any], list[Any]]:
        wired = [r async for r in c.transport.server_stream(variant, read("3"))]
        return wired, [r async for r in c.read_rows(read("3"))]

    wired, messages = reads(body)
    assert [(tag, kind) for tag, kind, _ in wired] == [("wire", bytes)] * 3
    assert [types.ReadRowsResponse.FromString(data) for _, _, data in wired] == messages


def test_empty_stream(reads):
    assert reads(lambda c: row_counts(c.read_rows(read("0")))) == []


def test_error_mid_stream_after_the_messages_before_it(reads):
    async def body(c: AsyncBigQueryReadClient) -> tuple[list[int], errors.ApiError]:
        got = []
        with pytest.raises(errors.Unavailable) as info:
            async for r in c.read_rows(read("broken-3")):
                got.append(r.row_count)
        return got, info.value

    got, err = reads(body)
    assert got == [1, 2, 3]
    assert (err.message, err.rpc, err.resource) == (
        "stream broken-3 reset",
        "BigQueryRead.ReadRows",
        stream_name("broken-3"),
    )


def test_stopping_a_stream_early_ends_the_server_side(reads, servicers):
    finished = servicers[1].finished
    finished.clear()

    async def body(c: AsyncBigQueryReadClient) -> tuple[list[int], bool]:
        stream = c.read_rows(read("100000"))
        first = [(await stream.__anext__()).row_count, (await stream.__anext__()).row_count]
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        return first, await asyncio.to_thread(finished.wait, 10)

    assert reads(body) == ([1, 2], True)
    assert no_stream_threads_left()


def no_stream_threads_left(wait: float = 5.0) -> bool:
    """The threads that read REST and in-memory streams have all ended (within ``wait`` seconds)."""
    end = time.monotonic() + wait
    while any(t.name == "bpj-aio-stream" for t in threading.enumerate()):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_dropping_a_stream_ends_the_server_side(reads, servicers):
    finished = servicers[1].finished
    finished.clear()

    async def body(c: AsyncBigQueryReadClient) -> bool:
        stream = c.read_rows(read("100000"))
        assert (await stream.__anext__()).row_count == 1
        del stream
        gc.collect()
        return await asyncio.to_thread(finished.wait, 10)

    assert reads(body)
    assert no_stream_threads_left()


def test_stream_deadline(reads):
    async def body(c: AsyncBigQueryReadClient) -> errors.ApiError:
        with pytest.raises(errors.DeadlineExceeded) as info:
            async for _ in c.read_rows(read("100000000"), timeout=0.3):
                await asyncio.sleep(0.001)
        return info.value

    err = reads(body)
    assert (err.rpc, err.resource) == ("BigQueryRead.ReadRows", stream_name("100000000"))
    # gRPC's core words a deadline mid-stream its own way, over the sync GrpcTransport too.
    assert err.message == "Deadline Exceeded"
    assert no_stream_threads_left()


def test_streams_and_calls_interleave(reads):
    async def body(c: AsyncBigQueryReadClient) -> list[list[int]]:
        return list(await asyncio.gather(*(row_counts(c.read_rows(read(str(n)))) for n in range(1, 11))))

    assert reads(body) == [list(range(1, n + 1)) for n in range(1, 11)]


# -- transport specifics --------------------------------------------------------------------------------


def test_grpc_transport_serves_one_event_loop(servers):
    transport = AsyncGrpcTransport(servers["grpc"].endpoint)
    client = AsyncJobServiceClient(transport)
    run(client.get_batch_prediction_job(get(job_name("first-loop"))))
    with pytest.raises(errors.UsageError, match="one transport per event loop"):
        run(client.get_batch_prediction_job(get(job_name("second-loop"))))


def test_grpc_endpoint_rules_are_the_sync_transports():
    assert AsyncGrpcTransport("127.0.0.1:8500").tls is False
    assert AsyncGrpcTransport("example.com").target == "example.com:443"
    with pytest.raises(errors.UsageError, match="needs a port"):
        AsyncGrpcTransport("127.0.0.1")


def test_rest_transcoding_error_comes_before_the_network():
    async def body() -> None:
        transport = AsyncRestTransport("http://127.0.0.1:9")  # nothing listens there
        client = AsyncBigQueryReadClient(transport)
        with pytest.raises(errors.UsageError):
            client.read_rows(types.ReadRowsRequest(read_stream="not/a/stream"))
        await transport.close()

    run(body())


def test_rest_connection_refused_is_unavailable():
    async def body() -> errors.ApiError:
        async with AsyncJobServiceClient(AsyncRestTransport("http://127.0.0.1:9")) as client:
            with pytest.raises(errors.Unavailable) as info:
                await client.get_batch_prediction_job(get(job_name("nowhere")), retry=None)
            return info.value

    err = run(body())
    assert (err.rpc, err.resource) == ("JobService.GetBatchPredictionJob", job_name("nowhere"))
    assert type(err) is errors.Unreachable


def test_grpc_endpoint_never_reached_is_unreachable_and_one_that_answered_is_unavailable(servicers):
    from bpj.local.servers.serve import serve_grpc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    server = serve_grpc(*servicers)

    async def body() -> tuple[errors.ApiError, errors.ApiError]:
        async with AsyncJobServiceClient(AsyncGrpcTransport(closed)) as client:
            with pytest.raises(errors.Unavailable) as never:
                await client.get_batch_prediction_job(get(job_name("x")), retry=None, timeout=5)
        async with AsyncJobServiceClient(AsyncGrpcTransport(server.endpoint)) as client:
            await client.get_batch_prediction_job(get(job_name(unique("up"))), retry=None)
            server.stop(None)
            with pytest.raises(errors.Unavailable) as once:
                await client.get_batch_prediction_job(get(job_name("x")), retry=None, timeout=5)
        return never.value, once.value

    never, once = run(body())
    assert type(never) is errors.Unreachable and closed in never.message
    assert type(once) is errors.Unavailable


# -- async servicers under the in-memory transport --------------------------------------------------------


class AsyncJobs(JobServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def GetBatchPredictionJob(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        name, request.name = request.name, "changed"  # a copy: the caller's request is not touched
        await asyncio.sleep(0)
        if name.endswith("/missing"):
            raise errors.NotFound("no such job")
        if name.endswith("/sleepy"):
            await asyncio.sleep(5)
        return types.BatchPredictionJob(name=name, display_name="async")


class AsyncReads(BigQueryReadServicer):
    def __init__(self) -> None:
        self.closed = 0

    async def ReadRows(self, request, context):
        try:
            for i in range(request.offset, 1_000_000):
                await asyncio.sleep(0)
                if request.read_stream.endswith("/broken") and i == 2:
                    raise errors.DataLoss("lost")
                yield types.ReadRowsResponse(row_count=i + 1)
        finally:
            self.closed += 1


def test_async_servicer_unary():
    servicer = AsyncJobs()
    name = job_name("a1")

    async def body() -> Any:
        async with AsyncJobServiceClient(AsyncInMemoryTransport(servicer)) as client:
            request = get(name)
            job = await client.get_batch_prediction_job(request)
            assert request.name == name
            return job

    job = run(body())
    assert (job.name, job.display_name) == (name, "async")
    assert servicer.metadata[-1]["x-goog-request-params"] == f"name={name}"


def test_async_servicer_error_and_deadline():
    async def body() -> tuple[errors.ApiError, errors.ApiError, float]:
        async with AsyncJobServiceClient(AsyncInMemoryTransport(AsyncJobs())) as client:
            with pytest.raises(errors.NotFound) as missing:
                await client.get_batch_prediction_job(get(job_name("missing")))
            started = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded) as late:
                await client.get_batch_prediction_job(get(job_name("sleepy")), timeout=0.1, retry=None)
            return missing.value, late.value, time.monotonic() - started

    missing, late, took = run(body())
    assert (
        str(missing)
        == f"NOT_FOUND from JobService.GetBatchPredictionJob on {job_name('missing')}: no such job"
    )
    assert (late.message, late.resource) == ("Deadline Exceeded", job_name("sleepy"))
    assert took < 1.0


def test_async_generator_servicer_stream():
    servicer = AsyncReads()

    async def body() -> tuple[list[int], list[int], errors.ApiError]:
        async with AsyncBigQueryReadClient(AsyncInMemoryTransport(servicer)) as client:
            stream = client.read_rows(read("s", offset=5))
            first = [(await stream.__anext__()).row_count for _ in range(3)]
            await stream.aclose()
            got = []
            with pytest.raises(errors.DataLoss) as info:
                async for r in client.read_rows(read("broken")):
                    got.append(r.row_count)
            return first, got, info.value

    first, got, err = run(body())
    assert first == [6, 7, 8]
    assert got == [1, 2]
    assert (err.message, err.rpc) == ("lost", "BigQueryRead.ReadRows")
    assert servicer.closed == 2


def test_async_handler_function():
    seen = []

    async def handler(method, request, context):
        seen.append(method.name)
        return types.BatchPredictionJob(name=request.name, display_name="handled")

    async def body() -> Any:
        transport = AsyncInMemoryTransport(handler=handler)
        return await transport.unary(GET_BATCH_PREDICTION_JOB, get(job_name("h")), timeout=1)

    job = run(body())
    assert (job.name, job.display_name, seen) == (job_name("h"), "handled", ["GetBatchPredictionJob"])
