"""The BigQuery Storage Read reader against the real local Storage Read server on 127.0.0.1.

Tables are written to a TableStore and served by ``StorageReadServicer`` behind a real gRPC server; the
server cuts every table into one stream per row (capped by the reader's ``max_stream_count``) and every
stream into responses of about 512 bytes, so small tables already give many streams and many responses.
Faults are real too: a TCP proxy that cuts the connection mid-stream, and servicers that end a stream with
the errors BigQuery sends.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import operator
import socket
import threading
import time
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import clients, errors, types
from bpj.local.bigquery.read_server import StorageReadServicer
from bpj.local.bigquery.store import TableStore
from bpj.local.servers.serve import serve_grpc
from bpj.outputs.bigquery import (
    MAX_STALLED_RESUMES,
    STREAM_BUFFER,
    BigQueryPartition,
    BigQueryReader,
    parse_table,
    read_bigquery,
)
from bpj.outputs.wire import decode_response, parse_read_rows
from bpj.transport.grpc import GrpcTransport

PROJECT, DATASET = "proj", "ds"
SCHEMA = pa.schema([("id", pa.int64()), ("n", pa.int64()), ("x", pa.float64()), ("s", pa.string())])
_names = itertools.count()


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = TableStore(tmp_path_factory.mktemp("bq"))
    s.create_dataset(PROJECT, DATASET)
    return s


def _serve(servicer):
    server = serve_grpc(servicer)
    transport = GrpcTransport(server.endpoint)
    return server, clients.bigquery_read(transport=transport)


@pytest.fixture(scope="module")
def client(store):
    server, c = _serve(StorageReadServicer(store, stream_rows=1, response_bytes=512))
    yield c
    c.close()
    server.stop(None)


def make_table(store: TableStore, rows: list[tuple[Any, Any, Any]], parts: int = 1) -> tuple[str, pa.Table]:
    """A new table holding ``rows`` (n, x, s) with ``id`` = row number, written in ``parts`` appends."""
    name = f"t{next(_names)}"
    store.create_table(PROJECT, DATASET, name, SCHEMA)
    table = pa.table(
        {
            "id": list(range(len(rows))),
            "n": [r[0] for r in rows],
            "x": [r[1] for r in rows],
            "s": [r[2] for r in rows],
        },
        schema=SCHEMA,
    )
    cuts = sorted({0, len(rows), *(len(rows) * i // parts for i in range(1, parts))})
    for lo, hi in itertools.pairwise(cuts):
        store.append(PROJECT, DATASET, name, table.slice(lo, hi - lo))
    return f"bq://{PROJECT}.{DATASET}.{name}", table


def simple_rows(n: int) -> list[tuple[Any, Any, Any]]:
    return [(i * 7 if i % 5 else None, i / 3, f"row-{i}-é" if i % 11 else None) for i in range(n)]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bpj-bigquery-read")]


def by_id(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=operator.itemgetter("id"))


rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.one_of(st.none(), st.floats(allow_nan=False)),
        st.one_of(st.none(), st.text(max_size=30)),
    ),
    max_size=80,
)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- names ----------------------------------------------------------------------------------------------


def test_table_names():
    assert parse_table("bq://p.d.t") == ("p", "d", "t")
    assert parse_table("bq://example.com:proj.d.t") == ("example.com:proj", "d", "t")
    assert parse_table("projects/p/datasets/d/tables/t") == ("p", "d", "t")
    for bad in ["bq://p.d", "bq://p..t", "projects/p/datasets/d", "gs://b/o", "", "bq://p/d.t"]:
        with pytest.raises(errors.UsageError, match="bq://project.dataset.table"):
            read_bigquery(bad)
    with pytest.raises(errors.UsageError, match="selected_fields"):
        read_bigquery("bq://p.d.t", selected_fields="id")
    with pytest.raises(errors.UsageError, match="max_bytes_in_flight"):
        read_bigquery("bq://p.d.t", max_bytes_in_flight=0)


# -- the rows written, exactly ---------------------------------------------------------------------------


@FAST
@given(
    rows=rows_strategy,
    parts=st.integers(1, 3),
    streams=st.integers(1, 6),
    workers=st.integers(1, 4),
    budget=st.sampled_from([1, 700, 4096, 1 << 20]),
)
def test_ordered_read_returns_the_rows_in_order(store, client, rows, parts, streams, workers, budget):
    uri, written = make_table(store, rows, parts)
    # stream_buffer=1: the bound leaves every worker its stream, so several streams fill a tight queue.
    reader = BigQueryReader(
        uri,
        client=client,
        ordered=True,
        max_stream_count=streams,
        max_workers=workers,
        max_bytes_in_flight=budget,
        stream_buffer=1,
    )
    got = reader.to_arrow()
    assert got.schema.equals(SCHEMA)
    assert got.to_pylist() == written.to_pylist()
    assert len(reader.streams) == min(streams, len(rows))
    assert list(reader.records()) == written.to_pylist()


@FAST
@given(rows=rows_strategy, streams=st.integers(0, 6), budget=st.sampled_from([1, 4096, 1 << 20]))
def test_unordered_read_returns_every_row_once(store, client, rows, streams, budget):
    uri, written = make_table(store, rows)
    got = read_bigquery(uri, client=client, max_stream_count=streams, max_bytes_in_flight=budget).to_arrow()
    assert by_id(got) == written.to_pylist()


class CountingServicer(StorageReadServicer):
    """Counts the ReadRows calls open at once. Each of the first ``meet`` calls waits (up to 2 s) until
    ``meet`` calls are open before it answers, so a reader that may open that many streams does."""

    def __init__(self, *args: Any, meet: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed = threading.Condition()
        self.meet = meet
        self.open = self.most = self.started = 0

    def ReadRows(self, request, context):
        with self.changed:
            self.open += 1
            self.started += 1
            self.most = max(self.most, self.open)
            self.changed.notify_all()
            if self.started <= self.meet:
                self.changed.wait_for(lambda: self.open >= self.meet, timeout=2.0)
        try:
            yield from super().ReadRows(request, context)
        finally:
            with self.changed:
                self.open -= 1


@pytest.mark.parametrize("buffers, expected", [(1, 1), (2, 2), (3, 3), (100, 4)])
def test_the_bound_caps_the_streams_open_at_once(store, buffers, expected):
    servicer = CountingServicer(store, stream_rows=1, response_bytes=512, meet=expected)
    server, client = _serve(servicer)
    try:
        uri, written = make_table(store, simple_rows(400))
        reader = read_bigquery(
            uri, client=client, max_stream_count=8, max_workers=4, max_bytes_in_flight=buffers * STREAM_BUFFER
        )
        assert by_id(reader.to_arrow()) == written.to_pylist()
        assert len(reader.streams) == 8
        assert servicer.most == expected
    finally:
        client.close()
        server.stop(None)


def test_empty_table_keeps_its_schema(store, client):
    uri, _ = make_table(store, [])
    reader = read_bigquery(uri, client=client)
    assert reader.streams == []
    got = reader.to_arrow()
    assert got.num_rows == 0 and got.schema.equals(SCHEMA)
    assert reader.partitions() == []


def test_progress_counts_toward_the_sessions_row_estimate(store, client, capsys):
    uri, written = make_table(store, simple_rows(500), parts=3)
    reader = read_bigquery(uri, client=client, progress=True)
    assert reader.to_arrow().num_rows == 500
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"{uri}: 500 rows ") and " 100% " in last, last


def test_errors_reads_the_errors_table_beside_the_predictions(store, client):
    errors_schema = pa.schema(
        [("id", pa.int64()), ("errors", pa.struct([("code", pa.int64()), ("message", pa.string())]))]
    )
    dataset = f"job{next(_names)}"
    store.create_dataset(PROJECT, dataset)
    wrote = {}
    for table, schema in (("predictions", SCHEMA), ("errors", errors_schema), ("mine", SCHEMA)):
        store.create_table(PROJECT, dataset, table, schema)
    store.create_table(PROJECT, dataset, "mine_errors", errors_schema)
    for table in ("errors", "mine_errors"):
        rows = [{"id": i, "errors": {"code": 3, "message": f"{table} {i}"}} for i in range(4)]
        store.append(PROJECT, dataset, table, pa.Table.from_pylist(rows, errors_schema))
        wrote[table] = rows
    predictions = read_bigquery(
        f"bq://{PROJECT}.{dataset}.predictions",
        client=client,
        selected_fields=["id"],
        row_restriction="id > 0",
    )
    got = predictions.errors()
    assert got.table_id == "errors" and got.selected_fields is None and not got.row_restriction
    assert got.to_arrow().sort_by("id").to_pylist() == wrote["errors"]
    mine = read_bigquery(f"bq://{PROJECT}.{dataset}.mine", client=client).errors()
    assert (
        mine.table_id == "mine_errors" and mine.to_arrow().sort_by("id").to_pylist() == wrote["mine_errors"]
    )


def test_selected_fields_and_row_restriction(store, client):
    uri, written = make_table(store, simple_rows(300), parts=2)
    reader = read_bigquery(
        uri,
        client=client,
        selected_fields=["s", "id"],
        row_restriction="id >= 10 AND s IS NOT NULL AND s != 'row-20-é'",
        max_stream_count=5,
        ordered=True,
    )
    got = reader.to_arrow()
    expected = [
        {"id": r["id"], "s": r["s"]}
        for r in written.to_pylist()
        if r["id"] >= 10 and r["s"] is not None and r["s"] != "row-20-é"
    ]
    assert sorted(got.column_names) == ["id", "s"]
    assert got.select(["id", "s"]).to_pylist() == expected


def test_server_errors_name_the_table(store, client):
    with pytest.raises(errors.NotFound):
        read_bigquery(f"bq://{PROJECT}.{DATASET}.missing", client=client).to_arrow()
    uri, _ = make_table(store, simple_rows(3))
    with pytest.raises(errors.InvalidArgument):
        read_bigquery(uri, client=client, row_restriction="nope = 1").to_arrow()


# -- partitions in other processes --------------------------------------------------------------------------


def test_partitions_read_in_other_processes_give_the_rows_of_to_arrow(store, client):
    uri, written = make_table(store, simple_rows(500), parts=3)
    reader = read_bigquery(uri, client=client, max_stream_count=5, ordered=True)
    parts = reader.partitions()
    assert len(parts) == 5 and all(isinstance(p, BigQueryPartition) for p in parts)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        tables = pool.map(operator.methodcaller("read"), parts)
    assert pa.concat_tables(tables).to_pylist() == reader.to_arrow().to_pylist() == written.to_pylist()


# -- faults ------------------------------------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that closes each of its first ``cuts`` connections after ``after`` bytes
    came back from the server (mid-stream), and passes later connections through untouched."""

    def __init__(self, upstream: str, *, cuts: int, after: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cuts, self.after = cuts, after
        self.cut = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = False
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            limit = self.after if self.cut < self.cuts else None
            if limit is not None:
                self.cut += 1
            self._spawn(self._pump, conn, up, None)
            self._spawn(self._pump, up, conn, limit)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: max(0, limit - sent)])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture(scope="module")
