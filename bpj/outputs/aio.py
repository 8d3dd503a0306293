"""The output readers for asyncio: bpj's readers, driven from worker threads so that the event loop never
waits on the network, on decoding or on a file.

    from bpj.outputs import aio

    reader = await aio.read_gcs("gs://bucket/out/prediction-model-2026-01-01T00:00:00.000Z")
    table = await reader.to_arrow()
    async for batch in reader.iter_batches(): ...     # pyarrow.RecordBatch
    async for row in reader: ...                      # dicts

An :class:`AsyncReader` wraps a sync reader (:class:`bpj.outputs.GcsReader`, :class:`bpj.outputs.BigQueryReader`,
or any :class:`bpj.outputs.Reader`), which does the work as it does for blocking code: its thread pool, its
bound on bytes in flight, its crc32c checks and resumption. Around it:

- Whatever may block (making the reader, listing objects, creating the read session, combining a table,
  writing a file) runs in a thread (``asyncio.to_thread``).
- A stream (``iter_batches()``, ``records()``, ``files()``) runs the sync iterator in a worker thread of its
  own, which hands items to the loop through a queue of at most ``queue_size`` items (default 2: batches,
  a batch's rows, or files), beyond the sync reader's own ``max_bytes_in_flight``. The consumer gives the
  loop a turn after every item it takes.
- Stopping early (``break``, an exception, cancelling the task) stops the worker, which closes the sync
  iterator, which ends the sync reader's own threads; the stream's ``aclose()`` returns once they have all
  ended. After a ``break`` an async generator is closed when it is collected: wrap it in
  ``contextlib.aclosing(...)`` to close it at once.
- ``to_arrow()`` and ``to_pandas()`` read through such a stream, so cancelling them stops the read too.
  ``export()`` runs the sync ``export`` in a thread: it writes the whole file even if the task awaiting it
  is cancelled.

This module may be used without :mod:`bpj.aio`: it imports nothing of the job layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bpj import errors

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from bpj.gcs import GcsObject
    from bpj.outputs.bigquery import BigQueryReader
    from bpj.outputs.gcs import GcsReader
    from bpj.outputs.reader import Partition, Reader

__all__ = [
    "AsyncBigQueryReader",
    "AsyncGcsReader",
    "AsyncReader",
    "each",
    "in_thread",
    "read_bigquery",
    "read_gcs",
    "wrap",
]

T = TypeVar("T")

QUEUE_SIZE = 2
# The longest a worker blocked on a full queue waits before it looks at the stop flag again.
_POLL = 0.1
THREAD_NAME = "bpj-aio-stream"


# -- a sync iterator, driven from a thread ----------------------------------------------------------------


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def in_thread(
    produce: Callable[[], Iterable[T]], *, queue_size: int = QUEUE_SIZE, name: str = THREAD_NAME
) -> AsyncGenerator[T, None]:
    """``async for item in in_thread(produce)``: iterate ``produce()`` in a worker thread of its own (made at
    the first item asked for), with at most ``queue_size`` items waiting for the consumer. An error of the
    worker is raised in the consumer. When the consumer stops (end, ``break`` then ``aclose()``, an
    exception, a cancelled task), the worker stops at its next item and closes the iterator (a generator's
    ``finally`` runs in the worker thread); ``aclose()`` returns once the worker has ended."""
    return _pump(produce, _queue_size(queue_size), name)


def _queue_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.UsageError(f"queue_size must be a positive int, got {value!r}")
    return value


async def _pump(produce: Callable[[], Iterable[T]], queue_size: int, name: str) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    slots = threading.Semaphore(queue_size)
    stop = threading.Event()
    ended: asyncio.Future[None] = loop.create_future()

    def hand(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(items.put_nowait, item)

    def work() -> None:
        try:
            it = iter(produce())
            try:
                for item in it:
                    while not slots.acquire(timeout=_POLL):
                        if stop.is_set() or loop.is_closed():  # a loop closed without closing the stream
                            return
                    if stop.is_set():
                        return
                    hand(item)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            hand(_End)
        except BaseException as e:  # raised in the consumer
            hand(_Failed(e))
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish, ended)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = await items.get()
            if item is _End:
                return
            if isinstance(item, _Failed):
                raise item.error
            slots.release()
            yield item
            await asyncio.sleep(0)  # a consumer that never awaits still lets the loop run between items
    finally:
        stop.set()
        slots.release()  # wakes a worker waiting for room, which then sees the stop
        await asyncio.shield(ended)
        if worker.is_alive():  # past its last step: ends at once
            await asyncio.to_thread(worker.join)


def _finish(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


async def each(chunks: AsyncGenerator[list[T], None]) -> AsyncGenerator[T, None]:
    """The items of every list ``chunks`` yields (e.g. ``in_thread`` over pages or batches); closing it
    closes ``chunks``."""
    try:
        async for chunk in chunks:
            for item in chunk:
                yield item
    finally:
        await chunks.aclose()


def _rows(batches: Iterator[pa.RecordBatch]) -> Iterator[list[dict[str, Any]]]:
    """Each batch as a list of dicts (converted in the worker thread, not in the loop)."""
    try:
        for batch in batches:
            yield batch.to_pylist()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


# -- the readers ----------------------------------------------------------------------------------------


class AsyncReader:
    """A sync reader (``sync``) with async methods: the rows as Arrow batches, dicts, one table or a pandas
    DataFrame, a file, or picklable partitions. Making one does no I/O."""

    sync: Reader

    def __init__(self, reader: Reader, *, queue_size: int = QUEUE_SIZE) -> None:
        from bpj.outputs.reader import Reader

        if not isinstance(reader, Reader):
            raise errors.UsageError(f"AsyncReader wraps a bpj.outputs.Reader, got {type(reader).__name__}")
        self.sync = reader
        self.queue_size = _queue_size(queue_size)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.sync!r}>"

    def iter_batches(self) -> AsyncGenerator[pa.RecordBatch, None]:
        """The rows as Arrow record batches, read by the sync ``iter_batches()`` in a worker thread."""
        return in_thread(self.sync.iter_batches, queue_size=self.queue_size)

    def records(self) -> AsyncGenerator[dict[str, Any], None]:
        """The rows as dicts (each batch converted in the worker thread)."""
        return each(in_thread(lambda: _rows(self.sync.iter_batches()), queue_size=self.queue_size))

    def __aiter__(self) -> AsyncGenerator[dict[str, Any], None]:
        return self.records()

    async def to_arrow(self) -> pa.Table:
        """Every row in one table, as the sync ``to_arrow()`` makes it. Cancelling stops the read."""
        stream = self.iter_batches()
        try:
            batches = [b async for b in stream]
        finally:
            await stream.aclose()
        return await asyncio.to_thread(self._combine, batches)

    def _combine(self, batches: list[pa.RecordBatch]) -> pa.Table:
        from bpj.outputs.reader import unify

        return unify(batches)

    async def to_pandas(self, **kwargs: Any) -> pandas.DataFrame:
        """``(await to_arrow()).to_pandas(**kwargs)``, the conversion in a thread."""
        table = await self.to_arrow()
        return await asyncio.to_thread(table.to_pandas, **kwargs)

    async def texts(self, *, keep: Sequence[str] = ()) -> pa.Table:
        """The sync ``texts(keep=)`` (Gemini outputs: text, reasons, token counts, status), each batch
        converted in the worker thread. Cancelling stops the read."""
        from bpj.outputs.publisher import TEXT_COLUMNS, gemini_text
        from bpj.outputs.reader import _combine

        parts = await self._each_batch([*TEXT_COLUMNS, *keep], lambda b: gemini_text(b, keep=keep))
        return await asyncio.to_thread(_combine, parts, gemini_text)

    async def embeddings(self, *, keep: Sequence[str] = (), dtype: str = "float32") -> pa.Table:
        """The sync ``embeddings(keep=, dtype=)`` (vectors as a fixed-size list column), each batch converted
        in the worker thread. Cancelling stops the read."""
        from bpj.outputs.publisher import EMBEDDING_COLUMNS, embeddings
        from bpj.outputs.reader import _combine, _same_size

        def one(batch: Any) -> pa.Table:
            return embeddings(batch, keep=keep, dtype=dtype)

        parts = await self._each_batch([*EMBEDDING_COLUMNS, *keep], one)
        return await asyncio.to_thread(lambda: _combine(_same_size(parts), one))

    async def _each_batch(self, columns: list[str], convert: Callable[[Any], pa.Table]) -> list[pa.Table]:
        """``convert`` over each batch of the read of ``columns`` (as the sync ``only``), in the worker."""
        stream = in_thread(
            lambda: (convert(b) for b in self.sync.only(columns).iter_batches()), queue_size=self.queue_size
        )
        try:
            return [t async for t in stream]
        finally:
            await stream.aclose()

    async def export(self, path: str | os.PathLike[str], *, format: str | None = None) -> int:
        """The sync ``export(path, format=)`` in a thread: the rows written. Once started it runs to its end,
        even if the awaiting task is cancelled."""
        return await asyncio.to_thread(self.sync.export, path, format=format)

    async def partitions(self) -> Sequence[Partition]:
        """The sync ``partitions()`` (listing objects, or creating the read session) in a thread."""
        return await asyncio.to_thread(self.sync.partitions)


class AsyncGcsReader(AsyncReader):
    """An :class:`AsyncReader` over a :class:`bpj.outputs.GcsReader`, with its ``objects()``, ``files()``
    and ``errors()``."""

    sync: GcsReader

    async def objects(self) -> list[GcsObject]:
        """The objects read, in file order (listed in a thread at the first call, then remembered)."""
        return await asyncio.to_thread(self.sync.objects)

    def files(self) -> AsyncGenerator[tuple[str, bytes | memoryview], None]:
        """``(uri, bytes)`` for every object, each checked against its crc32c, downloaded by the sync
        ``files()`` in a worker thread (at most ``queue_size`` objects wait for you)."""
        return in_thread(self.sync.files, queue_size=self.queue_size)

    async def errors(self) -> AsyncGcsReader:
        """The same reader over the ``errors_*`` files next to the predictions."""
        return AsyncGcsReader(await asyncio.to_thread(self.sync.errors), queue_size=self.queue_size)


class AsyncBigQueryReader(AsyncReader):
    """An :class:`AsyncReader` over a :class:`bpj.outputs.BigQueryReader`; the read session (made in a
    thread at the first call that needs it) tells ``schema()``, ``streams()`` and
    ``estimated_row_count()``."""

    sync: BigQueryReader

    async def session(self) -> Any:
        """The ReadSession (CreateReadSession at the first call, in a thread)."""
        return await asyncio.to_thread(lambda: self.sync.session)

    async def schema(self) -> pa.Schema:
        """The Arrow schema of the rows read."""
        await self.session()
        return self.sync.schema

    async def streams(self) -> list[str]:
        """The names of the session's streams."""
        await self.session()
        return self.sync.streams

    async def estimated_row_count(self) -> int:
        await self.session()
        return self.sync.estimated_row_count

    def _combine(self, batches: list[pa.RecordBatch]) -> pa.Table:
        return self.sync.combine(batches)

    def errors(self) -> AsyncBigQueryReader:
        """The same reader over the errors table beside the predictions (no I/O: its session is made at
        its first read)."""
        return AsyncBigQueryReader(self.sync.errors(), queue_size=self.queue_size)


