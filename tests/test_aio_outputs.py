"""bpj.outputs.aio: the readers for asyncio, against the local stack's real Cloud Storage and BigQuery Storage
Read servers (and a reader of numbers made here for the queue's rules).

That a read leaves the event loop free is shown without timing, by a gate in front of the server
(tests/gate.py) that only a coroutine running beside the read opens.

No pytest-asyncio: each test runs its coroutine with :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors, outputs
from bpj.outputs import aio
from bpj.outputs.reader import Reader
from tests.gate import Gate, open_when_reached
from tests.local.conftest import stack  # noqa: F401 (fixture)

T = TypeVar("T")
PROJECT, DATASET = "bpj-local", "aio_outputs"
_names = itertools.count()


def run(main: Callable[[], Awaitable[T]], limit: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), limit)

    return asyncio.run(bounded())


def reader_threads() -> list[str]:
    """The threads of bpj's readers and of this module's streams still alive."""
    prefixes = ("bpj-gcs", "bpj-bigquery-read", aio.THREAD_NAME)
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


# -- a reader of numbers -----------------------------------------------------------------------------------


class Numbers(Reader):
    """``n`` batches of one row each (``{"i": k}``); notes how far it ran ahead of the consumer, where its
    iterator ran, and whether it was closed."""

    def __init__(self, n: int, *, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.made = 0
        self.taken = 0
        self.ahead: list[int] = []
        self.threads: set[str] = set()
        self.closed = threading.Event()

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                self.ahead.append(self.made - self.taken)
                if i == self.fail_at:
                    raise errors.DataCorruption(f"batch {i} is broken")
                self.made += 1
                yield pa.record_batch({"i": [i]})
        finally:
            self.closed.set()

    def partitions(self) -> list[Any]:
        return [self.n]


def test_every_form_of_the_rows_comes_from_a_worker_thread(tmp_path):
    async def main():
        numbers = Numbers(50)
        reader = aio.wrap(numbers)
        assert type(reader) is aio.AsyncReader and reader.sync is numbers
        assert (await reader.to_arrow()).column("i").to_pylist() == list(range(50))
        assert [row async for row in reader] == [{"i": i} for i in range(50)]
        assert [b.num_rows async for b in reader.iter_batches()] == [1] * 50
        assert [r async for r in reader.records()] == [{"i": i} for i in range(50)]
        assert list((await reader.to_pandas())["i"]) == list(range(50))
        assert await reader.export(tmp_path / "n.jsonl") == 50
        assert (tmp_path / "n.jsonl").read_text().splitlines()[-1] == '{"i": 49}'
        assert await reader.partitions() == [50]
        assert threading.main_thread().name not in numbers.threads  # export: asyncio.to_thread's
        assert aio.THREAD_NAME in numbers.threads
        return reader_threads()

    assert run(main) == []


@pytest.mark.parametrize("queue_size", [1, 2, 5])
def test_the_worker_runs_at_most_the_queue_ahead_of_the_consumer(queue_size):
    async def main():
        numbers = Numbers(40)
        got = []
        async for batch in aio.wrap(numbers, queue_size=queue_size).iter_batches():
            numbers.taken += 1
            got.append(batch.column(0)[0].as_py())
            # A slow consumer: let the worker fill the queue before the next batch is taken.
            while numbers.made < min(numbers.n, numbers.taken + queue_size):
                await asyncio.sleep(0.001)
        assert got == list(range(40))
        # One batch may be on its way to the consumer (its slot freed, not yet counted as taken).
        assert max(numbers.ahead) <= queue_size + 1
        assert queue_size in numbers.ahead

    run(main)


@pytest.mark.parametrize("how", ["break", "raise", "aclose"])
def test_stopping_early_closes_the_sync_iterator_in_its_thread(how):
    async def main():
        numbers = Numbers(1000)
        batches = aio.wrap(numbers).iter_batches()
        if how == "aclose":
            await batches.__anext__()
            await batches.aclose()
        elif how == "break":
            async with contextlib.aclosing(batches):
                async for _ in batches:
                    break
        else:
            with pytest.raises(KeyError):
                async with contextlib.aclosing(batches):
                    async for _ in batches:
                        raise KeyError("the consumer's own error")
        assert numbers.closed.is_set() and numbers.made < 1000
        assert numbers.threads == {aio.THREAD_NAME}
        return reader_threads()

    assert run(main) == []


def test_an_error_of_the_read_is_raised_in_the_consumer():
    async def main():
        numbers = Numbers(10, fail_at=3)
        reader = aio.wrap(numbers)
        seen = []
        with pytest.raises(errors.DataCorruption, match="batch 3 is broken"):
            async for row in reader:
                seen.append(row["i"])
        assert seen == [0, 1, 2] and numbers.closed.is_set()
        with pytest.raises(errors.DataCorruption):
            await reader.to_arrow()
        return reader_threads()

    assert run(main) == []


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 25),
    queue_size=st.integers(1, 4),
    stop_after=st.none() | st.integers(0, 25),
    fail_at=st.none() | st.integers(0, 25),
)
def test_a_stream_gives_the_rows_in_order_then_stops_or_fails_and_leaves_nothing_running(
    n, queue_size, stop_after, fail_at
):
    async def main():
        numbers = Numbers(n, fail_at=fail_at)
        got: list[int] = []
        failure = None
        async with contextlib.aclosing(aio.wrap(numbers, queue_size=queue_size).records()) as rows:
            try:
                async for row in rows:
                    if len(got) == stop_after:
                        break
                    got.append(row["i"])
            except errors.DataCorruption as e:
                failure = e
        return got, failure, numbers, reader_threads()

    got, failure, numbers, left = run(main)
    end = min(x for x in (n, stop_after, fail_at) if x is not None)
    assert got == list(range(end)) and left == [] and numbers.closed.is_set()
    # The break comes with row ``stop_after``; the failure instead of row ``fail_at``.
    fails = fail_at is not None and fail_at < n and (stop_after is None or fail_at <= stop_after)
    assert (failure is not None) == fails


def test_bad_arguments_fail_before_any_thread():
    with pytest.raises(errors.UsageError, match="queue_size must be a positive int"):
        aio.wrap(Numbers(1), queue_size=0)
    with pytest.raises(errors.UsageError, match="queue_size"):
        aio.in_thread(list, queue_size=True)
    with pytest.raises(errors.UsageError, match="wraps a bpj.outputs.Reader"):
        aio.AsyncReader([1, 2])  # type: ignore[arg-type]
    with pytest.raises(errors.UsageError, match="kind must be"):
        run(lambda: aio.read_gcs("gs://b/o", kind="nope"))
    with pytest.raises(errors.UsageError, match="bq://project.dataset.table"):
        run(lambda: aio.read_bigquery("bq://p.d"))
    assert reader_threads() == []


# -- real outputs on the local stack --------------------------------------------------------------------------


def prediction_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {"instance": [i, i / 2], "prediction": {"label": f"c{i % 3}", "score": i / 100}}
        for i in range(offset, offset + n)
    ]


@pytest.fixture(scope="module")
def gcs_output(stack):  # noqa: F811
    """A job's output directory on the stack's Cloud Storage: three predictions files and an errors file."""
    stack.gcs.create_bucket("aio-outputs")
    directory = "gs://aio-outputs/job/prediction-iris-2026-01-01T00:00:00.000Z"
    for n in range(3):
        body = "".join(json.dumps(r) + "\n" for r in prediction_rows(200, 200 * n))
        stack.gcs.write(f"{directory}/predictions_{n + 1:04d}.jsonl", body.encode())
    errors_body = json.dumps({"instance": [0, 0], "error": {"code": 3, "message": "bad"}}) + "\n"
    stack.gcs.write(f"{directory}/errors_0001.jsonl", errors_body.encode())
    return directory


@pytest.fixture(scope="module")
def bq_output(stack):  # noqa: F811
    """A predictions table on the stack's BigQuery, written in five appends."""
    schema = pa.schema([("id", pa.int64()), ("prediction", pa.string())])
    stack.tables.create_dataset(PROJECT, DATASET, exists_ok=True)
    stack.tables.create_table(PROJECT, DATASET, "predictions", schema, exists_ok=True)
    if not stack.tables.num_rows(PROJECT, DATASET, "predictions"):
        for part in range(5):
            ids = range(part * 300, (part + 1) * 300)
            stack.tables.append(
                PROJECT,
                DATASET,
                "predictions",
                pa.table({"id": ids, "prediction": [f"p{i}" for i in ids]}, schema),
            )
    return f"bq://{PROJECT}.{DATASET}.predictions"


