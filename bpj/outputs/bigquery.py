"""Read a BigQuery table through the Storage Read API, as Arrow record batches.

    reader = read_bigquery("bq://my-project.prediction_model_2024_01_01.predictions")
    table = reader.to_arrow()                    # every stream, read in parallel
    for batch in reader.iter_batches(): ...      # memory bounded by max_bytes_in_flight
    tasks = reader.partitions()                  # one picklable task per stream, for Ray, Dask or Beam

A read is one CreateReadSession (Arrow; selected fields and row restriction; LZ4 response compression when
the ``lz4`` package is installed), then ReadRows on every stream of the session from a bounded pool of
threads. Each response is read from its wire bytes (:mod:`bpj.outputs.wire`) and its record batch decoded
against the session's schema without a copy (the batch's buffers point into the bytes as received), then
handed to the consumer through a queue bounded in bytes.

Columns of BigQuery's JSON type come from the server as JSON text; the reader parses them into nested Arrow
values (structs, lists) in the worker threads, and so the ``request``, ``response`` and ``predictions``
columns of a publisher model's output table (one with ``status``; Gemini, embeddings) when they are JSON text
in STRING columns. So the rows have the shape the same output has in Cloud Storage. ``parse_json=False``
keeps the text, ``parse_json=["col", ...]`` parses just those columns. ``schema`` stays the session's
schema, with the JSON columns as strings.

A stream broken by UNAVAILABLE, UNKNOWN, RST_STREAM (INTERNAL) or RESOURCE_EXHAUSTED with a RetryInfo is
opened again at the row offset that follows the rows already handed over, so no row is lost or repeated.
When the consumer stops early, the workers see a done flag (they never wait longer than a short timeout
without looking at it) and their ReadRows calls are cancelled, so every worker thread ends.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from bpj import bq_uri, errors
from bpj.outputs.json_columns import parse_columns
from bpj.outputs.reader import Partition, Progress, Reader, cores, export_format
from bpj.outputs.wire import READ_ROWS_WIRE, ReadRowsChunk, decode_response, lz4_available

if TYPE_CHECKING:
    import pyarrow as pa

    from bpj._gen.services.big_query_read import BigQueryReadClient

log = logging.getLogger("bpj")

MiB = 1 << 20
DEFAULT_BYTES_IN_FLIGHT = 256 * MiB
# What one open ReadRows stream holds in gRPC's receive buffers (its HTTP/2 window, grown by BDP probing,
# and the message being assembled): measured 15-20 MB on loopback with 2 MiB responses. A read keeps at
# most max_bytes_in_flight / STREAM_BUFFER streams open at once, so these buffers stay within the bound too.
STREAM_BUFFER = 16 * MiB
# A stream is opened again at most this many times in all, and at most MAX_STALLED_RESUMES times in a row
# without a row arriving in between.
MAX_RESUMES = 100
MAX_STALLED_RESUMES = 5
# The longest a blocked worker or consumer waits before it looks at the done flag again.
_POLL = 0.1
# How long the consumer waits for the workers to end after it stopped them.
_JOIN_TIMEOUT = 10.0
_THREAD_PREFIX = "bpj-bigquery-read"


# -- table names -----------------------------------------------------------------------------------------


def parse_table(uri: str) -> tuple[str, str, str]:
    """``(project, dataset, table)`` of ``bq://project.dataset.table`` or ``projects/p/datasets/d/tables/t``.

    A project ID may be domain-scoped (``example.com:my-project``), as ``bpj.bq_uri`` reads it; the
    ``bq://`` may be left out.
    """
    text = uri.strip() if isinstance(uri, str) else ""
    body = text[len("bq://") :] if text.startswith("bq://") else text
    if body.startswith("projects/"):
        seg = body.split("/")
        if len(seg) == 6 and (seg[0], seg[2], seg[4]) == ("projects", "datasets", "tables") and all(seg):
            return seg[1], seg[3], seg[5]
    else:
        names = bq_uri.parse(f"bq://{body}")
        if names is not None and names.dataset is not None and names.table is not None:
            return names.project, names.dataset, names.table
    raise errors.UsageError(
        f"a BigQuery table must look like bq://project.dataset.table or "
        f"projects/PROJECT/datasets/DATASET/tables/TABLE, got {uri!r}"
    )


# -- resuming a stream -----------------------------------------------------------------------------------


def resume_delay(err: errors.ApiError, attempt: int) -> float | None:
    """Seconds to wait before opening a broken stream again at its offset, or None when ``err`` is final.

    UNAVAILABLE and UNKNOWN (a connection that went away), INTERNAL with RST_STREAM in the message (an
    HTTP/2 stream reset on the way) and RESOURCE_EXHAUSTED with a RetryInfo (the server says when) resume.
    """
    hint = err.retry_delay
    if isinstance(err, errors.ResourceExhausted):
        return None if hint is None else max(0.0, hint)
    resumable = isinstance(err, errors.Unavailable | errors.Unknown) or (
        isinstance(err, errors.Internal) and "RST_STREAM" in err.message
    )
    if not resumable:
        return None
    if hint is not None:
        return max(0.0, hint)
    # The first attempt right away (the channel reconnects by itself), then backoff with full jitter.
    return 0.0 if attempt == 0 else random.random() * min(5.0, 0.1 * 2**attempt)


Batch = tuple["pa.RecordBatch", int, int]


def stream_batches(
    client: BigQueryReadClient,
    stream: str,
    schema: pa.Schema,
    offset: int = 0,
    *,
    track: Callable[[Any], bool] | None = None,
    untrack: Callable[[Any], None] | None = None,
    stopped: Callable[[float], bool] = lambda _: False,
) -> Generator[Batch, None, None]:
    """``(batch, rows, bytes)`` for every response of ReadRows on ``stream`` from row ``offset`` on.

    A broken stream is opened again at the offset after the rows this generator has yielded (see
    :func:`resume_delay`). ``track(call)`` is told of every call (returning False when the read is over)
    and ``untrack(call)`` of its end, so another thread can cancel it; ``stopped(seconds)`` waits between
    attempts and says whether the read was stopped meanwhile.
    """
    from bpj import types

    resumes = stalled = 0
    while True:
        call = None
        delay = 0.0
        try:
            request = types.ReadRowsRequest(read_stream=stream, offset=offset)
            call = client.transport.server_stream(READ_ROWS_WIRE, request, timeout=READ_ROWS_WIRE.timeout)
            if track is not None and not track(call):
                return
            for chunk in call:
                batch, rows, size = decode_response(cast(ReadRowsChunk, chunk), schema)
                if batch is None:
                    continue
                yield batch, rows, size
                offset += rows
                stalled = 0
            return
        except errors.ApiError as err:
            if stopped(0.0):
                return
            wait = resume_delay(err, stalled)
            if wait is None or resumes >= MAX_RESUMES or stalled >= MAX_STALLED_RESUMES:
                raise
            resumes += 1
            stalled += 1
            delay = wait
            log.debug("ReadRows %s broke (%s); resuming at row %d in %.2fs", stream, err, offset, delay)
        finally:
            if call is not None:
                close = getattr(call, "close", None)
                if close is not None:
                    close()
                if untrack is not None:
                    untrack(call)
        if stopped(delay):
            return


# -- the flow between workers and the consumer -------------------------------------------------------------


class _Flow:
    """Batches on their way from the workers to the consumer, bounded in bytes, and the done flag.

    Unordered, one queue takes every stream's batches. Ordered, each stream has its own queue and the
    consumer drains them in stream order; the stream it is draining (the head) may always put one batch
    past the bound, so that the other streams' batches filling the bound never block the head.
    """

    def __init__(self, streams: int, limit: int, ordered: bool) -> None:
        self.lock = threading.Lock()
        self.readable = threading.Condition(self.lock)
        self.writable = threading.Condition(self.lock)
        self.limit = max(1, limit)
        self.used = 0
        self.ordered = ordered
        self.queues: list[deque[tuple[pa.RecordBatch, int]]] = [
            deque() for _ in range(streams if ordered else 1)
        ]
        self.ended = [False] * streams
        self.remaining = streams
        self.head = 0
        self.done = False
        self.error: BaseException | None = None
        self.calls: set[Any] = set()
        self.next_stream = 0
        self.streams = streams

    # workers
    def take_stream(self) -> int | None:
        with self.lock:
            if self.done or self.next_stream >= self.streams:
                return None
            self.next_stream += 1
            return self.next_stream - 1

    def put(self, index: int, batch: pa.RecordBatch, size: int) -> bool:
        queue = self.queues[index if self.ordered else 0]
        with self.lock:
            while not self.done:
                if (
                    self.used + size <= self.limit
                    or self.used == 0
                    or (self.ordered and index == self.head and not queue)
                ):
                    self.used += size
                    queue.append((batch, size))
                    self.readable.notify()
                    return True
                self.writable.wait(_POLL)
            return False

    def end(self, index: int) -> None:
        with self.lock:
            self.ended[index] = True
            self.remaining -= 1
            self.readable.notify()

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.error is None and not self.done:
                self.error = error
            self.readable.notify()

    def track(self, call: Any) -> bool:
        with self.lock:
            if self.done:
                call.cancel()
                return False
            self.calls.add(call)
            return True

    def untrack(self, call: Any) -> None:
        with self.lock:
            self.calls.discard(call)

    def stopped(self, seconds: float) -> bool:
        with self.lock:
            if seconds > 0 and not self.done:
                self.writable.wait(seconds)
            return self.done

    # the consumer
    def get(self) -> tuple[pa.RecordBatch, int] | None:
        """The next batch and its size, None at the end; raises a worker's error."""
        with self.lock:
            while True:
                if self.error is not None:
                    raise self.error
                if self.ordered and self.head >= len(self.queues):
                    return None
                queue = self.queues[self.head if self.ordered else 0]
                if queue:
                    item = queue.popleft()
                    self.used -= item[1]
                    self.writable.notify_all()
                    return item
                if self.ordered:
                    if self.ended[self.head]:
                        self.head += 1
                        self.writable.notify_all()
                        continue
                elif self.remaining == 0:
                    return None
                self.readable.wait(_POLL)

    def stop(self) -> None:
        with self.lock:
            self.done = True
            calls, self.calls = list(self.calls), set()
            for q in self.queues:
                q.clear()
            self.used = 0
            self.writable.notify_all()
            self.readable.notify_all()
        for call in calls:
            with contextlib.suppress(Exception):
                call.cancel()


