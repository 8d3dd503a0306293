"""Outputs read past one machine: a reader's partitions run as the tasks of Dask, Ray Data or Beam.

Each adapter is a few graph edges around three plain functions, so every engine follows the same rules:

- **One task per bpj partition** (a GCS object, a line-aligned byte range of one with ``max_bytes``, a
  BigQuery Storage Read stream). A partition is plain data with no secret in it: the worker resolves its
  credentials from its own environment (``BPJ_TOKEN``, ``BPJ_TLS_ROOT_CERT``, Application Default
  Credentials), as ``bpj local start`` prints them or as the cluster provides them.
- **No unchecked row is handed over.** A whole object and a BigQuery stream check themselves in ``read()``.
  An object split into ranges is read as ``(rows, piece)`` per range, and its rows are released only after
  one check task has combined the CRC32C of every piece of that object into the object's
  (:func:`bpj.outputs.pieces.check`); a corrupted object fails the computation with ``DataCorruption``
  naming it.
- **One schema.** An engine needs the columns before it reads (Dask's ``meta``, Ray's block schema). The
  rule: the schema of the first partition that holds rows, read on the calling machine, at most its first
  ``SAMPLE_BYTES`` (16 MiB of whole lines; a BigQuery stream: its first batch), unless you pass ``schema=``.
  Every partition is conformed to it the way :func:`bpj.outputs.reader.unify` merges tables (missing
  columns and struct fields as nulls, ints widened to floats); a partition that does not fit (a column the
  sample lacks, floats where the sample had ints) fails with ``InvalidArgument`` saying to pass
  ``schema=``, e.g. ``reader.to_arrow().schema`` of a small read.
- **Idempotent.** Reading a partition twice gives the same rows, so an engine that retries a failed task
  (``compute(retries=...)`` on a Dask client, ``max_retries`` in Ray) gets no duplicates.

The engines are optional extras, imported only when an adapter is called: ``pip install 'bpj[dask]'`` or
``'bpj[ray]'``; Beam is ``apache-beam`` in the pipeline's own environment.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bpj import errors

if TYPE_CHECKING:
    import pyarrow as pa

# bpj.outputs.reader imports this module (Reader.to_dask, Reader.to_ray), so this one names what it takes
# from a reader and a partition without importing it back.
Reader = Any  # a bpj.outputs.reader.Reader: partitions(), partitions(max_bytes=...) on a GCS reader
Partition = Any  # read() -> pyarrow.Table; a GCS partition also has read_piece() and its object

__all__ = ["conform", "groups", "sample", "to_beam", "to_dask", "to_ray"]

# The schema rule reads at most about this many bytes of a GCS object (whole lines).
SAMPLE_BYTES = 16 << 20
# Engine tasks retry this often by default (a partition is idempotent, so a retry only costs time), on
# these errors: those a second attempt can cure, not a corrupted object, a misfit or a bad file.
RETRIES = 2
TRANSIENT = (
    OSError,
    errors.Unavailable,
    errors.DeadlineExceeded,
    errors.Aborted,
    errors.ResourceExhausted,
    errors.Internal,
    errors.Unknown,
)


# -- what every engine shares -------------------------------------------------------------------------


def _engine(module: str, caller: str, extra: str) -> Any:
    """``module`` imported, or ModuleNotFoundError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        top = module.partition(".")[0]
        raise ModuleNotFoundError(f"{caller} needs {top}: pip install '{extra}'", name=top) from None


def partitions(reader: Reader, max_bytes: int | None) -> list[Partition]:
    """The reader's partitions; ``max_bytes`` splits large GCS objects into line-aligned ranges."""
    if max_bytes is None:
        return list(reader.partitions())
    import inspect

    accepts = inspect.signature(reader.partitions).parameters
    if "max_bytes" not in accepts and not any(a.kind == a.VAR_KEYWORD for a in accepts.values()):
        raise errors.UsageError(
            f"{type(reader).__name__} does not split by bytes (max_bytes={max_bytes}); "
            "a BigQuery read splits into its streams (max_stream_count=)"
        )
    return list(reader.partitions(max_bytes=max_bytes))


def groups(parts: Sequence[Partition]) -> list[list[int]]:
    """The partitions that check together: the indexes of every object's ranges (in order), one group per
    object; a partition without ``read_piece`` (it checks itself) is a group of its own."""
    by_object: dict[Any, list[int]] = {}
    for i, p in enumerate(parts):
        obj = getattr(p, "object", None)
        key = (obj.uri, obj.generation) if obj is not None and hasattr(p, "read_piece") else ("", i)
        by_object.setdefault(key, []).append(i)
    return list(by_object.values())


