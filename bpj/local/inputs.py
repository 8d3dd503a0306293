"""Streaming instance readers for batch prediction inputs, as Vertex AI reads them.

``read_instances`` turns a job's InputConfig and InstanceConfig into batches of :class:`Instance`, never holding
a whole input in memory. Formats: ``jsonl``, ``csv``, ``tf-record``, ``tf-record-gzip``, ``file-list`` (from
``gcs_source.uris``, each of which may hold wildcards) and ``bigquery`` (from the local table store).

The InstanceConfig shapes each instance (:mod:`bpj.local.instance_config`).

One bad instance fails only itself: a line that is not JSON or not UTF-8, a CSV row that is not UTF-8, has the
wrong width or a field over ``csv.field_size_limit()``, a TFRecord whose data fails its crc32c, each becomes an
Instance with ``error`` set (it goes to the errors output, as INVALID_ARGUMENT) and reading goes on. Damage
that breaks a TFRecord file's framing becomes one DATA_LOSS Instance for that file at the byte where it is,
and the job goes on with the next file (see :mod:`bpj.local.records`). A CSV quoted field that is never closed
reads to the end of the file, as Python's csv reader reads it: those lines become one bad row. A config that
cannot work raises InvalidArgument naming the field. CSV cells that look like JSON numbers become numbers
(Vertex AI wants strings quoted), the rest stay strings.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
import itertools
import json
import json.scanner
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bpj import bq_uri, errors
from bpj.gcs import split_uri
from bpj.local import records
from bpj.local.instance_config import BadInstance, Shaper

if TYPE_CHECKING:
    import pyarrow as pa

    from bpj.gcs import Gcs
    from bpj.local.bigquery.store import TableStore

__all__ = ["FORMATS", "Instance", "read_instances", "resolve_uris"]

FORMATS = ("jsonl", "csv", "tf-record", "tf-record-gzip", "file-list", "bigquery")
_CHUNK = 1 << 20
_FILE_LIST_THREADS = 8


@dataclass(slots=True)
class Instance:
    """One input instance.

    ``raw`` is the instance as read (what the output's "instance" field shows; None when nothing could be
    read), ``payload`` what the model gets after the InstanceConfig, ``key`` the key_field's value, ``error``
    why the instance could not be read (it then goes to the errors output, with ``error_code``, a google.rpc
    code name), ``columns`` the names of ``raw``'s values when ``raw`` is a list (CSV)."""

    index: int
    raw: Any
    payload: Any
    key: Any = None
    error: str | None = None
    columns: tuple[str, ...] | None = None
    error_code: str = "INVALID_ARGUMENT"


def read_instances(
    input_config: Any,
    instance_config: Any,
    *,
    gcs: Gcs,
    tables: TableStore | None,
    batch_size: int,
) -> Iterator[list[Instance]]:
    """Batches of at most ``batch_size`` instances, in input order (files in name order).

    The config is checked and the input located when this is called: InvalidArgument for a config that cannot
    work or a bad URI, NotFound for a missing object, table or a wildcard that matches nothing.
    """
    if batch_size < 1:
        raise errors.InvalidArgument(f"batch_size must be at least 1, not {batch_size}")
    fmt = (input_config.instances_format or "").strip().lower()
    if fmt not in FORMATS:
        raise errors.InvalidArgument(
            f"input_config.instances_format {input_config.instances_format!r} is not one of {', '.join(FORMATS)}"
        )
    shaper = Shaper.of(instance_config, fmt)
    source = input_config.WhichOneof("source")
    counter = itertools.count()
    parts: Iterable[list[Instance]]
    if fmt == "bigquery":
        if source != "bigquery_source":
            raise errors.InvalidArgument("instances_format 'bigquery' needs input_config.bigquery_source")
        if tables is None:
            raise errors.FailedPrecondition("BigQuery input needs the local table store, and none is running")
        project, dataset, table = _bq_table(input_config.bigquery_source.input_uri)
        if not tables.table_exists(project, dataset, table):
            raise errors.NotFound(f"{input_config.bigquery_source.input_uri} was not found")
        parts = _read_bigquery(tables, (project, dataset, table), shaper, counter)
    else:
        if source != "gcs_source":
            raise errors.InvalidArgument(f"instances_format {fmt!r} needs input_config.gcs_source")
        uris = resolve_uris(gcs, list(input_config.gcs_source.uris))
        parts = _read_files(gcs, uris, fmt, shaper, counter, batch_size)
    return _rebatch(parts, batch_size)