def big_responses_server(store):
    # Responses of about 4 KiB: a connection cut after 20 KB falls in the middle of a stream.
    server = serve_grpc(StorageReadServicer(store, stream_rows=1, response_bytes=4096))
    yield server
    server.stop(None)


@pytest.mark.parametrize("ordered", [False, True])
def test_connection_cut_mid_stream_resumes_at_the_offset(store, big_responses_server, ordered):
    uri, written = make_table(store, simple_rows(6000))
    proxy = CuttingProxy(big_responses_server.endpoint, cuts=3, after=20_000)
    client = clients.bigquery_read(transport=GrpcTransport(proxy.endpoint))
    try:
        got = read_bigquery(uri, client=client, max_stream_count=3, ordered=ordered).to_arrow()
    finally:
        client.close()
        proxy.close()
    assert proxy.cut == 3
    rows = got.to_pylist() if ordered else by_id(got)
    assert rows == written.to_pylist()  # every row, none twice


class FaultyServicer(StorageReadServicer):
    """The local server, ending ReadRows calls with planned errors: each call takes the next
    ``(after_responses, error)`` of the plan, or serves normally once the plan is used up."""

    def __init__(self, store: TableStore, plan: list[tuple[int, errors.ApiError]], **kw: Any) -> None:
        super().__init__(store, stream_rows=1, response_bytes=512, **kw)
        self.plan = plan
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def ReadRows(self, request, context):
        with self.lock:
            self.calls.append(request.offset)
            planned = self.plan.pop(0) if self.plan else None
        responses = super().ReadRows(request, context)
        if planned is None:
            return responses
        return self._fail(responses, *planned)

    @staticmethod
    def _fail(responses, after, error):
        for i, r in enumerate(responses):
            if i == after:
                raise error
            yield r
        raise error


