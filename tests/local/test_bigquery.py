"""The local BigQuery: the table store, the Storage Read gRPC server and the REST API, each behind a real server
on 127.0.0.1, read with bpj's generated client and with the official google-cloud-bigquery(-storage) clients."""

from __future__ import annotations

import datetime as dt
import itertools
import threading

import grpc
import pyarrow as pa
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryReadClient as OfficialReadClient
from google.cloud.bigquery_storage_v1 import types as official_types
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services.big_query_read import BigQueryReadClient
from bpj.local.bigquery.read_server import StorageReadServicer
from bpj.local.bigquery.rest import schema_from_json, schema_to_json, serve_bigquery_rest
from bpj.local.bigquery.store import TableStore
from bpj.local.servers.serve import serve_grpc
from bpj.outputs.json_columns import is_json_field
from bpj.transport.grpc import GrpcTransport

# google-cloud-bigquery-storage's own deprecation of its Arrow helpers, which its users still call.
pytestmark = pytest.mark.filterwarnings("ignore:Retrieving Arrow record batches:PendingDeprecationWarning")

P, D = "proj", "ds"
TABLE = f"projects/{P}/datasets/{D}/tables/numbers"
N = 10_000
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("x", pa.float64()),
        pa.field("s", pa.string()),
        pa.field("flag", pa.bool_()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
    ]
)


def _numbers(lo: int, hi: int) -> pa.Table:
    ids = list(range(lo, hi))
    return pa.table(
        {
            "id": ids,
            "x": [None if i % 7 == 0 else i / 4 for i in ids],
            "s": [None if i % 11 == 0 else f"row-{i}" for i in ids],
            "flag": [i % 3 == 0 for i in ids],
            "ts": [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i) for i in ids],
        },
        schema=SCHEMA,
    )


EXPECTED = _numbers(0, N)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = TableStore(tmp_path_factory.mktemp("bq"))
    s.create_dataset(P, D)
    s.create_table(P, D, "numbers", SCHEMA)
    for lo in range(0, N, 3_000):  # several parts, so streams and responses cross part boundaries
        s.append(P, D, "numbers", _numbers(lo, min(N, lo + 3_000)))
    return s


@pytest.fixture(scope="module")
def grpc_server(store):
    # Small streams and responses: several of each even for this small table.
    servicer = StorageReadServicer(store, stream_rows=2_500, response_bytes=32 << 10)
    server = serve_grpc(servicer)
    yield server
    server.stop(None)


@pytest.fixture(scope="module")
def client(grpc_server):
    transport = GrpcTransport(grpc_server.endpoint)
    yield BigQueryReadClient(transport)
    transport.close()


@pytest.fixture(scope="module")
def official_read(grpc_server):
    channel = grpc.insecure_channel(grpc_server.endpoint)
    yield OfficialReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture(scope="module")
def rest(store):
    server = serve_bigquery_rest(store)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bq(rest):
    return bigquery.Client(
        project=P, credentials=AnonymousCredentials(), client_options={"api_endpoint": rest.url}
    )


def _session(client, table=TABLE, **kw):
    read_options = {}
    for key in ("selected_fields", "row_restriction"):
        if key in kw:
            read_options[key] = kw.pop(key)
    request = types.CreateReadSessionRequest(
        parent=f"projects/{P}",
        read_session=types.ReadSession(
            table=table, data_format=types.DataFormat.ARROW, read_options=read_options
        ),
        **kw,
    )
    return client.create_read_session(request)


def _read(client, session, stream_name, offset=0):
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    batches, first = [], True
    for r in client.read_rows(types.ReadRowsRequest(read_stream=stream_name, offset=offset)):
        assert r.HasField("arrow_schema") == first
        first = False
        batch = pa.ipc.read_record_batch(pa.py_buffer(r.arrow_record_batch.serialized_record_batch), schema)
        assert batch.num_rows == r.row_count
        assert 0 <= r.stats.progress.at_response_start < r.stats.progress.at_response_end <= 1
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=schema)


# -- the store -------------------------------------------------------------------------------------------


