"""What one usually wants from the outputs of publisher models: Gemini's text and token counts, embeddings'
vectors. Each function takes the rows as a reader gives them (an Arrow table or record batch from Cloud
Storage or BigQuery alike) and returns a flat table, one row per row, computed with Arrow kernels.

A Gemini output row (``predictions.jsonl`` in Cloud Storage, the ``predictions`` table in BigQuery)::

    {"status": "", "processed_time": "...", "request": {"contents": [...]},
     "response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "..."}]},
                                  "finishReason": "STOP"}],
                  "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14},
                  "modelVersion": "..."}}

A failed row has a non-empty ``status`` and no ``response``; a blocked prompt has a ``response`` with
``promptFeedback.blockReason`` and no candidates. A text-embedding output row::

    {"instance": {"content": "..."}, "status": "",
     "predictions": [{"embeddings": {"values": [...], "statistics": {"token_count": 8, "truncated": false}}}]}

Columns of JSON text (a BigQuery STRING column, or a column that the Cloud Storage reader kept as text) are
parsed first, so the functions work on either form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bpj import errors

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EMBEDDING_COLUMNS", "TEXT_COLUMNS", "embeddings", "gemini_text", "gemini_text_schema"]

# The columns each function reads.
TEXT_COLUMNS = ("response", "status")
EMBEDDING_COLUMNS = ("predictions", "status")


def gemini_text_schema() -> pa.Schema:
    """The columns of :func:`gemini_text` (before the ``keep`` ones)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("text", pa.string()),
            ("finish_reason", pa.string()),
            ("block_reason", pa.string()),
            ("prompt_token_count", pa.int64()),
            ("candidates_token_count", pa.int64()),
            ("total_token_count", pa.int64()),
            ("status", pa.string()),
        ]
    )


def gemini_text(data: pa.Table | pa.RecordBatch, *, keep: Sequence[str] = ()) -> pa.Table:
    """One row per output row of a Gemini batch job: ``text`` (the first candidate's text parts, joined; ""
    when the candidate has no text, null when there is no candidate: a failed row or a blocked prompt),
    ``finish_reason``, ``block_reason`` (``promptFeedback.blockReason``), the usage counts
    ``prompt_token_count``, ``candidates_token_count`` and ``total_token_count`` (null when not given), and
    ``status`` ("" for a row that succeeded, else the error). ``keep``: columns of ``data`` to carry along
    (an input column that identifies the row, say)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _table(data)
    n = table.num_rows
    _check_columns(table, TEXT_COLUMNS, "gemini_text", "a Gemini")
    response = _parsed(_column(table, "response"))
    if response is not None and not pa.types.is_struct(response.type) and not pa.types.is_null(response.type):
        # Values of different kinds (kept as JSON text): the same, one row at a time.
        return _with_keep(_gemini_rows(response.to_pylist(), _status(table)), table, keep)
    first = _First.of(_child(response, "candidates"))
    parts = first.get("content", "parts")
    usage = _child(response, "usageMetadata")
    columns = {
        "text": _joined_text(parts, first.valid(), n),
        "finish_reason": first.get("finishReason"),
        "block_reason": _child(_child(response, "promptFeedback"), "blockReason"),
        "prompt_token_count": _child(usage, "promptTokenCount"),
        "candidates_token_count": _child(usage, "candidatesTokenCount"),
        "total_token_count": _child(usage, "totalTokenCount"),
        "status": _status(table),
    }
    schema = gemini_text_schema()
    arrays = []
    for field in schema:
        value = columns[field.name]
        arrays.append(pa.nulls(n, field.type) if value is None else pc.cast(value, field.type))
    return _with_keep(pa.Table.from_arrays(arrays, schema=schema), table, keep)


def embeddings(
    data: pa.Table | pa.RecordBatch, *, keep: Sequence[str] = (), dtype: str = "float32"
) -> pa.Table:
    """One row per output row of a text-embedding batch job: ``values`` (the vector, a fixed-size list of
    ``dtype``: ``column.to_numpy()`` on its flattened values reshapes to rows x dimensions; null for a row
    without one), ``token_count``, ``truncated`` and ``status``. Vectors of different lengths in one table
    raise ``bpj.errors.InvalidArgument``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _table(data)
    n = table.num_rows
    value_type = pa.float32() if dtype == "float32" else pa.float64() if dtype == "float64" else None
    if value_type is None:
        raise errors.UsageError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    _check_columns(table, EMBEDDING_COLUMNS, "embeddings", "an embedding")
    predictions = _parsed(_column(table, "predictions"))
    if predictions is not None and pa.types.is_string(predictions.type):
        raise errors.InvalidArgument(
            "the predictions column holds values of different kinds; read its JSON text"
        )
    first = _First.of(predictions)
    vectors = first.get("embeddings", "values")
    token_count = first.get("embeddings", "statistics", "token_count")
    truncated = first.get("embeddings", "statistics", "truncated")
    dim = 0
    if vectors is not None and pa.types.is_list(vectors.type):
        lengths = pc.list_value_length(vectors)
        low, high = pc.min_max(lengths).values()
        if low.as_py() is not None and low.as_py() != high.as_py():
            raise errors.InvalidArgument(
                f"embeddings of different lengths ({low.as_py()} and {high.as_py()} values) in one output"
            )
        dim = high.as_py() or 0
    if dim and vectors is not None:
        valid = pc.is_valid(vectors)
        filled = pc.coalesce(vectors, pa.scalar([0.0] * dim, pa.list_(pa.float64())).cast(vectors.type))
        flat = pc.cast(filled.flatten(), value_type)
        values = pa.Array.from_buffers(
            pa.list_(value_type, dim),
            n,
            [valid.buffers()[1]],
            null_count=n - valid.true_count,
            children=[flat],
        )
    else:
        values = pa.nulls(n, pa.list_(value_type, max(dim, 1)))
    out = pa.table(
        {
            "values": values,
            "token_count": pa.nulls(n, pa.int64())
            if token_count is None
            else pc.cast(token_count, pa.int64()),
            "truncated": pa.nulls(n, pa.bool_()) if truncated is None else pc.cast(truncated, pa.bool_()),
            "status": _status(table),
        }
    )
    return _with_keep(out, table, keep)