def retry_info(seconds: float) -> list[dict[str, Any]]:
    return [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}]


def test_resumable_errors_resume_without_losing_or_repeating_rows(store):
    plan = [
        (2, errors.ResourceExhausted("quota", details=retry_info(0.01))),
        (1, errors.Internal("Received RST_STREAM with error code 2")),
        (3, errors.Unavailable("connection reset")),
        (0, errors.Unknown("Stream removed")),
        (1, errors.Unavailable("again")),
    ]
    servicer = FaultyServicer(store, plan)
    server, client = _serve(servicer)
    try:
        uri, written = make_table(store, simple_rows(400))
        got = read_bigquery(uri, client=client, max_stream_count=2, ordered=True).to_arrow()
    finally:
        client.close()
        server.stop(None)
    assert got.to_pylist() == written.to_pylist()
    assert not servicer.plan and len(servicer.calls) == 2 + 5
    assert any(offset > 0 for offset in servicer.calls)  # resumed mid-stream, at an offset


@pytest.mark.parametrize(
    "error",
    [
        errors.PermissionDenied("no"),
        errors.ResourceExhausted("quota, and no RetryInfo"),
        errors.Internal("something else"),
    ],
    ids=["permission", "exhausted-without-retryinfo", "internal"],
)
def test_final_errors_are_raised(store, error):
    server, client = _serve(FaultyServicer(store, [(1, error)]))
    try:
        uri, _ = make_table(store, simple_rows(200))
        with pytest.raises(type(error), match=error.message):
            read_bigquery(uri, client=client, max_stream_count=1).to_arrow()
    finally:
        client.close()
        server.stop(None)
    assert not reader_threads()