def test_store_catalogue_and_errors(tmp_path):
    s = TableStore(tmp_path)
    s.create_dataset("p", "d")
    s.create_dataset("p", "d", exists_ok=True)
    with pytest.raises(errors.AlreadyExists, match="Already Exists: Dataset p:d"):
        s.create_dataset("p", "d")
    assert s.list_datasets("p") == ["d"] and s.list_datasets("nobody") == []
    with pytest.raises(errors.NotFound, match=r"Not found: Dataset p:zz"):
        s.create_table("p", "zz", "t", SCHEMA)
    s.create_table("p", "d", "t", SCHEMA)
    with pytest.raises(errors.AlreadyExists, match=r"Already Exists: Table p:d\.t"):
        s.create_table("p", "d", "t", SCHEMA)
    with pytest.raises(errors.NotFound, match=r"Not found: Table p:d\.u"):
        s.schema("p", "d", "u")
    for bad in ("../x", "a/b", "", "a.b", ".."):
        with pytest.raises(errors.InvalidArgument, match="Invalid (dataset|table) ID"):
            s.create_table("p", "d", bad, SCHEMA)
        with pytest.raises(errors.InvalidArgument):
            s.create_dataset("p", bad)
    with pytest.raises(errors.InvalidArgument, match="Invalid project"):
        s.list_datasets("../etc")
    assert s.table_exists("p", "d", "t") and s.list_tables("p", "d") == ["t"]
    assert s.schema("p", "d", "t") == SCHEMA
    with pytest.raises(errors.FailedPrecondition, match="still in use"):
        s.delete_dataset("p", "d")
    s.delete_table("p", "d", "t")
    assert not s.table_exists("p", "d", "t")
    s.create_table("p", "d", "t", SCHEMA)
    s.delete_dataset("p", "d", delete_contents=True)
    assert not s.dataset_exists("p", "d") and list((tmp_path / "p").iterdir()) == []


def test_store_append_casts_and_names_the_bad_column(tmp_path):
    s = TableStore(tmp_path)
    s.create_dataset("p", "d")
    s.create_table("p", "d", "t", SCHEMA)
    # int32 ids cast to int64; missing nullable columns become nulls; a RecordBatch works too.
    s.append("p", "d", "t", pa.record_batch({"id": pa.array([1, 2], pa.int32()), "s": ["a", None]}))
    assert s.read("p", "d", "t").to_pydict()["x"] == [None, None]
    with pytest.raises(errors.InvalidArgument, match="column x"):
        s.append("p", "d", "t", pa.table({"id": [3], "x": ["not a number"]}))
    with pytest.raises(errors.InvalidArgument, match="Required field id"):
        s.append("p", "d", "t", pa.table({"id": pa.array([None], pa.int64())}))
    with pytest.raises(errors.InvalidArgument, match="Missing required field: id"):
        s.append("p", "d", "t", pa.table({"x": [1.0]}))
    with pytest.raises(errors.InvalidArgument, match="no such field: nope"):
        s.append("p", "d", "t", pa.table({"id": [1], "nope": [1]}))
    assert s.num_rows("p", "d", "t") == 2 and len(s.parts("p", "d", "t")) == 1
    assert s.append("p", "d", "t", SCHEMA.empty_table()) is None


def test_store_concurrent_appends_and_crash_leftovers(tmp_path):
    s = TableStore(tmp_path)
    s.create_dataset("p", "d")
    s.create_table("p", "d", "t", SCHEMA)

    def work(k):
        for j in range(5):
            s.append("p", "d", "t", _numbers(k * 100 + j * 10, k * 100 + j * 10 + 10))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.num_rows("p", "d", "t") == 400
    assert sorted(s.read("p", "d", "t", ["id"]).column("id").to_pylist()) == sorted(
        k * 100 + j for k in range(8) for j in range(50)
    )
    # A crash between write and rename leaves a temporary file: never a part, removed on the next open.
    leftover = tmp_path / "p" / "d" / "t" / ".tmp-dead.arrow"
    leftover.write_bytes(b"half a part")
    again = TableStore(tmp_path)
    assert again.num_rows("p", "d", "t") == 400 and not leftover.exists()
    assert sum(b.num_rows for b in again.scan("p", "d", "t", ["s"])) == 400
    assert again.read("p", "d", "t", start=395, stop=1000).num_rows == 5


# -- Storage Read with bpj's client ----------------------------------------------------------------------


