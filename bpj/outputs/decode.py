"""Output files' bytes to Arrow: JSONL with pyarrow's C++ JSON reader, CSV with its CSV reader.

:func:`decode` turns the checked bytes of one object, or of whole lines of it (a byte range, a slice of
an object too large to decode at once), into a table.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.gcs import CHUNK_SIZE, GcsObject

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BLANK", "decode", "release_unused"]


def decode(obj: GcsObject, data: bytes, block_size: int | None = None) -> pa.Table | None:
    """An object's rows as an Arrow table (None when it holds none). JSONL: pyarrow's JSON reader, whole
    file as one block (one thread) unless it is large or ``block_size`` says how large the blocks it parses
    on its threads are; a column whose values are of different kinds in one file (or that pyarrow's reader
    gets wrong: a list that starts with null) falls back to a per-line parse, with a column of mixed kinds
    as JSON text. CSV: pyarrow's CSV reader."""
    import pyarrow as pa

    if BLANK.fullmatch(data):
        return None
    pool = _memory_pool()
    if block_size is None:
        block_size = CHUNK_SIZE if len(data) > 4 * CHUNK_SIZE else len(data) + 1
    threads = block_size < len(data)
    block = block_size if threads else len(data) + 1
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


BLANK = re.compile(rb"\s*")  # not data.strip(): that copies a bytearray, however large


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


def release_unused() -> None:
    """Hand the decoding pool's free memory back to the OS (jemalloc keeps it a while otherwise)."""
    _memory_pool().release_unused()


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