# -- helpers ----------------------------------------------------------------------------------------------


def _check_columns(table: pa.Table, columns: Sequence[str], what: str, model: str) -> None:
    if table.num_rows and not set(columns) & set(table.column_names):
        raise errors.UsageError(
            f"{what}: the rows have none of the columns {list(columns)}, so they are not {model} model's "
            f"output (columns: {table.column_names})"
        )


def _table(data: pa.Table | pa.RecordBatch) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _parsed(values: pa.Array | None) -> pa.Array | None:
    import pyarrow as pa

    from bpj.outputs.json_columns import parse

    if values is not None and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return parse(values)
    return values


def _child(values: pa.Array | None, name: str) -> pa.Array | None:
    """The field ``name`` of a struct array (null where the struct is), None when there is no such field."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if values is None or not pa.types.is_struct(values.type) or values.type.get_field_index(name) < 0:
        return None
    return pc.struct_field(values, [values.type.get_field_index(name)])


class _First:
    """The first item of each row's list (null for a null or empty list), read field by field: only the
    fields asked for are gathered, not the whole items."""

    def __init__(self, items: pa.Array | None, index: pa.Array | None) -> None:
        self.items = items  # every list's items, one after the other
        self.index = index  # per row, the position of its first item in ``items`` (null: none)

    @classmethod
    def of(cls, lists: pa.Array | None) -> _First:
        import pyarrow as pa
        import pyarrow.compute as pc

        if lists is None or not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
            return cls(None, None)
        has = pc.fill_null(pc.greater(pc.list_value_length(lists), 0), False)
        starts = lists.offsets.slice(0, len(lists))
        return cls(lists.values, pc.if_else(has, starts, pa.scalar(None, starts.type)))

    def get(self, *path: str) -> pa.Array | None:
        """Per row, the field at ``path`` of its first item (None when the items have no such field)."""
        import pyarrow.compute as pc

        values = self.items
        for name in path:
            values = _child(values, name)
        return None if values is None or self.index is None else pc.take(values, self.index)

    def valid(self) -> pa.Array | None:
        """Per row, whether it has a first item (None when there are no items at all)."""
        import pyarrow.compute as pc

        if self.items is None or self.index is None:
            return None
        return pc.fill_null(pc.take(pc.is_valid(self.items), self.index), False)


def _joined_text(parts: pa.Array | None, first: pa.Array | None, n: int) -> pa.Array | None:
    """Per row, the ``text`` of its parts joined ("" when none has text); null where ``first`` (whether the
    row has a first candidate) is false."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if first is None:
        return None
    if parts is None or not pa.types.is_list(parts.type):
        text = pa.repeat("", n).cast(pa.large_string())
    else:
        flat = parts.flatten()
        texts = _child(flat, "text")
        if texts is None:
            texts = pa.repeat("", len(flat))
        texts = pc.fill_null(pc.cast(texts, pa.large_string()), "")
        lengths = pc.fill_null(pc.list_value_length(parts), 0).cast(pa.int64())
        offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
        text = pc.binary_join(pa.LargeListArray.from_arrays(offsets, texts), pa.scalar("", pa.large_string()))
    return pc.if_else(first, text, pa.scalar(None, pa.large_string()))


def _status(table: pa.Table) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    status = _column(table, "status")
    if status is None:
        return pa.repeat("", table.num_rows).cast(pa.string())
    if not pa.types.is_string(status.type) and not pa.types.is_null(status.type):
        status = pa.array([None if v is None else _text(v) for v in status.to_pylist()], pa.string())
    return pc.fill_null(status.cast(pa.string()), "")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _with_keep(out: pa.Table, table: pa.Table, keep: Sequence[str]) -> pa.Table:
    if isinstance(keep, str):
        raise errors.UsageError("keep must be a list of column names, not one string")
    for name in keep:
        if name not in table.column_names:
            raise errors.UsageError(f"keep: no column {name!r} in the output (columns: {table.column_names})")
        out = out.append_column(table.schema.field(name), table.column(name))
    return out


def _gemini_rows(responses: list[Any], status: pa.Array) -> pa.Table:
    """:func:`gemini_text` one row at a time, for responses kept as JSON text."""
    import pyarrow as pa

    rows = []
    for value in responses:
        response = json.loads(value) if isinstance(value, str) and value else value
        rows.append(_gemini_row(response if isinstance(response, dict) else None))
    out = pa.Table.from_pylist(rows, schema=gemini_text_schema().remove(6))
    return out.append_column(gemini_text_schema().field("status"), status)


def _gemini_row(response: dict[str, Any] | None) -> dict[str, Any]:
    def get(value: Any, *path: str) -> Any:
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    candidates = get(response, "candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else None
    text = None
    if first is not None:
        parts = get(first, "content", "parts")
        parts = parts if isinstance(parts, list) else []
        text = "".join(t for t in (get(p, "text") for p in parts) if isinstance(t, str))
    usage = get(response, "usageMetadata")
    return {
        "text": text,
        "finish_reason": get(first, "finishReason"),
        "block_reason": get(response, "promptFeedback", "blockReason"),
        "prompt_token_count": get(usage, "promptTokenCount"),
        "candidates_token_count": get(usage, "candidatesTokenCount"),
        "total_token_count": get(usage, "totalTokenCount"),
    }