def test_reads_every_row_across_streams(client):
    session = _session(client)
    assert len(session.streams) == 4 and session.estimated_row_count == N
    assert session.name.startswith(f"projects/{P}/locations/us/sessions/")
    assert session.expire_time.seconds > 0 and session.table == TABLE
    tables = [_read(client, session, s.name) for s in session.streams]
    assert all(t.num_rows > 0 for t in tables)
    assert pa.concat_tables(tables).equals(EXPECTED)
    # max_stream_count caps the streams; preferred_min_stream_count raises them.
    assert len(_session(client, max_stream_count=2).streams) == 2
    assert len(_session(client, preferred_min_stream_count=7).streams) == 7


def test_offset_resume(client):
    session = _session(client, max_stream_count=1)
    (stream,) = session.streams
    for offset in (0, 1, 777, N - 1, N):
        assert _read(client, session, stream.name, offset).equals(EXPECTED.slice(offset))
    with pytest.raises(errors.OutOfRange):
        list(client.read_rows(types.ReadRowsRequest(read_stream=stream.name, offset=N + 1)))


def test_split_read_stream(client):
    session = _session(client, max_stream_count=1)
    original = session.streams[0].name
    split = client.split_read_stream(types.SplitReadStreamRequest(name=original, fraction=0.3))
    primary = _read(client, session, split.primary_stream.name)
    remainder = _read(client, session, split.remainder_stream.name)
    assert primary.num_rows == 3_000
    assert pa.concat_tables([primary, remainder]).equals(EXPECTED)
    # Split again, and a one-row stream cannot be split.
    again = client.split_read_stream(types.SplitReadStreamRequest(name=split.remainder_stream.name))
    assert _read(client, session, again.primary_stream.name).num_rows == 3_500
    tiny = split
    while True:
        nxt = client.split_read_stream(
            types.SplitReadStreamRequest(name=tiny.primary_stream.name, fraction=0.5)
        )
        if not nxt.HasField("primary_stream"):
            break
        tiny = nxt
    assert _read(client, session, tiny.primary_stream.name).num_rows == 1


def test_selected_fields(client):
    session = _session(client, selected_fields=["s", "id"])
    schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    assert schema.names == ["s", "id"]
    got = pa.concat_tables([_read(client, session, s.name) for s in session.streams])
    assert got.equals(EXPECTED.select(["s", "id"]))


def test_read_errors(client):
    with pytest.raises(errors.InvalidArgument, match="ARROW"):
        client.create_read_session(
            types.CreateReadSessionRequest(
                parent=f"projects/{P}",
                read_session=types.ReadSession(table=TABLE, data_format=types.DataFormat.AVRO),
            )
        )
    with pytest.raises(errors.InvalidArgument, match="nope"):
        _session(client, selected_fields=["id", "nope"])
    with pytest.raises(errors.InvalidArgument, match="Unrecognized name: zz"):
        _session(client, row_restriction="zz > 1")
    for bad in ("id >", "id = = 1", "(id > 1", "id > 1 garbage", "s = 'open", "id IN ()", "x IS 3"):
        with pytest.raises(errors.InvalidArgument, match="row_restriction"):
            _session(client, row_restriction=bad)
    with pytest.raises(errors.InvalidArgument, match="row_restriction"):
        _session(client, row_restriction="id = 'abc'")  # an INT64 column against a string
    with pytest.raises(errors.NotFound, match=r"Not found: Table proj:ds\.missing"):
        _session(client, table=f"projects/{P}/datasets/{D}/tables/missing")
    with pytest.raises(errors.InvalidArgument, match="read_session.table"):
        _session(client, table="datasets/x/tables/y")
    with pytest.raises(errors.NotFound, match="stream"):
        list(
            client.read_rows(
                types.ReadRowsRequest(read_stream=f"projects/{P}/locations/us/sessions/x/streams/0")
            )
        )
    with pytest.raises(errors.NotFound):
        client.split_read_stream(types.SplitReadStreamRequest(name="nonsense"))


def test_empty_table_has_no_streams(client, store):
    store.create_table(P, D, "empty", SCHEMA, exists_ok=True)
    session = _session(client, table=f"projects/{P}/datasets/{D}/tables/empty")
    assert len(session.streams) == 0 and session.estimated_row_count == 0


