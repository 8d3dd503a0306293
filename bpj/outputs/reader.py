"""The reader facade every output reader shares (GCS files, BigQuery tables).

A reader implements two methods, everything else derives from them::

    iter_batches()  -> Iterator[pyarrow.RecordBatch]   the rows, batch by batch (one schema per source
                                                        file or stream; to_arrow() unifies them)
    partitions()    -> Sequence[Partition]               picklable tasks, each with read() -> pyarrow.Table

``records()``, ``to_arrow()``, ``to_pandas()``, ``export(path)`` and iteration come from here, as do
``Progress`` (rows, bytes, rate, share done and time left on stderr) and ``unify()`` (tables of differing
schemas into one).
"""

from __future__ import annotations

import abc
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol

from bpj import errors

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

__all__ = ["Partition", "Progress", "Reader", "cores", "export_format", "unify"]


class Partition(Protocol):
    """One independent piece of a read: plain, picklable, readable in another process or machine.

    A partition that is one byte range of a larger object (``GcsReader.partitions(max_bytes=...)``) also has
    ``read_piece() -> (table, Piece)``: its rows, and the CRC32C of exactly the bytes they came from. Its rows
    are final only once :func:`bpj.outputs.pieces.check` has combined every piece of its object into the
    object's CRC32C; the engine adapters (``to_dask``, ``to_ray``) do that before they hand a row over.
    """

    def read(self) -> pa.Table: ...


class Reader(abc.ABC):
    """Rows of one output (predictions or errors). Subclasses implement ``iter_batches`` and ``partitions``."""

    @abc.abstractmethod
    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow record batches."""

    @abc.abstractmethod
    def partitions(self) -> Sequence[Partition]:
        """The read split into picklable tasks; reading them all gives the rows of ``to_arrow()``."""

    def records(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts."""
        for batch in self.iter_batches():
            yield from batch.to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.records()

    def to_arrow(self) -> pa.Table:
        """Every row in one table (per-batch schemas unified: ints widen to floats, struct fields merge)."""
        return unify(self.iter_batches())

    def to_pandas(self, **kwargs: Any) -> pandas.DataFrame:
        """``to_arrow().to_pandas(**kwargs)`` (``pip install 'bpj[pandas]'``)."""
        try:
            import pandas  # noqa: F401  (checked before any byte is read)
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "to_pandas() needs pandas: pip install 'bpj[pandas]'", name="pandas"
            ) from None
        return self.to_arrow().to_pandas(**kwargs)

    def to_dask(self, **kwargs: Any) -> Any:
        """A ``dask.dataframe.DataFrame`` with one partition per bpj partition (``pip install 'bpj[dask]'``);
        see :func:`bpj.outputs.engines.to_dask`."""
        from bpj.outputs import engines

        return engines.to_dask(self, **kwargs)

    def to_ray(self, **kwargs: Any) -> Any:
        """A ``ray.data.Dataset`` whose read tasks are bpj partitions (``pip install 'bpj[ray]'``); see
        :func:`bpj.outputs.engines.to_ray`."""
        from bpj.outputs import engines

        return engines.to_ray(self, **kwargs)

    def only(self, columns: Sequence[str]) -> Reader:
        """The same read limited to ``columns`` where the source can leave the others out (BigQuery's
        selected fields), else this reader."""
        return self

    def texts(self, *, keep: Sequence[str] = ()) -> pa.Table:
        """The rows of a Gemini (publisher model) output as text and token counts, one table:
        :func:`bpj.outputs.gemini_text` over each batch as it is read (memory: the result and the
        batches in flight). Reads only ``response``, ``status`` and ``keep`` where the source allows."""
        from bpj.outputs.publisher import TEXT_COLUMNS, gemini_text

        source = self.only([*TEXT_COLUMNS, *keep])
        return _combine((gemini_text(b, keep=keep) for b in source.iter_batches()), gemini_text)

    def embeddings(self, *, keep: Sequence[str] = (), dtype: str = "float32") -> pa.Table:
        """The rows of a text-embedding output as vectors (a fixed-size list column) and token counts:
        :func:`bpj.outputs.embeddings` over each batch as it is read."""
        from bpj.outputs.publisher import EMBEDDING_COLUMNS, embeddings

        def one(batch: Any) -> pa.Table:
            return embeddings(batch, keep=keep, dtype=dtype)

        source = self.only([*EMBEDDING_COLUMNS, *keep])
        return _combine(_same_size(one(b) for b in source.iter_batches()), one)

    def export(self, path: str | os.PathLike[str], *, format: str | None = None) -> int:
        """Write the rows to a local file: ``.jsonl``/``.json`` (one JSON object a line), ``.csv`` (nested
        values as JSON text) or ``.parquet``, by ``format`` or the extension. Returns the rows written."""
        fmt = export_format(path, format)
        if fmt == "jsonl":
            with open(path, "w", encoding="utf-8") as f:
                return _write_jsonl(self.iter_batches(), f)
        if fmt == "csv":
            return _write_csv(self.iter_batches(), path)
        return _write_parquet(self.iter_batches(), path)