def resolve_uris(gcs: Gcs, patterns: Sequence[str]) -> list[str]:
    """The objects ``gcs_source.uris`` name: wildcards expanded in name order, each object once."""
    if not patterns:
        raise errors.InvalidArgument("input_config.gcs_source.uris is empty")
    out: dict[str, None] = {}
    for pattern in patterns:
        _, name = split_uri(pattern)
        if any(c in name for c in "*?["):
            found = [u for u in gcs.list(pattern) if not u.endswith("/")]
            if not found:
                raise errors.NotFound(f"{pattern} matched no objects")
            out.update(dict.fromkeys(found))
        else:
            if not gcs.exists(pattern):
                raise errors.NotFound(f"{pattern} was not found")
            out[pattern] = None
    return list(out)


def _rebatch(parts: Iterable[list[Instance]], size: int) -> Iterator[list[Instance]]:
    pending: list[Instance] = []
    for part in parts:
        if not pending and len(part) == size:
            yield part
            continue
        pending.extend(part)
        if len(pending) < size:
            continue
        start, end = 0, len(pending) - len(pending) % size
        for start in range(0, end, size):
            yield pending[start : start + size]
        pending = pending[end:]
    if pending:
        yield pending


def _bq_table(uri: str) -> tuple[str, str, str]:
    return bq_uri.split_table(uri, field="bigquery_source.input_uri", error=errors.InvalidArgument)


# -- files --------------------------------------------------------------------------------------------


def _read_files(
    gcs: Gcs, uris: list[str], fmt: str, shaper: Shaper, counter: Iterator[int], batch_size: int
) -> Iterator[list[Instance]]:
    for uri in uris:
        if fmt == "jsonl":
            with gcs.open(uri) as f:
                yield from _read_jsonl(f, uri, shaper, counter, batch_size)
        elif fmt == "csv":
            with gcs.open(uri) as f:
                yield from _read_csv(f, uri, shaper, counter, batch_size)
        elif fmt in ("tf-record", "tf-record-gzip"):
            yield from _read_tfrecord(gcs, uri, fmt == "tf-record-gzip", counter, batch_size)
        else:
            with gcs.open(uri) as f:
                yield from _read_file_list(gcs, f, uri, counter, batch_size)


_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _text_chunks(f: io.BufferedReader, uri: str) -> Iterator[tuple[int, list[str | None]]]:
    """Lines of a UTF-8 stream, decoded and split a large chunk at a time: (first line number, lines); a line
    that is not UTF-8 comes as None."""
    rest = b""
    lineno = 1
    first = True
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        buf = rest + chunk if rest else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            rest = buf
            continue
        rest = buf[cut + 1 :]
        lines = _decode_lines(buf[:cut], first)
        first = False
        yield lineno, lines
        lineno += len(lines)
    if rest:
        yield lineno, _decode_lines(rest, first)


def _batched_lines(f: io.BufferedReader, uri: str, size: int) -> Iterator[tuple[int, list[str | None]]]:
    """:func:`_text_chunks` in pieces of at most ``size`` lines."""
    for lineno, lines in _text_chunks(f, uri):
        for start in range(0, len(lines), size):
            yield lineno + start, lines[start : start + size]


def _decode_lines(data: bytes, first: bool) -> list[str | None]:
    if first and data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    try:
        return data.decode("utf-8").split("\n")  # type: ignore[return-value]
    except UnicodeDecodeError:
        out: list[str | None] = []
        for line in data.split(b"\n"):
            try:
                out.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out


def _read_jsonl(
    f: io.BufferedReader, uri: str, shaper: Shaper, counter: Iterator[int], size: int
) -> Iterator[list[Instance]]:
    scan = _scan
    selects = shaper.selects or bool(shaper.instance_type)
    # Instances are made a batch at a time, not a chunk at a time: tens of thousands of parsed instances
    # alive at once survive into the garbage collector's older generations, and scanning them took as long
    # as parsing.
    for lineno, lines in _batched_lines(f, uri, size):
        out: list[Instance] = []
        append = out.append
        for n, line in enumerate(lines, lineno):
            if not line:
                if line is None:
                    append(Instance(next(counter), None, None, error=f"line {n} of {uri} is not UTF-8"))
                continue
            try:
                value, end = scan(line, 0)
                if end != len(line) and not line[end:].isspace():
                    raise ValueError
            except (StopIteration, ValueError, RecursionError):
                text = line.strip()
                if not text:
                    continue
                try:
                    value = json.loads(text)
                except (ValueError, RecursionError) as e:
                    append(
                        Instance(next(counter), line, None, error=f"line {n} of {uri} is not valid JSON: {e}")
                    )
                    continue
            if not selects:
                append(Instance(next(counter), value, value))
                continue
            try:
                payload, key = shaper.shape_json(value)
            except BadInstance as e:
                append(Instance(next(counter), value, None, error=f"line {n} of {uri}: {e}"))
                continue
            append(Instance(next(counter), value, payload, key))
        if out:
            yield out