def bq_client(endpoint: str) -> Any:
    from bpj import clients
    from bpj.transport.grpc import GrpcTransport

    return clients.bigquery_read(transport=GrpcTransport(endpoint))


def by(table: pa.Table, key: str) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: json.dumps(r[key]))


def test_gcs_outputs_read_as_the_sync_reader_reads_them(stack, gcs_output, tmp_path):  # noqa: F811
    sync = outputs.read_gcs(gcs_output, endpoint=stack.gcs_endpoint)
    expected = sync.to_arrow()

    async def main():
        reader = await aio.read_gcs(gcs_output, endpoint=stack.gcs_endpoint)
        assert isinstance(reader, aio.AsyncGcsReader)
        table = await reader.to_arrow()
        assert table.num_rows == 600 and by(table, "instance") == by(expected, "instance")
        rows = [row async for row in reader]
        assert sorted(r["instance"][0] for r in rows) == list(range(600))
        assert sum([b.num_rows async for b in reader.iter_batches()]) == 600
        assert len(await reader.to_pandas()) == 600
        names = [o.name.rsplit("/", 1)[1] for o in await reader.objects()]
        assert names == ["predictions_0001.jsonl", "predictions_0002.jsonl", "predictions_0003.jsonl"]
        files = [(uri, data) async for uri, data in reader.files()]
        assert sorted(uri for uri, _ in files) == sorted(uri for uri, _ in sync.files())
        assert sum(data.count(b"\n") for _, data in files) == 600
        assert len(await reader.partitions()) == 3
        failed = await reader.errors()
        assert [r["error"]["message"] async for r in failed] == ["bad"]
        assert await reader.export(tmp_path / "out.parquet") == 600
        return reader_threads()

    assert run(main) == []


