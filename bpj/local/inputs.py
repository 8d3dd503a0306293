"""Streaming instance readers for batch prediction inputs, as Vertex AI reads them.

``read_instances`` turns a job's InputConfig and InstanceConfig into batches of :class:`Instance`, never holding
a whole input in memory. Formats: ``jsonl``, ``csv``, ``tf-record``, ``tf-record-gzip``, ``file-list`` (from
``gcs_source.uris``, each of which may hold wildcards) and ``bigquery`` (from the local table store).

InstanceConfig, as the Vertex AI API reference describes it:

    instance_type     "object" | "array" | "" (the format's default: jsonl as each line is; csv and bigquery
                      as arrays in column order; tf-record and file-list as {"b64": ...} objects)
    key_field         the field's value becomes the output "key" and is left out of what the model gets
    included_fields   only these fields go to the model; for "array" their order is the array's order
    excluded_fields   these fields do not go to the model (exclusive with included_fields)

A line that is not JSON, a CSV row of the wrong width or a record whose crc32c fails becomes an Instance with
``error`` set (it goes to the errors output); a config that cannot work raises InvalidArgument naming the field.
CSV cells that look like JSON numbers become numbers (Vertex AI wants strings quoted), the rest stay strings.
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
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.local.gcs import split_uri

if TYPE_CHECKING:
    import pyarrow as pa

    from bpj.local.bigquery.store import TableStore
    from bpj.local.gcs import Gcs

__all__ = ["FORMATS", "Instance", "read_instances", "resolve_uris"]

FORMATS = ("jsonl", "csv", "tf-record", "tf-record-gzip", "file-list", "bigquery")
_CHUNK = 1 << 20
_FILE_LIST_THREADS = 8


@dataclass(slots=True)
class Instance:
    """One input instance.

    ``raw`` is the instance as read (what the output's "instance" field shows), ``payload`` what the model gets
    after the InstanceConfig, ``key`` the key_field's value, ``error`` why the instance could not be read (it
    then goes to the errors output), ``columns`` the names of ``raw``'s values when ``raw`` is a list (CSV)."""

    index: int
    raw: Any
    payload: Any
    key: Any = None
    error: str | None = None
    columns: tuple[str, ...] | None = None


class _Bad(Exception):
    """One instance cannot be shaped; the message goes to the errors output."""


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
    shaper = _Shaper.of(instance_config, fmt)
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
    if not uri.startswith("bq://"):
        raise errors.InvalidArgument(f"bigquery_source.input_uri {uri!r} is not bq://project.dataset.table")
    parts = uri[5:].split(".")
    # Project IDs may hold a dot (domain-scoped projects: example.com:project), so split from the right.
    if len(parts) < 3 or not all(parts):
        raise errors.InvalidArgument(f"bigquery_source.input_uri {uri!r} is not bq://project.dataset.table")
    return ".".join(parts[:-2]), parts[-2], parts[-1]


# -- instance_config ----------------------------------------------------------------------------------


class _Shaper:
    """InstanceConfig compiled once: turns raw instances into (payload, key)."""

    def __init__(
        self, instance_type: str, key_field: str, included: tuple[str, ...], excluded: tuple[str, ...]
    ) -> None:
        self.instance_type = instance_type
        self.key_field = key_field
        self.included = included
        self.excluded = excluded
        self.drop = frozenset(excluded) | ({key_field} if key_field else set())
        self.selects = bool(key_field or included or excluded)

    @classmethod
    def of(cls, config: Any, fmt: str) -> _Shaper:
        kind = (config.instance_type if config is not None else "") or ""
        key = config.key_field if config is not None else ""
        inc = tuple(config.included_fields) if config is not None else ()
        exc = tuple(config.excluded_fields) if config is not None else ()
        if kind not in ("", "object", "array"):
            raise errors.InvalidArgument(
                f"instance_config.instance_type {kind!r} is not one of 'object', 'array' (or empty)"
            )
        if inc and exc:
            raise errors.InvalidArgument(
                "instance_config.included_fields and instance_config.excluded_fields are mutually exclusive"
            )
        for name, values in (("included_fields", inc), ("excluded_fields", exc)):
            if any(not v for v in values):
                raise errors.InvalidArgument(f"instance_config.{name} holds an empty field name")
            if len(set(values)) != len(values):
                raise errors.InvalidArgument(f"instance_config.{name} names a field twice")
        if fmt in ("tf-record", "tf-record-gzip", "file-list"):
            for name, value in (("key_field", key), ("included_fields", inc), ("excluded_fields", exc)):
                if value:
                    raise errors.InvalidArgument(
                        f"instance_config.{name} needs instances with fields (jsonl objects, csv, bigquery); "
                        f"{fmt} instances are {{'b64': ...}} objects"
                    )
            if kind == "array":
                raise errors.InvalidArgument(
                    f"instance_config.instance_type 'array' does not apply to {fmt} (its instances are objects)"
                )
        return cls(kind, key, inc, exc)

    def as_array(self, fmt: str) -> bool:
        if self.instance_type:
            return self.instance_type == "array"
        return fmt in ("csv", "bigquery")

    def shape_json(self, raw: Any) -> tuple[Any, Any]:
        """A JSONL instance: objects are selected from; other values pass through when nothing selects."""
        if isinstance(raw, dict):
            return self.shape_object(raw)
        if self.selects:
            raise _Bad(
                "instance_config selects fields (key_field, included_fields or excluded_fields), "
                f"so every instance must be a JSON object, not {_json_kind(raw)}"
            )
        if self.instance_type == "object":
            raise _Bad(f"instance_type is 'object' but the instance is {_json_kind(raw)}")
        if self.instance_type == "array" and not isinstance(raw, list):
            raise _Bad(f"instance_type is 'array' but the instance is {_json_kind(raw)}")
        return raw, None

    def shape_object(self, raw: dict[str, Any]) -> tuple[Any, Any]:
        key = None
        if self.key_field:
            if self.key_field not in raw:
                raise _Bad(f"the instance has no key_field {self.key_field!r}")
            key = raw[self.key_field]
        if self.instance_type == "array":
            if not self.included:
                raise _Bad(
                    "instance_type 'array' needs instance_config.included_fields to order an object's fields"
                )
            return [raw.get(f) for f in self.included if f != self.key_field], key
        if self.included:
            return {f: raw[f] for f in self.included if f in raw and f != self.key_field}, key
        if self.drop:
            return {k: v for k, v in raw.items() if k not in self.drop}, key
        return raw, key

    def columns_plan(self, columns: Sequence[str], where: str) -> tuple[int | None, list[int]]:
        """For named columns (CSV header, table schema): the key's index and the payload's indices in order."""
        index = {c: i for i, c in enumerate(columns)}
        for f in (self.key_field, *self.included, *self.excluded):
            if f and f not in index:
                field = (
                    "key_field"
                    if f == self.key_field
                    else "included_fields"
                    if f in self.included
                    else "excluded_fields"
                )
                raise errors.InvalidArgument(
                    f"instance_config.{field} names {f!r}, which {where} does not have"
                )
        key = index[self.key_field] if self.key_field else None
        names = self.included or tuple(c for c in columns if c not in self.drop)
        return key, [index[c] for c in names if c != self.key_field]


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# -- files --------------------------------------------------------------------------------------------