def test_resumes_are_bounded(store):
    unavailable = [(0, errors.Unavailable("down", details=retry_info(0.001))) for _ in range(50)]
    servicer = FaultyServicer(store, unavailable)
    server, client = _serve(servicer)
    try:
        uri, _ = make_table(store, simple_rows(50))
        with pytest.raises(errors.Unavailable):
            read_bigquery(uri, client=client, max_stream_count=1).to_arrow()
    finally:
        client.close()
        server.stop(None)
    assert len(servicer.calls) == MAX_STALLED_RESUMES + 1


# -- stopping early ----------------------------------------------------------------------------------------


def wait_for_threads(baseline: set[threading.Thread], seconds: float = 3.0) -> set[str]:
    """Names of the threads started since ``baseline`` still running after up to ``seconds`` (the server's
    pool threads excluded: they belong to the server, not to the reader)."""
    deadline = time.monotonic() + seconds
    while True:
        extra = {t.name for t in set(threading.enumerate()) - baseline if not t.name.startswith("bpj-grpc")}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["break", "close", "drop"])
def test_stopping_early_ends_every_worker(store, client, how):
    uri, _ = make_table(store, simple_rows(20_000))
    baseline = set(threading.enumerate())
    reader = read_bigquery(uri, client=client, max_stream_count=8, max_bytes_in_flight=2048)
    batches = reader.iter_batches()
    first = next(batches)
    assert first.num_rows > 0 and reader_threads()
    if how == "break":
        for _ in batches:
            break
        batches.close()
    elif how == "close":
        batches.close()
    else:
        del batches
    assert not reader_threads()  # joined before close() returned
    assert not wait_for_threads(baseline)


class StallingServicer(StorageReadServicer):
    """Sends one response per stream, then keeps the call open without sending anything."""

    def ReadRows(self, request, context):
        responses = super().ReadRows(request, context)

        def stall():
            yield next(iter(responses))
            while context.is_active():
                time.sleep(0.01)

        return stall()


def test_stopping_early_cancels_calls_that_wait_for_the_server(store):
    server, client = _serve(StallingServicer(store, stream_rows=1, response_bytes=512))
    try:
        uri, _ = make_table(store, simple_rows(2000))
        baseline = set(threading.enumerate())
        batches = read_bigquery(uri, client=client, max_stream_count=4).iter_batches()
        next(batches)
        t = time.monotonic()
        batches.close()
        assert time.monotonic() - t < 2.0
        assert not reader_threads()
        assert not wait_for_threads(baseline)
    finally:
        client.close()
        server.stop(None)


# -- decoding ---------------------------------------------------------------------------------------------


def test_lz4_compressed_responses_decode():
    batch = pa.record_batch({"s": ["a", None, "ü" * 100]})
    raw = batch.serialize().to_pybytes()
    response = types.ReadRowsResponse(row_count=3, uncompressed_byte_size=len(raw))
    response.arrow_record_batch.serialized_record_batch = pa.compress(raw, codec="lz4", asbytes=True)
    got, rows, size = decode_response(parse_read_rows(response.SerializeToString()), batch.schema)
    assert got is not None and got.equals(batch) and rows == 3 and size == len(raw)
    # -1: the server found compression not worth it and sent the rows as they are.
    plain = types.ReadRowsResponse(row_count=3, uncompressed_byte_size=-1)
    plain.arrow_record_batch.serialized_record_batch = raw
    got, _, _ = decode_response(parse_read_rows(plain.SerializeToString()), batch.schema)
    assert got is not None and got.equals(batch)
    wrong = types.ReadRowsResponse(row_count=4)
    wrong.arrow_record_batch.serialized_record_batch = raw
    with pytest.raises(errors.DataLoss):
        decode_response(parse_read_rows(wrong.SerializeToString()), batch.schema)