def test_row_restriction_examples(client):
    cases = {
        "id < 10 AND NOT flag": [i for i in range(10) if i % 3],
        "s IS NULL AND id < 50": [0, 11, 22, 33, 44],
        "id IN (1, 5, -3, 9999) OR (x >= 2499.5 AND x <= 2500)": [1, 5, 9998, 9999],
        "s = 'row-42' OR `id` = 43": [42, 43],
        "ts < '2024-01-01 00:00:03+00:00'": [0, 1, 2],
    }
    for restriction, ids in cases.items():
        session = _session(client, row_restriction=restriction)
        got = [i for s in session.streams for i in _read(client, session, s.name).column("id").to_pylist()]
        assert got == ids, restriction


# -- row restrictions against Python's three-valued logic -------------------------------------------------

_COLUMNS = {"i": pa.int64(), "f": pa.float64(), "s": pa.string(), "b": pa.bool_()}
_values = {
    "i": st.integers(-5, 5),
    "f": st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 2))),
    "s": st.text("ab'\\\" ", max_size=3),
    "b": st.booleans(),
}
_OPS = ["=", "!=", "<>", "<", "<=", ">", ">="]


def _literal(v):
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"
    return repr(v)


@st.composite
def _conditions(draw, depth=0):
    kind = draw(st.sampled_from(["cmp", "null", "in"] + (["and", "or", "not"] if depth < 3 else [])))
    if kind in ("and", "or"):
        return (kind, draw(_conditions(depth + 1)), draw(_conditions(depth + 1)))
    if kind == "not":
        return ("not", draw(_conditions(depth + 1)))
    col = draw(st.sampled_from(sorted(_COLUMNS)))
    if kind == "null":
        return ("null", col, draw(st.booleans()))
    if kind == "in":
        return ("in", col, draw(st.lists(_values[col], min_size=1, max_size=3)), draw(st.booleans()))
    op = draw(st.sampled_from(_OPS if col != "b" else ["=", "!="]))
    return ("cmp", col, op, draw(_values[col]))


def _render(c):
    kind = c[0]
    if kind in ("and", "or"):
        return f"({_render(c[1])} {kind.upper()} {_render(c[2])})"
    if kind == "not":
        return f"NOT ({_render(c[1])})"
    if kind == "null":
        return f"{c[1]} IS {'NOT ' if c[2] else ''}NULL"
    if kind == "in":
        return f"{c[1]} {'NOT ' if c[3] else ''}IN ({', '.join(map(_literal, c[2]))})"
    return f"{c[1]} {c[2]} {_literal(c[3])}"


def _eval(c, row):
    """SQL semantics: None is UNKNOWN."""
    kind = c[0]
    if kind == "and":
        a, b = _eval(c[1], row), _eval(c[2], row)
        return False if a is False or b is False else (None if a is None or b is None else True)
    if kind == "or":
        a, b = _eval(c[1], row), _eval(c[2], row)
        return True if a is True or b is True else (None if a is None or b is None else False)
    if kind == "not":
        a = _eval(c[1], row)
        return None if a is None else not a
    v = row[c[1]]
    if kind == "null":
        return (v is not None) if c[2] else (v is None)
    if kind == "in":
        hit = _eval_in(v, c[2])
        return None if hit is None else (not hit if c[3] else hit)
    if v is None:
        return None
    op, lit = c[2], c[3]
    return {
        "=": v == lit,
        "!=": v != lit,
        "<>": v != lit,
        "<": v < lit,
        "<=": v <= lit,
        ">": v > lit,
        ">=": v >= lit,
    }[op]


def _eval_in(v, items):
    if v is None:
        return None
    return any(v == x for x in items)


_row = st.fixed_dictionaries({k: st.one_of(st.none(), s) for k, s in _values.items()})
_names = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, max_size=12), cond=_conditions())
def test_row_restriction_matches_python(client, store, rows, cond):
    name = f"filter_{next(_names)}"
    schema = pa.schema([pa.field("n", pa.int64()), *[pa.field(k, t) for k, t in _COLUMNS.items()]])
    store.create_table(P, D, name, schema)
    store.append(P, D, name, pa.Table.from_pylist([{"n": i, **r} for i, r in enumerate(rows)], schema=schema))
    session = _session(
        client, table=f"projects/{P}/datasets/{D}/tables/{name}", row_restriction=_render(cond)
    )
    got = [n for s in session.streams for n in _read(client, session, s.name).column("n").to_pylist()]
    assert got == [i for i, r in enumerate(rows) if _eval(cond, r) is True], _render(cond)
    store.delete_table(P, D, name)