def read_piece(p: Partition) -> tuple[pa.Table, Any]:
    """``(rows, piece)``: ``p.read_piece()``, or ``(p.read(), None)`` for a partition that checks itself."""
    method = getattr(p, "read_piece", None)
    return method() if method is not None else (p.read(), None)


def read_range(p: Partition) -> tuple[pa.Table, Any]:
    """:func:`read_piece` of one range of a split object. Bytes flipped in a range usually break its lines
    before any check could run, so a range that does not decode has its whole object checked first: a
    corrupted object is DataCorruption naming it, a well-stored one that is not JSONL the decoding error."""
    try:
        return read_piece(p)
    except errors.InvalidArgument:
        if getattr(p, "whole", True):
            raise
        dataclasses.replace(p, start=0, end=None).read()  # DataCorruption unless the object is as stored
        raise


def check(pieces: Iterable[Any]) -> None:
    """DataCorruption unless the pieces of each object combine to its CRC32C (``None``: a self-checked
    partition, nothing to combine)."""
    found = [p for p in pieces if p is not None]
    if found:
        from bpj.outputs.pieces import check as combine

        combine(found)


def sample(parts: Sequence[Partition]) -> pa.Table:
    """The rows the schema rule reads: the first partition's that has any, at most ``SAMPLE_BYTES`` of them
    (a GCS partition: the lines that start in its first ``SAMPLE_BYTES``; a BigQuery stream: its first
    batch). Only their schema is used: no row of them is handed over. No rows anywhere: no columns."""
    import pyarrow as pa

    for p in parts:
        batches = getattr(p, "iter_batches", None)
        if batches is not None:
            it = iter(batches())
            try:
                first = next(it, None)
            finally:
                getattr(it, "close", lambda: None)()
            table = None if first is None else pa.Table.from_batches([first])
        else:
            table = read_piece(_head(p))[0]
        if table is not None and table.num_columns:
            return table
    return pa.table({})


def _head(p: Partition) -> Partition:
    """The first ``SAMPLE_BYTES`` of a GCS partition (a range of its object), else the partition."""
    obj = getattr(p, "object", None)
    if obj is None or obj.format != "jsonl" or "start" not in getattr(p, "__dataclass_fields__", {}):
        return p
    end = obj.size if p.end is None else p.end
    if end - p.start <= SAMPLE_BYTES:
        return p
    return dataclasses.replace(p, end=p.start + SAMPLE_BYTES)