# -- the reader ------------------------------------------------------------------------------------------------


class BigQueryReader(Reader):
    """The rows of one BigQuery table (or a selection of it), read through one Storage Read session.

    The session is created at the first read and reused by later ones (a session lives six hours).
    ``schema``, ``streams`` and ``estimated_row_count`` describe it. ``stream_buffer``: the memory counted
    against ``max_bytes_in_flight`` for each stream open at once (see :data:`STREAM_BUFFER`).
    """

    def __init__(
        self,
        table: str,
        *,
        selected_fields: Sequence[str] | None = None,
        row_restriction: str | None = None,
        max_stream_count: int = 0,
        max_workers: int | None = None,
        max_bytes_in_flight: int = DEFAULT_BYTES_IN_FLIGHT,
        ordered: bool = False,
        progress: bool | None = None,
        client: BigQueryReadClient | None = None,
        endpoint: str | None = None,
        stream_buffer: int = STREAM_BUFFER,
        parse_json: bool | Sequence[str] = True,
    ) -> None:
        self.project, self.dataset, self.table_id = parse_table(table)
        if isinstance(selected_fields, str):
            raise errors.UsageError("selected_fields must be a list of column names, not one string")
        self.selected_fields = list(selected_fields) if selected_fields is not None else None
        if self.selected_fields is not None and not all(
            isinstance(f, str) and f for f in self.selected_fields
        ):
            raise errors.UsageError(f"selected_fields must be column names, got {selected_fields!r}")
        if row_restriction is not None and not isinstance(row_restriction, str):
            raise errors.UsageError(f"row_restriction must be a string, got {row_restriction!r}")
        self.row_restriction = row_restriction or ""
        if not isinstance(max_stream_count, int) or max_stream_count < 0:
            raise errors.UsageError(
                f"max_stream_count must be 0 (the server decides) or more, got {max_stream_count!r}"
            )
        self.max_stream_count = max_stream_count
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise errors.UsageError(f"max_workers must be a positive int or None, got {max_workers!r}")
        self.max_workers = max_workers
        if not isinstance(max_bytes_in_flight, int) or max_bytes_in_flight < 1:
            raise errors.UsageError(
                f"max_bytes_in_flight must be a positive int, got {max_bytes_in_flight!r}"
            )
        self.max_bytes_in_flight = max_bytes_in_flight
        if not isinstance(stream_buffer, int) or stream_buffer < 1:
            raise errors.UsageError(f"stream_buffer must be a positive int, got {stream_buffer!r}")
        self.stream_buffer = stream_buffer
        if isinstance(parse_json, str) or not (
            isinstance(parse_json, bool) or all(isinstance(c, str) and c for c in parse_json)
        ):
            raise errors.UsageError(
                f"parse_json must be True, False or a list of column names, got {parse_json!r}"
            )
        self.parse_json = parse_json if isinstance(parse_json, bool) else list(parse_json)
        self.ordered = ordered
        self.progress = progress
        self.endpoint = endpoint
        self._client = client
        self._session: Any = None
        self._schema: pa.Schema | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BigQueryReader('bq://{self.project}.{self.dataset}.{self.table_id}')"

    @property
    def table_path(self) -> str:
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{self.table_id}"

    @property
    def client(self) -> BigQueryReadClient:
        if self._client is None:
            from bpj import clients, config

            if self.endpoint is None:
                self.endpoint = config.settings().bigquery_storage_endpoint
            self._client = clients.bigquery_read(bigquery_storage_endpoint=self.endpoint)
        return self._client

    # -- the session ---------------------------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        """The ReadSession (created at first use)."""
        with self._lock:
            if self._session is None:
                self._session = self._create_session()
            return self._session

    def _create_session(self) -> Any:
        import pyarrow as pa

        from bpj import types

        read_session = types.ReadSession(table=self.table_path, data_format=types.DataFormat.ARROW)
        options = read_session.read_options
        if self.selected_fields:
            options.selected_fields.extend(self.selected_fields)
        if self.row_restriction:
            options.row_restriction = self.row_restriction
        if lz4_available():
            options.response_compression_codec = (
                types.ReadSession.TableReadOptions.ResponseCompressionCodec.RESPONSE_COMPRESSION_CODEC_LZ4
            )
        request = types.CreateReadSessionRequest(
            parent=f"projects/{self.project}",
            read_session=read_session,
            max_stream_count=self.max_stream_count,
        )
        session = self.client.create_read_session(request)
        self._schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        return session

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows read (selected fields only)."""
        self.session  # noqa: B018  (creates the session, which sets the schema)
        assert self._schema is not None
        return self._schema

    @property
    def json_columns(self) -> list[str]:
        """The columns whose JSON text the reader parses into nested values (see ``parse_json``)."""
        from bpj.outputs.json_columns import json_fields, publisher_json_fields

        if self.parse_json is False:
            return []
        if self.parse_json is True:
            return json_fields(self.schema) + publisher_json_fields(self.schema)
        return [c for c in self.parse_json if c in self.schema.names]

    @property
    def streams(self) -> list[str]:
        return [s.name for s in self.session.streams]

    @property
    def estimated_row_count(self) -> int:
        return int(self.session.estimated_row_count)

    # -- reading ----------------------------------------------------------------------------------------------------

    def partitions(self) -> list[Partition]:
        """One picklable task per stream of the session; ``task.read()`` reads it in any process."""
        session = self.session
        schema_bytes = bytes(session.arrow_schema.serialized_schema)
        if self.endpoint is None and self._client is not None:
            self.endpoint = getattr(getattr(self._client, "transport", None), "endpoint", None)
        return [
            BigQueryPartition(
                index=i,
                session=session.name,
                stream=s.name,
                schema=schema_bytes,
                endpoint=self.endpoint,
                json_columns=tuple(self.json_columns),
            )
            for i, s in enumerate(session.streams)
        ]

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of every stream, as they arrive (in stream order when ``ordered``).

        Stopping early (``break``, ``close()``) stops and joins every worker.
        """
        streams = self.streams
        schema = self.schema
        json_columns = self.json_columns
        progress = Progress(
            self.progress,
            label=f"bq://{self.project}.{self.dataset}.{self.table_id}",
            total_rows=self.estimated_row_count or None,
        )
        if not streams:
            progress.close()
            return
        workers = min(
            len(streams),
            self.max_workers or 2 * cores(),
            max(1, self.max_bytes_in_flight // self.stream_buffer),
        )
        flow = _Flow(len(streams), self.max_bytes_in_flight, self.ordered)
        client = self.client
        threads = [
            threading.Thread(
                target=_work,
                args=(flow, client, streams, schema, json_columns),
                name=f"{_THREAD_PREFIX}-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        try:
            while True:
                item = flow.get()
                if item is None:
                    break
                batch, size = item
                progress.add(batch.num_rows, size)
                yield batch
        finally:
            progress.close()
            flow.stop()
            deadline = time.monotonic() + _JOIN_TIMEOUT
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def to_arrow(self) -> pa.Table:
        """Every row in one Arrow table with the session's schema (its chunks are the batches as received,
        not copied); with JSON columns parsed, their types as the values make them (batches unified)."""
        return self.combine(list(self.iter_batches()))

    def combine(self, batches: list[pa.RecordBatch]) -> pa.Table:
        """``batches`` of this read in one table: with the session's schema, or unified when JSON columns
        were parsed (their types come from the values)."""
        import pyarrow as pa

        from bpj.outputs.reader import unify

        if self.json_columns:
            return unify(batches) if batches else pa.Table.from_batches([], schema=self.schema)
        return pa.Table.from_batches(batches, schema=self.schema)

    def only(self, columns: Sequence[str]) -> BigQueryReader:
        """This read narrowed to those of ``columns`` the table has, as selected fields of a new session
        (itself when that is all of them, or none)."""
        names = [c for c in dict.fromkeys(columns) if c in self.schema.names]
        if not names or set(names) == set(self.schema.names):
            return self
        parse_json = self.parse_json
        return self._like(
            selected_fields=names,
            parse_json=parse_json if isinstance(parse_json, bool) else [c for c in parse_json if c in names],
        )

    def export(self, path: Any, *, format: str | None = None) -> int:
        """As :meth:`Reader.export`; to CSV or Parquet the JSON columns are written as BigQuery holds them
        (JSON text), so that batches whose nested values differ in shape fit one file's schema."""
        if export_format(path, format) != "jsonl" and self.json_columns:
            return Reader.export(self._like(parse_json=False), path, format=format)
        return Reader.export(self, path, format=format)

    def errors(self) -> BigQueryReader:
        """The same reader over the errors table beside these predictions: ``errors`` beside
        ``predictions`` (the two tables a Vertex AI job creates in its dataset), ``<table>_errors`` beside any
        other table. Selected fields and the row restriction are left out: the errors table has columns of
        its own (the instance's, then ``errors``, a STRUCT of ``code`` and ``message``)."""
        name = "errors" if self.table_id == "predictions" else f"{self.table_id}_errors"
        path = f"projects/{self.project}/datasets/{self.dataset}/tables/{name}"
        return self._like(table=path, selected_fields=None, row_restriction=None)

    def _like(self, *, table: str | None = None, **changes: Any) -> BigQueryReader:
        """A reader of the same read (of ``table`` when given) with ``changes`` to its options (a session of
        its own)."""
        options: dict[str, Any] = dict(
            selected_fields=self.selected_fields,
            row_restriction=self.row_restriction or None,
            max_stream_count=self.max_stream_count,
            max_workers=self.max_workers,
            max_bytes_in_flight=self.max_bytes_in_flight,
            ordered=self.ordered,
            progress=self.progress,
            client=self._client,
            endpoint=self.endpoint,
            stream_buffer=self.stream_buffer,
            parse_json=self.parse_json,
        )
        options.update(changes)
        return BigQueryReader(table or self.table_path, **options)


def _work(
    flow: _Flow,
    client: BigQueryReadClient,
    streams: list[str],
    schema: pa.Schema,
    json_columns: Sequence[str] = (),
) -> None:
    try:
        while True:
            index = flow.take_stream()
            if index is None:
                return
            batches = stream_batches(
                client,
                streams[index],
                schema,
                track=flow.track,
                untrack=flow.untrack,
                stopped=flow.stopped,
            )
            with contextlib.closing(batches):
                for batch, _, size in batches:
                    if json_columns:
                        batch = parse_columns(batch, json_columns)
                        size = max(size, batch.nbytes)
                    if not flow.put(index, batch, size):
                        return
            if flow.done:
                return
            flow.end(index)
    except BaseException as e:  # handed to the consumer, who raises it
        flow.fail(e)


@dataclass(frozen=True)
class BigQueryPartition:
    """One Storage Read stream of a session: a plain, picklable task that reads in any process.

    ``read()`` connects to ``endpoint`` (or the ``bigquery_storage_endpoint`` of bpj's settings there, when
    None) and returns the stream's rows from ``offset`` on as an Arrow table, the JSON text of
    ``json_columns`` parsed into nested values.
    """

    index: int
    session: str
    stream: str
    schema: bytes = field(repr=False)  # the session's Arrow schema, serialized
    endpoint: str | None = None
    offset: int = 0
    json_columns: tuple[str, ...] = ()

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.ipc.read_schema(pa.py_buffer(self.schema))

    def iter_batches(self, client: BigQueryReadClient | None = None) -> Iterator[pa.RecordBatch]:
        if client is None:
            from bpj import clients

            client = clients.bigquery_read(bigquery_storage_endpoint=self.endpoint)
        schema = self.arrow_schema()
        for batch, _, _ in stream_batches(client, self.stream, schema, self.offset):
            yield parse_columns(batch, self.json_columns) if self.json_columns else batch

    def read(self, client: BigQueryReadClient | None = None) -> pa.Table:
        import pyarrow as pa

        from bpj.outputs.reader import unify

        batches = list(self.iter_batches(client))
        if self.json_columns and batches:
            return unify(batches)
        return pa.Table.from_batches(batches, schema=self.arrow_schema())


def read_bigquery(
    uri: str,
    *,
    selected_fields: Sequence[str] | None = None,
    row_restriction: str | None = None,
    max_stream_count: int = 0,
    max_workers: int | None = None,
    max_bytes_in_flight: int = DEFAULT_BYTES_IN_FLIGHT,
    ordered: bool = False,
    progress: bool | None = None,
    client: BigQueryReadClient | None = None,
    parse_json: bool | Sequence[str] = True,
) -> BigQueryReader:
    """A reader of the BigQuery table ``uri`` (``bq://project.dataset.table`` or
    ``projects/p/datasets/d/tables/t``) over the Storage Read API.

    ``selected_fields`` and ``row_restriction`` (BigQuery SQL, e.g. ``"score > 0.5"``) are applied by the
    server. ``max_stream_count`` caps the streams of the session (0: the server decides);
    ``max_workers`` the threads reading them (default: streams, at most twice the cores);
    ``max_bytes_in_flight`` the decoded bytes waiting for the consumer, and with them the streams open at
    once (one per 16 MiB of it, for gRPC's receive buffers; peak memory stays within about twice the
    bound). ``ordered`` yields the streams one after another in session order (rows in table order for a
    table the server splits in order).
    ``progress``: rows, bytes and rate on stderr (default: when stderr is a terminal). ``client``: a
    BigQueryReadClient to use instead of one for ``bpj.init``'s ``bigquery_storage_endpoint``.
    ``parse_json``: True parses the columns of BigQuery's JSON type, and the ``request``/``response``/
    ``predictions`` STRING columns of a publisher model's output table, into nested Arrow values (structs,
    lists; a column whose values are of different kinds stays JSON text), False keeps them as JSON text,
    a list of names parses those columns (STRING columns holding JSON text too).
    Nothing is sent before the first read.
    """
    return BigQueryReader(
        uri,
        selected_fields=selected_fields,
        row_restriction=row_restriction,
        max_stream_count=max_stream_count,
        max_workers=max_workers,
        max_bytes_in_flight=max_bytes_in_flight,
        ordered=ordered,
        progress=progress,
        client=client,
        parse_json=parse_json,
    )