# -- the official Storage Read client --------------------------------------------------------------------


def test_official_storage_client(official_read):
    session = official_read.create_read_session(
        parent=f"projects/{P}",
        read_session=official_types.ReadSession(table=TABLE, data_format=official_types.DataFormat.ARROW),
        max_stream_count=3,
    )
    assert len(session.streams) == 3
    tables = [official_read.read_rows(s.name).to_arrow(session) for s in session.streams]
    assert pa.concat_tables(tables).equals(EXPECTED)
    rows = list(official_read.read_rows(session.streams[0].name).rows(session))
    # rows() gives pyarrow scalars.
    assert rows[0]["id"].as_py() == 0 and rows[0]["s"].as_py() is None and len(rows) == tables[0].num_rows
    # Resume at an offset, and split.
    resumed = official_read.read_rows(session.streams[1].name, offset=100).to_arrow(session)
    assert resumed.equals(tables[1].slice(100))
    split = official_read.split_read_stream(request={"name": session.streams[2].name, "fraction": 0.5})
    halves = [
        official_read.read_rows(s.name).to_arrow(session)
        for s in (split.primary_stream, split.remainder_stream)
    ]
    assert pa.concat_tables(halves).equals(tables[2])


# -- the REST API with google-cloud-bigquery ---------------------------------------------------------------


def test_official_bigquery_client_crud(bq):
    ds = bq.create_dataset("shop")
    assert ds.dataset_id == "shop" and bq.get_dataset("shop").dataset_id == "shop"
    with pytest.raises(gexc.Conflict):
        bq.create_dataset("shop")
    bq.create_dataset("shop", exists_ok=True)
    schema = [
        bigquery.SchemaField("id", "INTEGER", mode="REQUIRED"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("price", "FLOAT64"),
        bigquery.SchemaField("ok", "BOOLEAN"),
        bigquery.SchemaField("blob", "BYTES"),
        bigquery.SchemaField("at", "TIMESTAMP"),
        bigquery.SchemaField("day", "DATE"),
        bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
        bigquery.SchemaField(
            "addr",
            "RECORD",
            fields=[bigquery.SchemaField("city", "STRING"), bigquery.SchemaField("zip", "INT64")],
        ),
    ]
    table = bq.create_table(bigquery.Table(f"{P}.shop.items", schema=schema))
    assert [f.name for f in table.schema] == [f.name for f in schema]
    rows = [
        {
            "id": 1,
            "name": "a",
            "price": 1.5,
            "ok": True,
            "blob": "aGk=",
            "at": "2024-05-01T12:00:00.250Z",
            "day": "2024-05-01",
            "tags": ["x", "y"],
            "addr": {"city": "Oslo", "zip": 150},
        },
        {"id": 2, "name": None, "price": -2.0, "tags": []},
    ]
    assert bq.insert_rows_json(f"{P}.shop.items", rows) == []
    got = list(bq.list_rows(f"{P}.shop.items"))
    assert got[0]["id"] == 1 and got[0]["price"] == 1.5 and got[0]["ok"] is True and got[0]["blob"] == b"hi"
    assert got[0]["at"] == dt.datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=dt.timezone.utc)
    assert got[0]["day"] == dt.date(2024, 5, 1) and got[0]["tags"] == ["x", "y"]
    assert got[0]["addr"] == {"city": "Oslo", "zip": 150}
    assert got[1]["name"] is None and got[1]["tags"] == [] and got[1]["addr"] is None
    fetched = bq.get_table(f"{P}.shop.items")
    assert fetched.num_rows == 2 and fetched.schema == table.schema
    # A bad row: per-row insertErrors, nothing inserted (as BigQuery does without skipInvalidRows).
    errs = bq.insert_rows_json(f"{P}.shop.items", [{"id": 3}, {"id": "three"}, {"name": "no id"}])
    assert [e["index"] for e in errs] == [0, 1, 2]
    assert errs[0]["errors"][0]["reason"] == "stopped" and errs[1]["errors"][0]["location"] == "id"
    assert "Missing required field" in errs[2]["errors"][0]["message"]
    assert bq.get_table(f"{P}.shop.items").num_rows == 2
    errs = bq.insert_rows_json(f"{P}.shop.items", [{"id": 3}, {"id": 4, "nope": 1}], skip_invalid_rows=True)
    assert [e["index"] for e in errs] == [1] and bq.get_table(f"{P}.shop.items").num_rows == 3
    # Paging, start index, selected fields.
    page = list(bq.list_rows(f"{P}.shop.items", start_index=1, page_size=1, selected_fields=schema[:2]))
    assert [(r["id"], r["name"]) for r in page] == [(2, None), (3, None)]
    assert [t.table_id for t in bq.list_tables("shop")] == ["items"]
    with pytest.raises(gexc.NotFound, match="Not found: Table proj:shop.nope"):
        bq.get_table(f"{P}.shop.nope")
    with pytest.raises(gexc.BadRequest):
        bq.delete_dataset("shop")
    bq.delete_table(f"{P}.shop.items")
    assert list(bq.list_tables("shop")) == []
    bq.delete_table(f"{P}.shop.items", not_found_ok=True)
    bq.delete_dataset("shop", delete_contents=True)
    with pytest.raises(gexc.NotFound, match="Not found: Dataset proj:shop"):
        bq.get_dataset("shop")