def conform(table: pa.Table, schema: pa.Schema, where: str = "a partition") -> pa.Table:
    """``table`` with exactly ``schema``, merged as :func:`bpj.outputs.reader.unify` merges types (pyarrow's
    permissive promotion: nulls, missing columns and struct fields, ints to floats); InvalidArgument naming
    ``where`` when the merge is not ``schema`` itself."""
    import pyarrow as pa

    try:
        merged = pa.concat_tables([schema.empty_table(), table], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise _misfit(where, str(e)) from None
    if not merged.schema.equals(schema):
        extra = sorted(set(merged.schema.names) - set(schema.names))
        differ = [
            f"{f.name}: {f.type} (schema: {schema.field(f.name).type})"
            for f in merged.schema
            if f.name in schema.names and not f.equals(schema.field(f.name))
        ]
        raise _misfit(
            where, "; ".join([*(["columns not in it: " + ", ".join(extra)] if extra else []), *differ])
        )
    return merged


def _misfit(where: str, why: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        f"{where} does not fit the schema of the first partition ({why}); pass schema= (a pyarrow.Schema "
        "that holds every partition's rows, e.g. reader.to_arrow().schema of a smaller read)"
    )


def _where(p: Partition) -> str:
    """The partition in an error message: its object (and range), or its stream."""
    obj = getattr(p, "object", None)
    if obj is None:
        return str(getattr(p, "stream", None) or type(p).__name__)
    if getattr(p, "whole", True):
        return str(obj.uri)
    return f"{obj.uri} bytes {p.start}-{p.end}"


def rows(table: pa.Table, schema: pa.Schema, p: Partition) -> pa.Table:
    """A partition's rows conformed to ``schema``, errors naming the partition."""
    return conform(table, schema, _where(p))


def read_checked(p: Partition, schema: pa.Schema) -> pa.Table:
    """A partition that is all of its object (or a stream): read, checked, conformed."""
    table, piece = read_piece(p)
    check([piece])
    return rows(table, schema, p)


def _pandas(table: pa.Table, meta: Any, where: str) -> Any:
    """``table.to_pandas()`` with the dtypes of ``meta``. pandas makes an int column with nulls float and a
    bool one object, so a partition may come out narrower than the sample (widened here) or wider (an int
    column of the sample that has nulls in this partition: InvalidArgument)."""
    frame = table.to_pandas()
    if frame.dtypes.equals(meta.dtypes):
        return frame
    bad = []
    for c in meta.columns:
        have, want = frame[c].dtype, meta[c].dtype
        if have == want:
            continue
        if want.kind == "O" or (want.kind == "f" and have.kind in "iub"):
            frame[c] = frame[c].astype(want)
        else:
            bad.append(f"{c}: {have} (meta: {want})")
    if bad:
        raise errors.InvalidArgument(
            f"{where}: pandas gives {'; '.join(bad)}. Pass schema= with float64 for integer columns that hold "
            "nulls"
        )
    return frame


# -- Dask ---------------------------------------------------------------------------------------------


def to_dask(reader: Reader, *, max_bytes: int | None = None, schema: pa.Schema | None = None) -> Any:
    """A ``dask.dataframe.DataFrame`` of the reader's rows, one partition per bpj partition, its ``meta``
    from the schema rule (or ``schema``): its pandas dtypes are those of ``reader.to_pandas()``.

    ``max_bytes``: split GCS objects larger than this into line-aligned ranges (a GCS reader only). The
    graph: per partition a read task giving ``(table, piece)``; per split object one check task taking the
    pieces of all its ranges; each output partition depends on its table and its object's check task, so
    no row of a corrupted object reaches ``compute()``, which raises ``DataCorruption`` naming it. (So the
    decoded rows of a split object's ranges wait in the workers' memory until its last range is read.)
    Retries are asked for at compute time, ``frame.compute(retries=2)`` on a distributed ``Client`` (Dask
    drops annotations on the tasks of ``from_delayed``); a partition is idempotent, so a rerun adds no row.
    """
    _engine("dask.dataframe", "to_dask()", "bpj[dask]")
    import dask
    import dask.dataframe as dd

    parts = partitions(reader, max_bytes)
    if schema is None:
        first = sample(parts)
        schema, meta = first.schema, first.to_pandas().iloc[:0]
    else:
        meta = schema.empty_table().to_pandas()
    frames: list[Any] = [None] * len(parts)
    for group in groups(parts):
        if len(group) == 1:
            frames[group[0]] = dask.delayed(_whole_frame, pure=True)(parts[group[0]], schema, meta)
            continue
        read = {i: dask.delayed(read_range, nout=2, pure=True)(parts[i]) for i in group}
        checked = dask.delayed(check, pure=True)([read[i][1] for i in group])
        for i in group:
            frames[i] = dask.delayed(_range_frame, pure=True)(read[i][0], parts[i], schema, meta, checked)
    # Dask turns object columns into pyarrow strings by default: here they hold dicts and lists too, and
    # the dtypes are to be those of reader.to_pandas().
    with dask.config.set({"dataframe.convert-string": False}):
        if not frames:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_delayed(frames, meta=meta, verify_meta=False)


def _whole_frame(p: Partition, schema: pa.Schema, meta: Any) -> Any:
    return _pandas(read_checked(p, schema), meta, _where(p))


def _range_frame(table: pa.Table, p: Partition, schema: pa.Schema, meta: Any, checked: None) -> Any:
    """A range's rows as pandas; ``checked`` is its object's check task, which this task waits for."""
    return _pandas(rows(table, schema, p), meta, _where(p))


# -- Ray Data -----------------------------------------------------------------------------------------


def to_ray(
    reader: Reader,
    *,
    max_bytes: int | None = None,
    schema: pa.Schema | None = None,
    max_retries: int = RETRIES,
) -> Any:
    """A ``ray.data.Dataset`` of the reader's rows (Arrow blocks of one schema: the rule above, or
    ``schema``). Ray must be initialised (``ray.init()``) or it starts a local instance.

    Partitions that are all of their object (every object unless ``max_bytes`` splits it) and BigQuery
    streams are the read tasks of a ``ray.data.Datasource``: lazy, streamed, each task reading and
    checking its partition before it yields a block. The ranges of a split object cannot check themselves,
    and a Datasource read task cannot wait for its siblings, so those are read eagerly instead: one remote
    task per range returns ``(table ref, piece)``, the pieces are checked here (a corrupted object raises
    ``DataCorruption`` from this call), and only then do their tables join the dataset
    (``from_arrow_refs``). The trade-off: split objects are read in full, into Ray's object store, before
    the dataset is returned; choose ``max_bytes`` to spread one large object over workers, not to stream.
    ``max_retries``: how often Ray reruns a read task that failed on a transient error (``TRANSIENT``: the
    network, the server) or lost its worker.
    """
    _engine("ray.data", "to_ray()", "bpj[ray]")
    import ray
    import ray.data

    parts = partitions(reader, max_bytes)
    schema = schema if schema is not None else sample(parts).schema
    retry = {"max_retries": max_retries, "retry_exceptions": list(TRANSIENT)}
    whole = [parts[g[0]] for g in groups(parts) if len(g) == 1]
    split = [[parts[i] for i in g] for g in groups(parts) if len(g) > 1]
    datasets = []
    if whole or not split:
        with warnings.catch_warnings():
            # Ray 2.60 deprecates ray_remote_args for reads but has no named parameter for retries yet.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            datasets.append(ray.data.read_datasource(_datasource(whole, schema), ray_remote_args=retry))
    if split:
        task: Any = ray.remote(_read_range).options(num_returns=2, **retry)
        refs = [[task.remote(p, schema) for p in group] for group in split]
        for group in refs:
            check(ray.get([piece for _, piece in group]))
        datasets.append(ray.data.from_arrow_refs([table for group in refs for table, _ in group]))
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def _read_range(p: Partition, schema: pa.Schema) -> tuple[pa.Table, Any]:
    """A range's rows, conformed, and its piece: the rows stay in the object store until the piece is checked."""
    table, piece = read_range(p)
    return rows(table, schema, p), piece


def _one_block(p: Partition, schema: pa.Schema) -> list[pa.Table]:
    return [read_checked(p, schema)]


def _datasource(parts: list[Partition], schema: pa.Schema) -> Any:
    """A ``ray.data.Datasource`` whose read tasks are ``parts``, each read, checked and conformed."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class BpjDatasource(Datasource):
        def get_name(self) -> str:
            return "bpj"

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            return [
                ReadTask(
                    functools.partial(_one_block, p, schema),
                    BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None),
                    schema=schema,
                )
                for p in parts
            ]

    return BpjDatasource()


# -- Beam ---------------------------------------------------------------------------------------------


def to_beam(reader: Reader, *, max_bytes: int | None = None) -> Any:
    """A Beam ``PTransform`` that turns a pipeline's start into the reader's rows (dicts)::

        with beam.Pipeline() as p:
            rows = p | bpj.outputs.engines.to_beam(reader)

    It is ``beam.Create(partitions) | beam.FlatMap(read)`` for partitions that check themselves. Ranges of
    split objects (``max_bytes``) are keyed by object and grouped (``GroupByKey``) so that one step sees all
    of an object's pieces, checks them and only then emits their rows: a split object's rows meet on one
    worker, so with Beam ``max_bytes`` spreads the download and decoding, not the memory.
    """
    beam = _engine("apache_beam", "to_beam()", "apache-beam")
    parts = partitions(reader, max_bytes)
    whole = [parts[g[0]] for g in groups(parts) if len(g) == 1]
    split = [(n, parts[i]) for n, g in enumerate(groups(parts)) if len(g) > 1 for i in g]

    @beam.ptransform_fn  # type: ignore[misc]
    def read(begin: Any) -> Any:
        got = begin | "Partitions" >> beam.Create(whole) | "Read" >> beam.FlatMap(_records)
        if not split:
            return got
        ranges = (
            begin
            | "Ranges" >> beam.Create(split)
            | "ReadRanges" >> beam.MapTuple(lambda n, p: (n, read_range(p)))
            | "ByObject" >> beam.GroupByKey()
            | "Check" >> beam.FlatMapTuple(_checked_records)
        )
        return (got, ranges) | beam.Flatten()

    return read()


def _records(p: Partition) -> list[dict[str, Any]]:
    table, piece = read_piece(p)
    check([piece])
    return table.to_pylist()


def _checked_records(_: int, read: Iterable[tuple[pa.Table, Any]]) -> list[dict[str, Any]]:
    read = list(read)
    check(piece for _, piece in read)
    return [r for table, _ in read for r in table.to_pylist()]
