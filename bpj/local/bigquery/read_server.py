"""The BigQuery Storage Read API (v1, Arrow format) over a :class:`~bpj.local.bigquery.store.TableStore`.

    server = serve_grpc(StorageReadServicer(store))

A session snapshots the table's parts, and splits its rows into streams as BigQuery does: each stream is a
contiguous range of rows, several streams for a large table, never more than ``max_stream_count``. A stream's
rows (selected fields, row restriction applied) are cut into responses of about ``response_bytes`` and encoded
once; the encoded responses are cached (bounded by ``cache_bytes``), so serving them is a memcpy into gRPC.
``ReadRows`` resumes at any row ``offset``; ``SplitReadStream`` cuts a stream's range in two.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from bpj import errors, types
from bpj._gen.services.big_query_read import BigQueryReadServicer
from bpj.local.bigquery.store import Part, TableStore, check_columns, read_parts

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

SESSION_LIFETIME = 6 * 3600.0


@dataclass
class _Stream:
    name: str
    start: int  # rows [start, stop) of the session's snapshot, before the row restriction
    stop: int


@dataclass
class _Session:
    name: str
    table: str
    schema: pa.Schema  # of the rows served (selected fields)
    table_schema: pa.Schema
    parts: list[Part]
    columns: list[str] | None
    restriction: pc.Expression | None
    expire_at: float
    schema_bytes: bytes
    # What the encoded rows depend on: the snapshot, the fields and the restriction. Sessions that agree
    # (a reader that reads a table twice) share the cache.
    cache_key: tuple[Any, ...]
    streams: dict[str, _Stream] = field(default_factory=dict)
    next_stream: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_stream(self, start: int, stop: int) -> _Stream:
        with self.lock:
            stream = _Stream(f"{self.name}/streams/{self.next_stream}", start, stop)
            self.next_stream += 1
            self.streams[stream.name] = stream
            return stream


class _Encoded:
    """A ReadRowsResponse already in wire form: gRPC and the in-memory transport only call
    ``SerializeToString``, so the bytes encoded once go out as they are. Anything else (the REST gateway's
    JSON printer) sees the decoded message."""

    __slots__ = ("data",)
    DESCRIPTOR = types.ReadRowsResponse.DESCRIPTOR

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self, **_: Any) -> bytes:
        return self.data

    def __getattr__(self, name: str) -> Any:
        return getattr(types.ReadRowsResponse.FromString(self.data), name)


class _Chunk:
    __slots__ = ("rows", "first_row", "encoded")

    def __init__(self, rows: int, first_row: int, encoded: bytes) -> None:
        self.rows, self.first_row, self.encoded = rows, first_row, encoded


class StorageReadServicer(BigQueryReadServicer):
    """BigQueryRead over ``store``.

    ``stream_rows`` / ``stream_bytes``: a session gets about one stream per that many rows or bytes
    (whichever gives more streams), within ``[preferred_min_stream_count, max_stream_count]``.
    ``response_bytes``: the size responses aim at. ``cache_bytes``: encoded responses kept for re-reads.
    """

    def __init__(
        self,
        store: TableStore,
        *,
        stream_rows: int = 2_000_000,
        stream_bytes: int = 128 << 20,
        response_bytes: int = 2 << 20,
        cache_bytes: int = 1 << 30,
        location: str = "us",
    ) -> None:
        self.store = store
        self.stream_rows = max(1, stream_rows)
        self.stream_bytes = max(1, stream_bytes)
        self.response_bytes = max(1, response_bytes)
        self.cache_bytes = cache_bytes
        self.location = location
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], list[_Chunk]] = OrderedDict()
        self._cached = 0

    # -- RPCs ------------------------------------------------------------------------------------------

    def CreateReadSession(self, request: Any, context: Any) -> Any:
        import pyarrow as pa

        project = _parse(request.parent, ("projects",), "parent")[0]
        requested = request.read_session
        table_project, dataset, table = _parse(
            requested.table, ("projects", "datasets", "tables"), "read_session.table"
        )
        if requested.data_format == types.DataFormat.AVRO:
            raise errors.InvalidArgument(
                "Only the ARROW data format is served here; ask for data_format=ARROW"
            )
        if request.max_stream_count < 0 or request.preferred_min_stream_count < 0:
            raise errors.InvalidArgument("max_stream_count and preferred_min_stream_count cannot be negative")
        parts = self.store.parts(table_project, dataset, table)
        table_schema = schema = self.store.schema(table_project, dataset, table)
        options = requested.read_options
        columns = list(options.selected_fields) or None
        if columns is not None:
            check_columns(schema, columns)
            schema = pa.schema([schema.field(c) for c in columns])
        restriction = None
        if options.row_restriction.strip():
            restriction = parse_row_restriction(options.row_restriction, table_schema)
        num_rows = sum(p.num_rows for p in parts)
        num_bytes = sum(p.num_bytes for p in parts)
        if columns is not None and num_rows:
            num_bytes = num_bytes * _width(schema) // max(1, _width(table_schema))
        now = time.time()
        session = _Session(
            name=f"projects/{project}/locations/{self.location}/sessions/{uuid.uuid4().hex}",
            table=requested.table,
            schema=schema,
            table_schema=table_schema,
            parts=parts,
            columns=columns,
            restriction=restriction,
            expire_at=now + SESSION_LIFETIME,
            schema_bytes=schema.serialize().to_pybytes(),
            cache_key=(requested.table, *_snapshot_id(parts), tuple(columns or ()), options.row_restriction),
        )
        count = self._stream_count(
            num_rows, num_bytes, request.max_stream_count, request.preferred_min_stream_count
        )
        for i in range(count):
            session.add_stream(num_rows * i // count, num_rows * (i + 1) // count)
        with self._lock:
            self._expire(now)
            self._sessions[session.name] = session
        out = types.ReadSession(
            name=session.name,
            data_format=types.DataFormat.ARROW,
            table=requested.table,
            estimated_row_count=num_rows,
            estimated_total_bytes_scanned=num_bytes,
            estimated_total_physical_file_size=sum(p.num_bytes for p in parts),
        )
        out.expire_time.FromSeconds(int(session.expire_at))
        out.arrow_schema.serialized_schema = session.schema_bytes
        out.read_options.CopyFrom(options)
        if requested.HasField("table_modifiers"):
            out.table_modifiers.CopyFrom(requested.table_modifiers)
        for stream in session.streams.values():
            out.streams.add(name=stream.name)
        return out

    def ReadRows(self, request: Any, context: Any) -> Iterator[Any]:
        session, stream = self._stream(request.read_stream)
        if request.offset < 0:
            raise errors.InvalidArgument(f"offset cannot be negative: {request.offset}")
        chunks = self._chunks(session, stream)
        return self._serve(session, chunks, request.offset, context)

    def SplitReadStream(self, request: Any, context: Any) -> Any:
        session, stream = self._stream(request.name)
        fraction = request.fraction or 0.5
        if not 0.0 < fraction < 1.0:
            raise errors.InvalidArgument(f"fraction must be in (0, 1), got {fraction}")
        at = stream.start + int(round((stream.stop - stream.start) * fraction))
        out = types.SplitReadStreamResponse()
        if stream.start < at < stream.stop:
            primary = session.add_stream(stream.start, at)
            remainder = session.add_stream(at, stream.stop)
            out.primary_stream.name = primary.name
            out.remainder_stream.name = remainder.name
        return out

    # -- internals -------------------------------------------------------------------------------------

    def _stream_count(self, rows: int, nbytes: int, max_count: int, min_count: int) -> int:
        if rows == 0:
            return 0
        count = max(-(-rows // self.stream_rows), -(-nbytes // self.stream_bytes), min_count, 1)
        if max_count > 0:
            count = min(count, max_count)
        return min(count, rows)

    def _stream(self, name: str) -> tuple[_Session, _Stream]:
        session_name, sep, _ = name.partition("/streams/")
        with self._lock:
            session = self._sessions.get(session_name) if sep else None
        if session is None or session.expire_at < time.time():
            raise errors.NotFound(f"Requested stream not found: {name}")
        stream = session.streams.get(name)
        if stream is None:
            raise errors.NotFound(f"Requested stream not found: {name}")
        return session, stream

    def _expire(self, now: float) -> None:
        for name in [n for n, s in self._sessions.items() if s.expire_at < now]:
            del self._sessions[name]

    def _chunks(self, session: _Session, stream: _Stream) -> list[_Chunk]:
        key = (*session.cache_key, stream.start, stream.stop)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        chunks = self._encode(session, stream)
        size = sum(len(c.encoded) for c in chunks)
        with self._lock:
            if key not in self._cache and size <= self.cache_bytes:
                self._cache[key] = chunks
                self._cached += size
                while self._cached > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached -= sum(len(c.encoded) for c in dropped)
        return chunks

    def _encode(self, session: _Session, stream: _Stream) -> list[_Chunk]:
        rows = self._rows(session, stream)
        total = rows.num_rows
        if total == 0:
            return []
        per = max(1, self.response_bytes * total // max(1, rows.nbytes))
        chunks = []
        for first in range(0, total, per):
            n = min(per, total - first)
            batch = _one_batch(rows.slice(first, n))
            response = types.ReadRowsResponse(row_count=n)
            response.arrow_record_batch.serialized_record_batch = batch.serialize().to_pybytes()
            response.arrow_record_batch.row_count = n
            response.stats.progress.at_response_start = first / total
            response.stats.progress.at_response_end = (first + n) / total
            chunks.append(_Chunk(n, first, response.SerializeToString()))
        return chunks

    def _rows(self, session: _Session, stream: _Stream) -> pa.Table:
        # A restriction may name columns that are not selected: read them all, select after filtering.
        columns = session.columns if session.restriction is None else None
        rows = read_parts(session.parts, session.table_schema, columns, stream.start, stream.stop)
        if session.restriction is not None:
            try:
                rows = rows.filter(session.restriction)
            except Exception as e:  # arrow's type errors the empty-table check at session creation missed
                raise errors.InvalidArgument(f"Cannot evaluate the row restriction: {e}") from None
            if session.columns is not None:
                rows = rows.select(session.columns)
        return rows

    def _serve(self, session: _Session, chunks: list[_Chunk], offset: int, context: Any) -> Iterator[Any]:
        total = sum(c.rows for c in chunks)
        if offset > total:
            raise errors.OutOfRange(f"offset {offset} is beyond the end of the stream ({total} rows)")
        schema_field = types.ReadRowsResponse(
            arrow_schema=types.ArrowSchema(serialized_schema=session.schema_bytes)
        ).SerializeToString()
        first = True
        for chunk in chunks:
            if chunk.first_row + chunk.rows <= offset:
                continue
            if context is not None and not context.is_active():
                return
            if chunk.first_row < offset:
                data = _resliced(chunk, offset, total, session.schema)
            else:
                data = chunk.encoded
            if first:
                # Serialized messages concatenate as a merge: this adds the schema to the first response.
                data += schema_field
                first = False
            yield _Encoded(data)


def _resliced(chunk: _Chunk, offset: int, total: int, schema: pa.Schema) -> bytes:
    import pyarrow as pa

    old = types.ReadRowsResponse.FromString(chunk.encoded)
    batch = pa.ipc.read_record_batch(pa.py_buffer(old.arrow_record_batch.serialized_record_batch), schema)
    skip = offset - chunk.first_row
    n = chunk.rows - skip
    response = types.ReadRowsResponse(row_count=n)
    response.arrow_record_batch.serialized_record_batch = batch.slice(skip).serialize().to_pybytes()
    response.arrow_record_batch.row_count = n
    response.stats.progress.at_response_start = offset / total
    response.stats.progress.at_response_end = (chunk.first_row + chunk.rows) / total
    return response.SerializeToString()


def _one_batch(rows: pa.Table) -> pa.RecordBatch:
    (batch,) = rows.combine_chunks().to_batches()
    return batch


def _snapshot_id(parts: list[Part]) -> tuple[Any, ...]:
    # Parts are immutable and only ever added; the last one's identity on disk tells a table recreated
    # under the same name apart.
    if not parts:
        return (0,)
    st = os.stat(parts[-1].path)
    return (len(parts), str(parts[-1].path), st.st_ino, st.st_mtime_ns)


def _width(schema: pa.Schema) -> int:
    """A rough byte width of a row, to scale a table's size to the selected fields."""
    total = 0
    for f in schema:
        try:
            total += max(1, f.type.bit_width // 8)
        except ValueError:  # variable width
            total += 16
    return total


def _parse(name: str, collections: Sequence[str], what: str) -> list[str]:
    segments = name.split("/")
    ok = len(segments) == 2 * len(collections) and all(
        segments[2 * i] == c and segments[2 * i + 1] for i, c in enumerate(collections)
    )
    if not ok:
        pattern = "/".join(f"{c}/{{{c[:-1]}}}" for c in collections)
        raise errors.InvalidArgument(f"{what} must look like {pattern}, got {name!r}")
    return segments[1::2]


# -- row restrictions ----------------------------------------------------------------------------------
#
#   expr      := and (OR and)*
#   and       := not (AND not)*
#   not       := NOT not | predicate
#   predicate := '(' expr ')' | operand [cmp operand | IS [NOT] NULL | [NOT] IN '(' operand, ... ')']
#   operand   := column | `column` | number | -number | 'string' | "string" | TRUE | FALSE | NULL
#
# SQL's three-valued logic is Arrow's Kleene logic: a comparison with NULL is NULL and a row is kept only
# when the whole restriction is TRUE.

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    | (?P<qid>`[^`]+`)
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|-)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {"=", "!=", "<>", "<", "<=", ">", ">="}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`", "0": "\0"}


class _Column(str):
    """A column name, told apart from a string literal."""


_NULL = object()


def parse_row_restriction(text: str, schema: pa.Schema) -> pc.Expression:
    """The Arrow expression of a BigQuery ``row_restriction``; InvalidArgument saying what is wrong."""
    import pyarrow as pa

    parser = _Parser(text, schema)
    expr = parser.expression()
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    try:
        result = schema.empty_table().filter(expr)
        del result
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as e:
        raise errors.InvalidArgument(f"Invalid row_restriction {text!r}: {e}") from None
    return expr


class _Parser:
    def __init__(self, text: str, schema: pa.Schema) -> None:
        self.text = text
        self.schema = schema
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                self.fail(f"cannot read {text[pos:].strip()[:20]!r} at position {pos}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, why: str) -> NoReturn:
        raise errors.InvalidArgument(f"Cannot parse row_restriction {self.text!r}: {why}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        t = self.peek()
        if t is not None and t[0] == "id" and t[1].upper() in words:
            self.i += 1
            return True
        return False

    def op(self, *ops: str) -> str | None:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ops:
            self.i += 1
            return t[1]
        return None

    def expect(self, op: str) -> None:
        if self.op(op) is None:
            t = self.peek()
            self.fail(f"expected {op!r}, found {t[1]!r}" if t else f"expected {op!r} at the end")

    def expression(self) -> Any:
        expr = self.conjunction()
        while self.keyword("OR"):
            expr = expr | self.conjunction()
        return expr

    def conjunction(self) -> Any:
        expr = self.negation()
        while self.keyword("AND"):
            expr = expr & self.negation()
        return expr

    def negation(self) -> Any:
        if self.keyword("NOT"):
            return ~self.negation()
        return self.predicate()

    def predicate(self) -> Any:
        if self.op("("):
            expr = self.expression()
            self.expect(")")
            return expr
        left = self.operand()
        cmp = self.op(*_COMPARISONS)
        if cmp is not None:
            right = self.operand()
            a, b = self.pair(left, right)
            return {
                "=": lambda: a == b,
                "!=": lambda: a != b,
                "<>": lambda: a != b,
                "<": lambda: a < b,
                "<=": lambda: a <= b,
                ">": lambda: a > b,
                ">=": lambda: a >= b,
            }[cmp]()
        if self.keyword("IS"):
            negated = self.keyword("NOT")
            if not self.keyword("NULL"):
                self.fail("expected NULL after IS")
            expr = self.value(left).is_null()
            return ~expr if negated else expr
        negated = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect("(")
            items = [self.operand()]
            while self.op(","):
                items.append(self.operand())
            self.expect(")")
            # OR of equalities, not isin(): ``x IN (1, NULL)`` must be NULL, not FALSE, when x is 2.
            expr = None
            for item in items:
                a, b = self.pair(left, item)
                expr = (a == b) if expr is None else expr | (a == b)
            return ~expr if negated else expr
        if negated:
            self.fail("expected IN after NOT")
        if not isinstance(left, _Column):
            self.fail(f"{left!r} is not a condition")
        return self.value(left)

    def operand(self) -> Any:
        t = self.peek()
        if t is None:
            return self.fail("expected a column or a value at the end")
        kind, text, _ = t
        self.i += 1
        if kind == "op" and text == "-":
            nxt = self.peek()
            if nxt is None or nxt[0] != "num":
                return self.fail("expected a number after '-'")
            self.i += 1
            return -_number(nxt[1])
        if kind == "num":
            return _number(text)
        if kind == "str":
            return _unquote(text)
        if kind == "qid":
            return self.column(text[1:-1])
        if kind == "id":
            word = text.upper()
            if word in ("TRUE", "FALSE"):
                return word == "TRUE"
            if word == "NULL":
                return _NULL
            if word in ("AND", "OR", "NOT", "IS", "IN"):
                return self.fail(f"expected a column or a value, found {text}")
            return self.column(text)
        return self.fail(f"expected a column or a value, found {text!r}")

    def column(self, name: str) -> _Column:
        if self.schema.get_field_index(name) < 0:
            raise errors.InvalidArgument(f"Invalid row_restriction {self.text!r}: Unrecognized name: {name}")
        return _Column(name)

    def value(self, operand: Any, like: pa.DataType | None = None) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(operand, _Column):
            return pc.field(str(operand))
        if operand is _NULL:
            return pc.scalar(pa.scalar(None, like or pa.null()))
        scalar = pa.scalar(operand)
        if like is not None and not scalar.type.equals(like):
            # '2024-01-01' for a DATE column, 3 for a FLOAT one; when the cast fails, arrow promotes what it
            # can (an INT64 column against 1.5) and refuses the rest.
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                scalar = scalar.cast(like)
        return pc.scalar(scalar)

    def pair(self, left: Any, right: Any) -> tuple[Any, Any]:
        def type_of(x: Any) -> pa.DataType | None:
            return self.schema.field(str(x)).type if isinstance(x, _Column) else None

        return self.value(left, type_of(right)), self.value(right, type_of(left))


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _unquote(text: str) -> str:
    quote, body = text[0], text[1:-1]
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        elif c == quote:  # a doubled quote
            out.append(c)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)