def test_bigquery_outputs_read_as_the_sync_reader_reads_them(stack, bq_output):  # noqa: F811
    client = bq_client(stack.bigquery_storage_endpoint)
    expected = outputs.read_bigquery(bq_output, client=client).to_arrow()

    async def main():
        reader = await aio.read_bigquery(bq_output, client=client, max_stream_count=3)
        assert isinstance(reader, aio.AsyncBigQueryReader)
        assert (await reader.schema()).names == ["id", "prediction"]
        streams = await reader.streams()
        assert 1 <= len(streams) <= 3 and await reader.estimated_row_count() == 1500
        table = await reader.to_arrow()
        assert table.schema == expected.schema and by(table, "id") == by(expected, "id")
        assert sorted([r["id"] async for r in reader]) == list(range(1500))
        assert [p.stream for p in await reader.partitions()] == streams
        selected = await aio.read_bigquery(
            bq_output, client=client, selected_fields=["id"], row_restriction="id < 10"
        )
        assert sorted((await selected.to_arrow()).column("id").to_pylist()) == list(range(10))
        return reader_threads()

    try:
        assert run(main) == []
    finally:
        client.close()


# -- the loop stays free ----------------------------------------------------------------------------------------


@pytest.fixture(params=["gcs", "bigquery"])
def gated(request, stack, gcs_output, bq_output):  # noqa: F811
    """``(gate, make)``: ``await make()`` makes an async reader whose every byte goes through the gate."""
    if request.param == "gcs":
        gate = Gate(stack.gcs_endpoint)

        async def make() -> aio.AsyncReader:
            return await aio.read_gcs(gcs_output, endpoint=f"http://{gate.address}")

        yield gate, make, 600
        gate.close()
        return
    gate = Gate(stack.bigquery_storage_endpoint)
    client = bq_client(gate.address)

    async def make_bq() -> aio.AsyncReader:
        return await aio.read_bigquery(bq_output, client=client, max_stream_count=3)

    yield gate, make_bq, 1500
    client.close()
    gate.close()


def test_a_read_leaves_the_event_loop_free(gated):
    gate, make, rows = gated

    async def main():
        async def read() -> pa.Table:
            return await (await make()).to_arrow()

        task = asyncio.ensure_future(read())
        await open_when_reached(gate, task)
        return await task

    assert run(main).num_rows == rows
    assert not gate.forced
    assert reader_threads() == []


def test_a_stream_leaves_the_event_loop_free(gated):
    gate, make, rows = gated

    async def main():
        reader = await make()
        count = 0
        async for batch in reader.iter_batches():
            count += batch.num_rows
        return count

    async def both():
        task = asyncio.ensure_future(main())
        await open_when_reached(gate, task)
        return await task

    assert run(both) == rows
    assert not gate.forced
    assert reader_threads() == []


def test_cancelling_a_read_held_at_the_gate_ends_every_worker(gated):
    gate, make, _ = gated

    async def main():
        reader = await make()
        task = asyncio.ensure_future(reader.to_arrow())
        while not gate.reached.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        gate.open()  # the sync reader's threads see the stop once their call returns
        with pytest.raises(asyncio.CancelledError):
            await task
        return reader_threads()

    assert run(main) == []
    assert not gate.forced