def _read_files(
    gcs: Gcs, uris: list[str], fmt: str, shaper: _Shaper, counter: Iterator[int], batch_size: int
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
    f: io.BufferedReader, uri: str, shaper: _Shaper, counter: Iterator[int], size: int
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
            except _Bad as e:
                append(Instance(next(counter), value, None, error=f"line {n} of {uri}: {e}"))
                continue
            append(Instance(next(counter), value, payload, key))
        if out:
            yield out


def _read_csv(
    f: io.BufferedReader, uri: str, shaper: _Shaper, counter: Iterator[int], size: int
) -> Iterator[list[Instance]]:
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows, None)
        while header == []:
            header = next(rows, None)
    except (UnicodeDecodeError, csv.Error) as e:
        raise errors.InvalidArgument(f"{uri}: cannot read the CSV header: {e}") from None
    if header is None:
        return
    columns = tuple(header)
    key_at, picks = shaper.columns_plan(columns, f"the header of {uri}")
    as_array = shaper.as_array("csv")
    names = [columns[i] for i in picks]
    identity = as_array and picks == list(range(len(columns)))
    width = len(columns)
    number = _NUMBER.fullmatch
    out: list[Instance] = []
    while True:
        try:
            row = next(rows, None)
        except (UnicodeDecodeError, csv.Error) as e:
            # The reader cannot resync after a broken quote or bad bytes: fail the file, naming it.
            raise errors.InvalidArgument(f"{uri}, line {rows.line_num}: {e}") from None
        if row is None:
            break
        if not row:
            continue
        i = next(counter)
        values: list[Any] = [_number(c) if number(c) else c for c in row]
        if len(values) != width:
            out.append(
                Instance(
                    i,
                    values,
                    None,
                    error=f"line {rows.line_num} of {uri} has {len(values)} values, the header {width}",
                    columns=columns,
                )
            )
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
    if out:
        yield out


# Vertex AI asks for strings in CSV input to be quoted, so what looks like a JSON number is one. (Python's csv
# module does not say which cells were quoted: a quoted "1.5" becomes a number as well.)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    from bpj import checksum

    crc = checksum.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _read_tfrecord(
    gcs: Gcs, uri: str, gzipped: bool, counter: Iterator[int], size: int
) -> Iterator[list[Instance]]:
    import gzip
    import zlib

    with gcs.open(uri) as raw:
        f: Any = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        offset = 0
        out: list[Instance] = []
        try:
            while True:
                header = f.read(12)
                if not header:
                    break
                if len(header) < 12:
                    raise errors.DataLoss(f"{uri}: truncated TFRecord header at byte {offset}")
                length, length_crc = struct.unpack("<QI", header)
                if _masked_crc(header[:8]) != length_crc:
                    raise errors.DataLoss(
                        f"{uri}: corrupt TFRecord length at byte {offset} (crc32c mismatch)"
                    )
                body = f.read(length + 4)
                if len(body) < length + 4:
                    raise errors.DataLoss(f"{uri}: truncated TFRecord at byte {offset}")
                data = body[:length]
                raw_value = {"b64": base64.b64encode(data).decode("ascii")}
                if _masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                    msg = f"the TFRecord at byte {offset} of {uri} is corrupt (crc32c mismatch)"
                    out.append(Instance(next(counter), raw_value, None, error=msg))
                else:
                    out.append(Instance(next(counter), raw_value, raw_value))
                offset += 16 + length
                if len(out) >= size:
                    yield out
                    out = []
        except (OSError, EOFError, zlib.error) as e:
            raise errors.DataLoss(f"{uri}: cannot decompress: {e}") from None
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
    tables: TableStore, table: tuple[str, str, str], shaper: _Shaper, counter: Iterator[int]
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
