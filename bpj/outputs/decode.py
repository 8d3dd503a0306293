"""Output files' bytes to Arrow: JSONL with pyarrow's C++ JSON reader, CSV with its CSV reader.

:func:`decode` turns the checked bytes of one object (or of whole lines of it) into a table; :func:`slices`
does it a bounded slice of whole lines at a time, for an object too large to decode at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.gcs import CHUNK_SIZE, GcsObject

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["decode", "slices"]


def decode(obj: GcsObject, data: bytes) -> pa.Table | None:
    """An object's rows as an Arrow table (None when it holds none). JSONL: pyarrow's JSON reader, whole
    file as one block (one thread) unless it is large; a column whose values are of different kinds in one
    file (or that pyarrow's reader gets wrong: a list that starts with null) falls back to a per-line parse,
    with a column of mixed kinds as JSON text. CSV: pyarrow's CSV reader."""
    import pyarrow as pa

    if _BLANK.fullmatch(data):
        return None
    pool = _memory_pool()
    threads = len(data) > 4 * CHUNK_SIZE
    block = CHUNK_SIZE if threads else len(data) + 1
    if obj.format == "csv":
        import pyarrow.csv as pcsv

        options = pcsv.ReadOptions(use_threads=threads, block_size=block)
        try:
            return pcsv.read_csv(pa.BufferReader(data), read_options=options, memory_pool=pool)
        except pa.ArrowInvalid as e:
            if not threads or "straddl" not in str(e):
                raise _bad_file(obj, e) from None
            options = pcsv.ReadOptions(use_threads=True, block_size=len(data) + 1)
            return pcsv.read_csv(pa.BufferReader(data), read_options=options, memory_pool=pool)
    import pyarrow.json as pj

    for block_size in (block, len(data) + 1):
        try:
            table = pj.read_json(
                pa.BufferReader(data),
                read_options=pj.ReadOptions(use_threads=threads, block_size=block_size),
                memory_pool=pool,
            )
        except pa.ArrowInvalid as e:
            if "straddl" in str(e) and block_size != len(data) + 1:
                continue
            if "changed from" in str(e) or "not a" in str(e).lower():
                return _decode_mixed(obj, data)
            raise _bad_file(obj, e) from None
        try:
            # pyarrow's JSON reader drops a leading null of a list whose item type it learns later
            # (``[null, 1]``): the list's offsets then run past its values, and its rows read wrong.
            table.validate()
        except pa.ArrowInvalid:
            return _decode_mixed(obj, data)
        return table
    raise AssertionError("unreachable")


_BLANK = re.compile(rb"\s*")  # not data.strip(): that copies a bytearray, however large


def slices(obj: GcsObject, data: bytes, size: int) -> Iterator[pa.Table]:
    """The rows of a JSONL object's bytes, decoded ``size`` bytes of whole lines at a time (a line longer
    than that whole), as they are asked for."""
    start, end_of_data = 0, len(data)
    while start < end_of_data:
        end = min(end_of_data, start + size)
        if end < end_of_data:
            cut = data.rfind(b"\n", start, end)
            if cut < 0:  # one line longer than a slice: the whole line
                cut = data.find(b"\n", end)
            end = end_of_data if cut < 0 else cut + 1
        table = decode(obj, data[start:end])
        start = end
        if table is not None:
            yield table


_pool: Any = None


def _memory_pool() -> Any:
    """jemalloc's pool where pyarrow has it, else the system's. The default (mimalloc) keeps a heap of
    parse scratch per decoding thread: measured about twice jemalloc's growth."""
    global _pool
    if _pool is None:
        import pyarrow as pa

        try:
            _pool = pa.jemalloc_memory_pool()
        except NotImplementedError:
            _pool = pa.system_memory_pool()
    return _pool


def _decode_mixed(obj: GcsObject, data: bytes) -> pa.Table:
    import pyarrow as pa

    from bpj.outputs.json_columns import JSON_FIELD_METADATA
    from bpj.outputs.reader import _dumps

    rows = []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise errors.InvalidArgument(f"{obj.uri}: line {n} is not JSON: {e}") from None
    names: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                names.append(k)
    columns, fields = [], []
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            columns.append(pa.array(values))
            fields.append(pa.field(name, columns[-1].type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns.append(pa.array([None if v is None else _dumps(v) for v in values], pa.string()))
            fields.append(pa.field(name, pa.string(), metadata=JSON_FIELD_METADATA))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _bad_file(obj: GcsObject, e: Exception) -> errors.BpjError:
    return errors.InvalidArgument(f"{obj.uri} is not valid {obj.format.upper()}: {e}")