def _read_csv(
    f: io.BufferedReader, uri: str, shaper: Shaper, counter: Iterator[int], size: int
) -> Iterator[list[Instance]]:
    src = records.CsvLines(f)
    header, problem = _csv_header(src, uri)
    if problem is not None:
        yield [Instance(next(counter), None, None, error=f"cannot read the CSV header: {problem}")]
        return
    if header is None:
        return
    columns = tuple(header)
    key_at, picks = shaper.columns_plan(columns, f"the header of {uri}")
    as_array = shaper.as_array("csv")
    names = [columns[i] for i in picks]
    identity = as_array and picks == list(range(len(columns)))
    width = len(columns)
    number = _NUMBER.fullmatch
    rows, bad = src.reader, src.bad
    last = rows.line_num  # the reader's count after the last row; line numbers add src.skipped
    out: list[Instance] = []
    while True:
        prev = last
        try:
            row = next(rows, None)
        except csv.Error as e:
            start = prev + src.skipped + 1
            problem, last = _csv_bad_row(src, uri, start, e), rows.line_num
            if problem is None:
                break
            _drop_through(bad, last + src.skipped)
            out.append(Instance(next(counter), None, None, error=problem))
            continue
        if row is None:
            break
        last = rows.line_num
        if bad and bad[0] <= last + src.skipped:
            first = _drop_through(bad, last + src.skipped)
            out.append(Instance(next(counter), None, None, error=f"line {first} of {uri} is not UTF-8"))
            continue
        if not row:
            continue
        i = next(counter)
        values: list[Any] = [_number(c) if number(c) else c for c in row]
        if len(values) != width:
            start = prev + src.skipped + 1
            problem = f"line {start} of {uri} has {len(values)} values, the header {width}"
            out.append(Instance(i, values, None, error=problem, columns=columns))
        else:
            key = values[key_at] if key_at is not None else None
            if identity:
                payload: Any = values
            elif as_array:
                payload = [values[j] for j in picks]
            else:
                payload = {name: values[j] for name, j in zip(names, picks, strict=True)}
            out.append(Instance(i, values, payload, key, columns=columns))
        if len(out) >= size:  # a batch at a time, as in _read_jsonl
            yield out
            out = []
            src.keep_from = last + src.skipped + 1
    if out:
        yield out


def _csv_header(src: records.CsvLines, uri: str) -> tuple[list[str] | None, str | None]:
    """The first row that is not blank (None: there is none), or why it cannot be read."""
    while True:
        start = src.reader.line_num + src.skipped + 1
        try:
            row = next(src.reader, None)
        except csv.Error as e:
            return None, _csv_bad_row(src, uri, start, e)
        if row is None:
            return None, None
        if src.bad and src.bad[0] <= src.reader.line_num + src.skipped:
            return None, f"line {src.bad[0]} of {uri} is not UTF-8"
        if row:
            return row, None


def _csv_bad_row(src: records.CsvLines, uri: str, start: int, error: csv.Error) -> str | None:
    """After csv.Error in the row that starts on line ``start``: why that row is bad (the reader is then past
    it), or None when the error only marks the end of the file."""
    end = src.reader.line_num + src.skipped
    unclosed = False
    if end <= src.total:
        end, unclosed = src.skip_record(start, end)
    elif start > src.total:
        return None
    else:
        end, unclosed = src.total, True
    lines = f"line {start}" if start == end else f"lines {start}-{end}"
    if unclosed:
        return f"{lines} of {uri}: a quoted field in the row that starts on line {start} is never closed"
    return f"{lines} of {uri} cannot be read as CSV: {error}"


def _drop_through(bad: list[int], end: int) -> int:
    """Drop the numbers up to ``end`` from the front of the sorted ``bad``; the first one dropped."""
    first = bad[0] if bad else 0
    n = 0
    while n < len(bad) and bad[n] <= end:
        n += 1
    del bad[:n]
    return first