def test_official_to_arrow_through_storage_read(bq, official_read):
    table = bq.get_table(f"{P}.{D}.numbers")
    assert table.num_rows == N
    got = bq.list_rows(table).to_arrow(bqstorage_client=official_read)
    assert got.num_rows == N
    assert got.sort_by("id").equals(EXPECTED)
    # The same rows over tabledata.list.
    assert [r["id"] for r in bq.list_rows(table, max_results=5)] == [0, 1, 2, 3, 4]


def test_rest_errors_and_token(store):
    server = serve_bigquery_rest(store, token="sesame")
    try:
        url = f"{server.url}/bigquery/v2/projects/{P}/datasets/{D}"
        r = requests.get(url, timeout=5)
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
        ok = requests.get(url, headers={"Authorization": "Bearer sesame"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["id"] == f"{P}:{D}"
        r = requests.get(f"{url}/tables/nope", headers={"Authorization": "Bearer sesame"}, timeout=5)
        assert r.status_code == 404
        assert r.json() == {
            "error": {
                "code": 404,
                "message": f"Not found: Table {P}:{D}.nope",
                "errors": [
                    {"message": f"Not found: Table {P}:{D}.nope", "domain": "global", "reason": "notFound"}
                ],
                "status": "NOT_FOUND",
            }
        }
        data = requests.get(
            f"{url}/tables/numbers/data",
            params={"maxResults": 2, "startIndex": 9, "selectedFields": "id,x,ts"},
            headers={"Authorization": "Bearer sesame"},
            timeout=5,
        ).json()
        assert data["totalRows"] == str(N) and data["pageToken"] == "11"
        assert data["rows"][0] == {"f": [{"v": "9"}, {"v": "2.25"}, {"v": repr(1704067200.0 + 9)}]}
    finally:
        server.stop()


def test_schema_json_round_trip():
    fields = [
        {"name": "a", "type": "INT64", "mode": "REQUIRED"},
        {"name": "b", "type": "STRUCT", "mode": "REPEATED", "fields": [{"name": "c", "type": "TIMESTAMP"}]},
        {"name": "d", "type": "NUMERIC", "description": "money"},
        {"name": "j", "type": "JSON", "description": "kept as JSON"},
        {"name": "s", "type": "STRING"},
    ]
    schema = schema_from_json(fields)
    # JSON is Arrow text marked as the Storage Read API marks it (what the readers parse); STRING is not.
    assert is_json_field(schema.field("j")) and not is_json_field(schema.field("s"))
    assert schema.field("j").metadata[b"description"] == b"kept as JSON"
    back = schema_to_json(schema)
    assert back == [
        {"name": "a", "type": "INTEGER", "mode": "REQUIRED"},
        {
            "name": "b",
            "type": "RECORD",
            "mode": "REPEATED",
            "fields": [{"name": "c", "type": "TIMESTAMP", "mode": "NULLABLE"}],
        },
        {"name": "d", "type": "NUMERIC", "mode": "NULLABLE", "description": "money"},
        {"name": "j", "type": "JSON", "mode": "NULLABLE", "description": "kept as JSON"},
        {"name": "s", "type": "STRING", "mode": "NULLABLE"},
    ]
    with pytest.raises(errors.InvalidArgument, match="no schema"):
        schema_from_json([{"name": "r", "type": "RECORD"}])