def export_format(path: str | os.PathLike[str], format: str | None) -> str:
    """``jsonl``, ``csv`` or ``parquet``: ``format``, else told by the extension of ``path``."""
    fmt = (format or os.path.splitext(os.fspath(path))[1].lstrip(".")).lower()
    if fmt == "ndjson" or fmt == "json":
        fmt = "jsonl"
    if fmt not in ("jsonl", "csv", "parquet"):
        raise errors.UsageError(
            f"export: cannot tell the format of {os.fspath(path)!r}; use .jsonl, .csv or .parquet"
        )
    return fmt


def _combine(tables: Iterable[pa.Table], empty: Any) -> pa.Table:
    """The per-batch results in one table; ``empty(an empty table)`` when there was no batch."""
    import pyarrow as pa

    parts = list(tables)
    if not parts:
        return empty(pa.table({}))
    return unify(parts)


def _same_size(tables: Iterable[pa.Table]) -> list[pa.Table]:
    """Per-batch embeddings with one vector size: a batch without vectors takes the others' size; two
    sizes raise InvalidArgument."""
    import pyarrow as pa

    tables = list(tables)
    sizes = {
        t.schema.field("values").type.list_size for t in tables if t.column("values").null_count < len(t)
    }
    if len(sizes) > 1:
        raise errors.InvalidArgument(f"embeddings of different lengths ({sorted(sizes)}) in one output")
    if not sizes:
        return tables
    field = tables[0].schema.field("values")
    vtype = pa.list_(field.type.value_type, sizes.pop())
    return [
        t if t.schema.field("values").type == vtype else t.set_column(0, "values", pa.nulls(len(t), vtype))
        for t in tables
    ]


