"""JSON text in Arrow columns, made nested Arrow values (structs, lists, numbers, strings, booleans).

BigQuery's Storage Read API sends a column of BigQuery's JSON type as Arrow strings whose field carries
``ARROW:extension:name: google:sqlType:json`` (the Vertex AI outputs of publisher models hold ``request``
and ``response`` in such columns). :func:`parse` turns one such column into the nested value the JSON
reader would give for the same text in a JSONL file, so a table read from BigQuery has the shape of the
same output read from Cloud Storage. It runs pyarrow's C++ JSON reader over the whole column at once
(each value wrapped as ``{"v": value}`` on a line of its own), not a Python loop per value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "JSON_EXTENSION",
    "JSON_FIELD_METADATA",
    "PUBLISHER_JSON_COLUMNS",
    "is_json_field",
    "json_fields",
    "parse",
    "parse_columns",
    "publisher_json_fields",
]

JSON_EXTENSION = b"google:sqlType:json"
_EXTENSION_KEY = b"ARROW:extension:name"
# The field metadata of a column of JSON text: BigQuery's mark, which the readers also give the columns they
# keep as JSON text (values of different kinds), so that such a column is never encoded twice.
JSON_FIELD_METADATA = {_EXTENSION_KEY: JSON_EXTENSION}

T = TypeVar("T", "pa.Table", "pa.RecordBatch")


def is_json_field(field: pa.Field) -> bool:
    """Whether ``field`` is of BigQuery's JSON type (as the Storage Read API marks it)."""
    return bool(field.metadata) and field.metadata.get(_EXTENSION_KEY) == JSON_EXTENSION


def json_fields(schema: pa.Schema) -> list[str]:
    """The top-level columns of ``schema`` that are of BigQuery's JSON type."""
    return [f.name for f in schema if is_json_field(f)]


# Vertex AI's output tables of publisher models: these columns hold JSON, as BigQuery's JSON type or as
# JSON text in a STRING column (the input's ``request`` keeps the input's type; the local stack's table store
# keeps every JSON column as STRING).
PUBLISHER_JSON_COLUMNS = ("request", "response", "predictions")


def publisher_json_fields(schema: pa.Schema) -> list[str]:
    """The STRING columns of ``schema`` that hold JSON in a publisher model's output table (one with a
    ``status`` column and a ``response`` or ``predictions`` column): ``request``, ``response``,
    ``predictions``."""
    import pyarrow as pa

    names = set(schema.names)
    if "status" not in names or not names & {"response", "predictions"}:
        return []
    return [
        n
        for n in PUBLISHER_JSON_COLUMNS
        if n in names and pa.types.is_string(schema.field(n).type) and not is_json_field(schema.field(n))
    ]


def parse(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each value's JSON text as one nested Arrow value: an object a struct, an array a list, and so on;
    null, an empty string or JSON ``null`` give null. The values are returned as they are when they are not
    all JSON text, or when they hold values of different kinds in one place (an object here, a string
    there, at any depth), which no one Arrow type holds; as the Cloud Storage reader keeps such a column as
    JSON text. (Returned as they are: the very object passed in.)"""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    original = values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return original
    if len(values) == 0 or values.null_count == len(values):
        return pa.nulls(len(values))
    text = values.cast(pa.large_string())
    text = pc.fill_null(text, "null")
    text = pc.if_else(pc.equal(text, ""), "null", text)
    # A raw line break can only be whitespace between tokens in valid JSON (inside strings it is escaped),
    # so it may become a space; then every value is one line.
    if pc.any(pc.match_substring(text, "\n")).as_py() or pc.any(pc.match_substring(text, "\r")).as_py():
        text = pc.replace_substring(pc.replace_substring(text, "\n", " "), "\r", " ")
    lines = pc.binary_join_element_wise(
        pa.scalar('{"v":', pa.large_string()),
        text,
        pa.scalar("}\n", pa.large_string()),
        pa.scalar("", pa.large_string()),
    )
    # A new array: its values start at the start of its data buffer, one after the other.
    end = pc.sum(pc.binary_length(lines)).as_py() or 0
    data = lines.buffers()[2][:end]
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(end + 1, 1 << 10)),
        )
        # pyarrow's JSON reader drops a leading null of a list whose item type it learns later (``[null,
        # 1]``), leaving the list's offsets past its values: such a result is not returned.
        table.validate()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return original
    if table.num_rows != len(values) or table.column_names != ["v"]:
        return original
    column = table.column("v")
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def parse_columns(data: T, names: Iterable[str]) -> T:
    """``data`` with the JSON text of the columns ``names`` (those it has) made nested values by
    :func:`parse`. A column that stays text keeps its field (and its metadata)."""
    import pyarrow as pa

    wanted = [n for n in names if n in data.schema.names]
    if not wanted or data.num_rows == 0:
        return data
    arrays = list(data.columns)
    fields = list(data.schema)
    for i, field in enumerate(fields):
        if field.name not in wanted:
            continue
        parsed = parse(arrays[i])
        if parsed is arrays[i]:  # not JSON of one shape: kept as text
            continue
        arrays[i] = parsed
        fields[i] = pa.field(field.name, parsed.type)
    schema = pa.schema(fields, metadata=data.schema.metadata)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)