# Vertex AI asks for strings in CSV input to be quoted, so what looks like a JSON number is one. (Python's csv
# module does not say which cells were quoted: a quoted "1.5" becomes a number as well.)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


def _read_tfrecord(
    gcs: Gcs, uri: str, gzipped: bool, counter: Iterator[int], size: int
) -> Iterator[list[Instance]]:
    import gzip

    total = None if gzipped else gcs.size(uri)
    with gcs.open(uri) as raw:
        f: Any = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        out: list[Instance] = []
        for record in records.tfrecords(f, uri, size=total):
            if record.data is None:
                out.append(Instance(next(counter), None, None, error=record.problem, error_code=record.code))
            else:
                value = {"b64": base64.b64encode(record.data).decode("ascii")}
                payload = value if record.problem is None else None
                out.append(
                    Instance(next(counter), value, payload, error=record.problem, error_code=record.code)
                )
            if len(out) >= size:
                yield out
                out = []
        if out:
            yield out


def _read_file_list(
    gcs: Gcs, f: io.BufferedReader, uri: str, counter: Iterator[int], batch_size: int
) -> Iterator[list[Instance]]:
    from concurrent.futures import ThreadPoolExecutor

    def fetch(target: str) -> tuple[Any, str | None]:
        try:
            return {"b64": base64.b64encode(gcs.read(target)).decode("ascii")}, None
        except errors.ApiError as e:
            return None, f"{target} (listed in {uri}): {e.message}"

    with ThreadPoolExecutor(_FILE_LIST_THREADS, thread_name_prefix="bpj-file-list") as pool:
        pending: list[tuple[int, str]] = []
        for lineno, lines in _text_chunks(f, uri):
            for n, line in enumerate(lines, lineno):
                target = line.strip() if line is not None else None
                if target == "":
                    continue
                pending.append((n, target or ""))
            while len(pending) >= batch_size:
                yield _fetch_all(pool, fetch, pending[:batch_size], uri, counter)
                del pending[:batch_size]
        if pending:
            yield _fetch_all(pool, fetch, pending, uri, counter)


def _fetch_all(
    pool: Any, fetch: Any, lines: list[tuple[int, str]], uri: str, counter: Iterator[int]
) -> list[Instance]:
    futures: list[tuple[str, Any, str | None]] = []
    for n, target in lines:
        try:
            split_uri(target)
        except errors.InvalidArgument:
            futures.append((target, None, f"line {n} of {uri} is not a gs:// URI: {target!r}"))
            continue
        futures.append((target, pool.submit(fetch, target), None))
    out = []
    for target, future, problem in futures:
        if future is None:
            out.append(Instance(next(counter), target, None, error=problem))
            continue
        payload, problem = future.result()
        out.append(Instance(next(counter), target, payload, error=problem))
    return out


# -- BigQuery -----------------------------------------------------------------------------------------


def _read_bigquery(
    tables: TableStore, table: tuple[str, str, str], shaper: Shaper, counter: Iterator[int]
) -> Iterator[list[Instance]]:
    schema = tables.schema(*table)
    columns = tuple(schema.names)
    key_at, picks = shaper.columns_plan(columns, f"table {'.'.join(table)}")
    as_array = shaper.as_array("bigquery")
    names = [columns[i] for i in picks]
    convert = [i for i, field in enumerate(schema) if _needs_json(field.type)]
    for batch in tables.scan(*table):
        # raw keeps BigQuery's values (the BigQuery sink writes them back as they were); the payload gets
        # their JSON form.
        native = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        values = list(native)
        for i in convert:
            values[i] = [_jsonable(v) for v in values[i]]
        n = batch.num_rows
        raws = [dict(zip(columns, row, strict=True)) for row in zip(*native, strict=True)]
        keys = native[key_at] if key_at is not None else [None] * n
        rows = list(zip(*(values[j] for j in picks), strict=True)) if picks else [()] * n
        if as_array:
            payloads: list[Any] = [list(row) for row in rows]
        else:
            payloads = [dict(zip(names, row, strict=True)) for row in rows]
        yield [Instance(next(counter), r, p, k) for r, p, k in zip(raws, payloads, keys, strict=True)]


def _needs_json(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return any(_needs_json(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _needs_json(t.value_type)
    return not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
    )


def _jsonable(v: Any) -> Any:
    """A BigQuery value as the JSON Vertex sends: timestamps and dates in ISO 8601, NUMERIC as a string,
    BYTES in base64."""
    import datetime
    import decimal

    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v