def cores() -> int:
    """The CPUs this process may run on (its affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# -- progress -----------------------------------------------------------------------------------------


class Progress:
    """A read's progress on stderr: rows, MB, MB/s, and, when the size is known (``total_bytes``: the listed
    objects; ``total_rows``: a read session's estimate), the share done and an estimate of the time left.

    ``enabled``: True always, False never, None as a wait's progress does: on a terminal; elsewhere only with
    ``BPJ_PROGRESS=1``; never with ``BPJ_PROGRESS=0``. On a terminal one line is redrawn in place at most every
    ``interval`` seconds; elsewhere a plain line is written every ``every`` seconds and at the end.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        label: str = "",
        interval: float = 0.25,
        every: float = 30.0,
        total_bytes: int | None = None,
        total_rows: int | None = None,
        stream: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from bpj.progress import is_terminal_stream

        self.stream = stream if stream is not None else sys.stderr
        self.live = is_terminal_stream(self.stream)
        if enabled is None:
            asked = os.environ.get("BPJ_PROGRESS", "")
            enabled = asked != "0" and (self.live or asked == "1")
        self.enabled = enabled
        self.label = label
        self.rows = 0
        self.bytes = 0
        self.total_bytes = total_bytes
        self.total_rows = total_rows
        self._interval = interval if self.live else every
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._drawn = False

    def add(self, rows: int = 0, nbytes: int = 0) -> None:
        self.rows += rows
        self.bytes += nbytes
        if self.enabled:
            now = self._clock()
            if now - self._last >= self._interval:
                self._last = now
                self._draw(now)

    def line(self, now: float) -> str:
        """The text shown at ``now`` (a ``clock()`` reading)."""
        from bpj.progress import clock_text

        seconds = max(now - self._start, 1e-9)
        mb = self.bytes / 1e6
        parts = [f"{self.label}:" if self.label else "", f"{self.rows:,} rows"]
        done, total = self._share()
        if self.total_bytes:
            parts.append(f"{mb:,.1f}/{self.total_bytes / 1e6:,.1f} MB")
        else:
            parts.append(f"{mb:,.1f} MB")
        parts.append(f"{mb / seconds:,.1f} MB/s")
        if total:
            share = min(done / total, 1.0)
            parts.append(f"{100 * share:.0f}%")
            if 0 < share < 1:
                parts.append(f"~{clock_text(seconds * (1 - share) / share)} left")
        parts.append(f"[{clock_text(seconds)}]")
        return " ".join(p for p in parts if p)

    def _share(self) -> tuple[float, float]:
        """(done, total) in the unit whose total is known: bytes before rows."""
        if self.total_bytes:
            return self.bytes, self.total_bytes
        if self.total_rows:
            return self.rows, self.total_rows
        return 0, 0

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self.stream.write(f"\r\x1b[2K{text}" if self.live else text + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and (self._drawn or self.rows or self.bytes):
            self._draw(self._clock())
            if self.live:
                self.stream.write("\n")
                self.stream.flush()
        self.enabled = False


# -- schemas ------------------------------------------------------------------------------------------


def unify(parts: Iterable[pa.RecordBatch | pa.Table]) -> pa.Table:
    """One table from batches or tables whose schemas differ: types are promoted (null to anything, int to
    float, struct fields merged); columns whose types cannot be merged become JSON text. A column that is
    JSON text in one part (its field marked as BigQuery marks JSON) is made JSON text in every part, and
    never encoded twice."""
    import pyarrow as pa

    from bpj.outputs.json_columns import is_json_field

    tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in parts]
    if not tables:
        return pa.table({})
    text = {f.name for t in tables for f in t.schema if is_json_field(f)}
    if text:
        tables = [_as_json_text(t, text) for t in tables]
    schemas = [t.schema for t in tables]
    if all(s.equals(schemas[0]) for s in schemas):
        return pa.concat_tables(tables)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        return pa.concat_tables([_conform(t, schema) for t in tables])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    # Some column holds values of different kinds in different parts: make those columns JSON text.
    names: list[str] = []
    for s in schemas:
        names += [n for n in s.names if n not in names]
    mixed = set()
    for name in names:
        fields = [s.field(name) for s in schemas if name in s.names]
        try:
            pa.unify_schemas([pa.schema([f]) for f in fields], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            mixed.add(name)
    tables = [_as_json_text(t, mixed) for t in tables]
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    return pa.concat_tables([_conform(t, schema) for t in tables])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _as_json_text(table: pa.Table, names: set[str]) -> pa.Table:
    """The columns ``names`` of ``table`` as JSON text, their fields marked so (those already marked are
    left as they are)."""
    import pyarrow as pa

    from bpj.outputs.json_columns import JSON_FIELD_METADATA, is_json_field

    for name in names & set(table.column_names):
        i = table.column_names.index(name)
        if is_json_field(table.schema.field(i)):
            continue
        text = [None if v is None else _dumps(v) for v in table.column(i).to_pylist()]
        field = pa.field(name, pa.string(), metadata=JSON_FIELD_METADATA)
        table = table.set_column(i, field, pa.array(text, pa.string()))
    return table


# -- export -------------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    import base64
    import datetime
    import decimal

    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_jsonl(batches: Iterable[pa.RecordBatch], f: IO[str]) -> int:
    rows = 0
    for batch in batches:
        f.writelines(_dumps(r) + "\n" for r in batch.to_pylist())
        rows += batch.num_rows
    return rows


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested columns as JSON text (what CSV can hold)."""
    import pyarrow as pa

    nested = {f.name for f in batch.schema if pa.types.is_nested(f.type)}
    if not nested:
        return batch
    table = _as_json_text(pa.Table.from_batches([batch]), nested)
    return (
        table.combine_chunks().to_batches()[0]
        if table.num_rows
        else pa.RecordBatch.from_pylist([], table.schema)
    )


def _write_csv(batches: Iterable[pa.RecordBatch], path: str | os.PathLike[str]) -> int:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rows = 0
    writer: Any = None
    schema: pa.Schema | None = None
    try:
        for batch in batches:
            flat = _flat(batch)
            if writer is None:
                schema = flat.schema
                writer = pcsv.CSVWriter(os.fspath(path), schema)
            assert schema is not None
            writer.write_table(_conform(pa.Table.from_batches([flat]), _merge(schema, flat.schema, path)))
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        open(path, "w").close()
    return rows


def _write_parquet(batches: Iterable[pa.RecordBatch], path: str | os.PathLike[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    writer: Any = None
    schema: pa.Schema | None = None
    try:
        for batch in batches:
            if writer is None:
                schema = batch.schema
                writer = pq.ParquetWriter(os.fspath(path), schema)
            assert schema is not None
            writer.write_table(_conform(pa.Table.from_batches([batch]), _merge(schema, batch.schema, path)))
            rows += batch.num_rows
        if writer is None:
            pq.write_table(pa.table({}), os.fspath(path))
    finally:
        if writer is not None:
            writer.close()
    return rows


def _merge(first: pa.Schema, later: pa.Schema, path: str | os.PathLike[str]) -> pa.Schema:
    """The file's schema (fixed by its first batch) when a later batch fits it, else a clear error."""
    import pyarrow as pa

    if later.equals(first):
        return first
    try:
        merged = pa.unify_schemas([first, later], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise errors.UsageError(
            f"export to {os.fspath(path)!r}: rows of differing types ({e}); use to_arrow()"
        ) from None
    if not merged.equals(first):
        raise errors.UsageError(
            f"export to {os.fspath(path)!r}: later rows widen the schema {first} to {merged}; "
            "write reader.to_arrow() instead"
        )
    return first