def wrap(reader: Reader, *, queue_size: int = QUEUE_SIZE) -> AsyncReader:
    """The async reader for a sync one: :class:`AsyncGcsReader` for a GcsReader, :class:`AsyncBigQueryReader`
    for a BigQueryReader, else :class:`AsyncReader`. No I/O."""
    from bpj.outputs.bigquery import BigQueryReader
    from bpj.outputs.gcs import GcsReader

    if isinstance(reader, GcsReader):
        return AsyncGcsReader(reader, queue_size=queue_size)
    if isinstance(reader, BigQueryReader):
        return AsyncBigQueryReader(reader, queue_size=queue_size)
    return AsyncReader(reader, queue_size=queue_size)


async def read_gcs(uri: str, *, queue_size: int = QUEUE_SIZE, **options: Any) -> AsyncGcsReader:
    """:func:`bpj.outputs.read_gcs` (same ``uri`` and options), made in a thread, wrapped."""
    from bpj import outputs

    reader = await asyncio.to_thread(lambda: outputs.read_gcs(uri, **options))
    return AsyncGcsReader(reader, queue_size=queue_size)


async def read_bigquery(uri: str, *, queue_size: int = QUEUE_SIZE, **options: Any) -> AsyncBigQueryReader:
    """:func:`bpj.outputs.read_bigquery` (same ``uri`` and options), made in a thread, wrapped. The read
    session is created at the first read, in a thread."""
    from bpj import outputs

    reader = await asyncio.to_thread(lambda: outputs.read_bigquery(uri, **options))
    return AsyncBigQueryReader(reader, queue_size=queue_size)
