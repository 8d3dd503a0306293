"""bpj.outputs.wire reads ReadRowsResponse wire bytes exactly as the official message type parses them:
built with google-cloud-bigquery-storage's own types, serialized, merged and truncated."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from google.cloud.bigquery_storage_v1 import types as official
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import clients, errors, types
from bpj.local.bigquery.read_server import StorageReadServicer
from bpj.local.bigquery.store import TableStore
from bpj.outputs.bigquery import read_bigquery
from bpj.outputs.wire import READ_ROWS_WIRE, parse_read_rows
from bpj.transport.memory import InMemoryTransport

OfficialReadRowsResponse = type(official.ReadRowsResponse.pb(official.ReadRowsResponse()))
INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def responses(draw: Any) -> Any:
    """An official ReadRowsResponse with any mix of its fields set (rows: Arrow, Avro or none)."""
    m = OfficialReadRowsResponse()
    m.row_count = draw(INT64)
    rows = draw(st.sampled_from(["arrow", "avro", "none"]))
    if rows == "arrow":
        m.arrow_record_batch.serialized_record_batch = draw(st.binary(max_size=300))
        m.arrow_record_batch.row_count = draw(INT64)
    elif rows == "avro":
        m.avro_rows.serialized_binary_rows = draw(st.binary(max_size=50))
    if draw(st.booleans()):
        m.uncompressed_byte_size = draw(INT64)
    if draw(st.booleans()):
        m.total_estimated_row_count = draw(INT64)
    if draw(st.booleans()):
        m.stats.progress.at_response_start = draw(st.floats(0, 1))
        m.stats.progress.at_response_end = draw(st.floats(0, 1))
    if draw(st.booleans()):
        m.throttle_state.throttle_percent = draw(st.integers(0, 100))
    schema = draw(st.sampled_from(["arrow", "avro", "none"]))
    if schema == "arrow":
        m.arrow_schema.serialized_schema = draw(st.binary(max_size=40))
    elif schema == "avro":
        m.avro_schema.schema = draw(st.text(max_size=20))
    return m


def expected(m: Any) -> tuple[int, bytes, str, int | None]:
    kind = m.WhichOneof("rows")
    return (
        m.row_count,
        m.arrow_record_batch.serialized_record_batch if kind == "arrow_record_batch" else b"",
        {"arrow_record_batch": "arrow", "avro_rows": "avro", None: ""}[kind],
        m.uncompressed_byte_size if m.HasField("uncompressed_byte_size") else None,
    )


def seen(data: bytes) -> tuple[int, bytes, str, int | None]:
    chunk = parse_read_rows(data)
    return chunk.row_count, bytes(chunk.rows), chunk.format, chunk.uncompressed_byte_size


@settings(max_examples=300, deadline=None)
@given(responses())
def test_reads_what_the_official_type_wrote(m):
    assert seen(m.SerializeToString()) == expected(m)


@settings(max_examples=200, deadline=None)
@given(responses(), responses())
def test_concatenated_responses_merge_as_protobuf_merges_them(a, b):
    # Two messages back to back are one message with both merged: the last scalar wins, the last member
    # of a oneof wins, a repeated submessage merges field by field.
    data = a.SerializeToString() + b.SerializeToString()
    assert seen(data) == expected(OfficialReadRowsResponse.FromString(data))


@settings(max_examples=200, deadline=None)
@given(responses(), st.data())
def test_truncated_bytes_fail_exactly_when_the_official_parser_fails(m, data):
    full = m.SerializeToString()
    cut = full[: data.draw(st.integers(0, max(0, len(full) - 1)))]
    try:
        reference = OfficialReadRowsResponse.FromString(cut)
    except DecodeError:
        with pytest.raises(errors.DataLoss, match="malformed"):
            parse_read_rows(cut)
    else:
        assert seen(cut) == expected(reference)


def test_the_record_batch_is_a_view_of_the_received_bytes():
    batch = pa.record_batch({"x": list(range(1000))})
    m = types.ReadRowsResponse(row_count=1000)
    m.arrow_record_batch.serialized_record_batch = batch.serialize().to_pybytes()
    data = m.SerializeToString()
    chunk = parse_read_rows(data)
    assert chunk.rows.obj is data  # no copy of the rows
    assert pa.ipc.read_record_batch(pa.py_buffer(chunk.rows), batch.schema).equals(batch)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x30", "varint runs past the end"),
        (b"\x22\x05ab", "claims 5 bytes"),
        (b"\x30" + b"\xff" * 11, "longer than ten bytes"),
        (b"\x03", "field number 0"),
        (b"\x33", "wire type 3"),
    ],
)
def test_malformed_bytes_are_data_loss(data, problem):
    with pytest.raises(errors.DataLoss, match=problem):
        parse_read_rows(data)


# -- through every transport -----------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=300))
def test_a_read_over_the_in_memory_transport_gets_every_row(tmp_path_factory, rows):
    store = TableStore(tmp_path_factory.mktemp("wire"))
    store.create_dataset("p", "d")
    table = pa.table(
        {"id": list(range(len(rows))), "s": rows}, schema=pa.schema([("id", pa.int64()), ("s", pa.string())])
    )
    store.create_table("p", "d", "t", table.schema)
    store.append("p", "d", "t", table)
    client = clients.bigquery_read(
        transport=InMemoryTransport(StorageReadServicer(store, response_bytes=256))
    )
    got = read_bigquery("bq://p.d.t", client=client, max_stream_count=3, progress=False).to_arrow()
    assert got.sort_by("id").equals(table)


def test_wire_variant_is_read_rows_with_its_own_decode():
    from bpj._gen.services.big_query_read import READ_ROWS

    assert (READ_ROWS_WIRE.path, READ_ROWS_WIRE.http, READ_ROWS_WIRE.timeout) == (
        READ_ROWS.path,
        READ_ROWS.http,
        READ_ROWS.timeout,
    )
    assert READ_ROWS_WIRE.decode is parse_read_rows and READ_ROWS.decode is None
    assert READ_ROWS_WIRE.cache_key != READ_ROWS.cache_key
