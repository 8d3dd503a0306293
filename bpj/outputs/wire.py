"""A Storage Read response read from its wire bytes, its rows left where they arrived, and decoded into an
Arrow record batch.

Parsing a ReadRowsResponse as a message copies its rows twice: into the message, then out of it as a new
``bytes`` when ``arrow_record_batch.serialized_record_batch`` is read. A response is almost all rows, so the
reader asks the transport for each response's wire form instead (:data:`READ_ROWS_WIRE`, a variant of
ReadRows) and reads here the few fields it needs; the record batch is a view of the received bytes.

Field numbers are those of ``google/cloud/bigquery/storage/v1/storage.proto`` (ReadRowsResponse) and
``arrow.proto`` (ArrowRecordBatch). Unknown fields are skipped; repeated fields follow protobuf's rules
(the last scalar wins, a repeated message merges, the last member of a oneof wins).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpj import errors
from bpj._gen.services.big_query_read import READ_ROWS

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["READ_ROWS_WIRE", "ReadRowsChunk", "decode_response", "lz4_available", "parse_read_rows"]

# ReadRowsResponse
_AVRO_ROWS = 3
_ARROW_RECORD_BATCH = 4
_ROW_COUNT = 6
_UNCOMPRESSED_BYTE_SIZE = 9
# ArrowRecordBatch
_SERIALIZED_RECORD_BATCH = 1

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class ReadRowsChunk:
    """The fields of one ReadRowsResponse that a reader needs.

    ``rows`` is the serialized Arrow record batch, a view of the response's bytes (empty when there is
    none); ``format`` is "arrow", "avro" or "" (no rows); ``uncompressed_byte_size`` is None when unset.
    """

    row_count: int
    rows: memoryview
    format: str
    uncompressed_byte_size: int | None


def parse_read_rows(data: bytes) -> ReadRowsChunk:
    """The :class:`ReadRowsChunk` of a ReadRowsResponse in wire form; DataLoss when it is malformed."""
    view = memoryview(data)
    row_count = 0
    uncompressed: int | None = None
    fmt = ""
    rows: tuple[int, int] | None = None
    for number, kind, value, start in _fields(data, 0, len(data)):
        if number == _ROW_COUNT and kind == _VARINT:
            row_count = _signed(value)
        elif number == _UNCOMPRESSED_BYTE_SIZE and kind == _VARINT:
            uncompressed = _signed(value)
        elif number == _AVRO_ROWS and kind == _LEN:
            fmt, rows = "avro", None
        elif number == _ARROW_RECORD_BATCH and kind == _LEN:
            if fmt != "arrow":  # a oneof member that follows another starts afresh
                fmt, rows = "arrow", None
            for inner, inner_kind, length, at in _fields(data, start, start + value):
                if inner == _SERIALIZED_RECORD_BATCH and inner_kind == _LEN:
                    rows = (at, length)
    batch = view[rows[0] : rows[0] + rows[1]] if rows is not None else view[:0]
    return ReadRowsChunk(row_count, batch, fmt, uncompressed)


def _fields(data: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, value, start)`` of every field in ``data[pos:end]``: for a
    length-delimited field, value is its length and start where its bytes begin; else value is the varint
    (0 for fixed-size fields) and start is unused."""
    out = []
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise _malformed(f"field number 0 at byte {pos}")
        if kind == _VARINT:
            value, pos = _varint(data, pos, end)
            out.append((number, kind, value, pos))
        elif kind == _LEN:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _malformed(f"field {number} claims {length} bytes, {end - pos} are left")
            out.append((number, kind, length, pos))
            pos += length
        elif kind in (_FIXED64, _FIXED32):
            pos += 8 if kind == _FIXED64 else 4
            if pos > end:
                raise _malformed(f"field {number} runs past the end")
            out.append((number, kind, 0, pos))
        else:
            raise _malformed(f"field {number} has wire type {kind}, which proto3 does not use")
    return out


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _malformed("a varint is longer than ten bytes")
    raise _malformed("a varint runs past the end")


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _malformed(detail: str) -> errors.DataLoss:
    return errors.DataLoss(f"a ReadRows response is malformed: {detail}")


# -- record batches --------------------------------------------------------------------------------------------


def lz4_available() -> bool:
    """Whether the ``lz4`` package is installed, so the reader can ask for LZ4-compressed responses."""
    try:
        import lz4.frame  # noqa: F401
    except ImportError:
        return False
    return True


def _lz4_decompress(data: memoryview, size: int) -> bytes:
    try:
        import lz4.frame
    except ImportError:
        # Arrow's "lz4" codec is the LZ4 frame format too: the responses of a session that asked for
        # compression stay readable in a process without the lz4 package (a partition read elsewhere).
        import pyarrow as pa

        return pa.decompress(data, decompressed_size=size, codec="lz4", asbytes=True)
    return lz4.frame.decompress(data)


def decode_response(chunk: ReadRowsChunk, schema: pa.Schema) -> tuple[pa.RecordBatch | None, int, int]:
    """``(batch, rows, bytes)`` of one ReadRowsResponse (read by :func:`parse_read_rows`);
    ``batch`` is None for a response without rows.

    The batch's buffers point into the response's bytes as received (no copy). A response whose
    ``uncompressed_byte_size`` is positive carries LZ4-frame-compressed rows.
    """
    import pyarrow as pa

    if chunk.format == "avro":
        raise errors.DataLoss("a ReadRows response carries Avro rows; the session asked for Arrow")
    data: memoryview | bytes = chunk.rows
    if chunk.uncompressed_byte_size is not None and chunk.uncompressed_byte_size > 0:
        data = _lz4_decompress(chunk.rows, chunk.uncompressed_byte_size)
    if not len(data):
        if chunk.row_count:
            raise errors.DataLoss(f"a ReadRows response says {chunk.row_count} rows but carries none")
        return None, 0, 0
    batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
    rows = chunk.row_count or batch.num_rows
    if rows != batch.num_rows:
        raise errors.DataLoss(
            f"a ReadRows response says {chunk.row_count} rows but its record batch holds {batch.num_rows}"
        )
    return batch, rows, len(data)


# ReadRows whose responses come as ReadRowsChunk: on every transport (REST and in-memory serialize each
# response message first, gRPC hands over the bytes it received).
READ_ROWS_WIRE = dataclasses.replace(READ_ROWS, decode=parse_read_rows)
