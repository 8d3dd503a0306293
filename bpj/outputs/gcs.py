"""Batch prediction outputs in Cloud Storage, read at the speed of the wire.

The objects are listed with the JSON API, then downloaded by a bounded pool of threads through one
:class:`bpj.gcs.Gcs`: an object up to ``chunk_size`` in one GET, a larger one in ranged GETs of
``chunk_size``, each body read in one piece, a broken one resumed by byte range. Every object's crc32c is
checked before any of its bytes are handed out (``bpj.errors.DataCorruption`` otherwise). At most
``max_bytes_in_flight`` bytes of objects are reserved at a time (downloading, decoding, or waiting for the
consumer); reservations are made in file order, so ``ordered=True`` cannot deadlock. JSONL decodes with
pyarrow's C++ JSON reader and CSV with its CSV reader, in the worker threads; when the consumer stops
iterating, every worker ends before the iterator closes.

An object too large for that bound (larger than ``max_bytes_in_flight``, or a third of it when decoding)
is never held whole: its ranges go into a temporary file (:mod:`bpj.outputs.spool`) while their crc32c
values are kept, the combined crc32c is checked, and only then is the file decoded a slice of whole lines
at a time, so peak memory stays about twice ``max_bytes_in_flight`` whatever the object's size. Past
one machine, :meth:`GcsReader.partitions` splits such an object into byte ranges
(:mod:`bpj.outputs.gcs_partitions`).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from bpj import errors, gcs_uri
from bpj.gcs import CHUNK_SIZE, Gcs, GcsObject, verify
from bpj.outputs.decode import decode, release_unused
from bpj.outputs.gcs_partitions import GcsPartition, split
from bpj.outputs.reader import Progress, Reader, export_format
from bpj.outputs.reader import cores as _cores
from bpj.outputs.spool import Spool

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["GcsPartition", "GcsReader", "decode"]

# Decoding JSONL or CSV takes about this many times the object's size (parse buffers, the table) while it
# runs, so a decoding read reserves that much of max_bytes_in_flight per object.
DECODE_FACTOR = 3
# Threads when max_workers is None: downloading only (files(), export to JSONL) waits on the network, so a
# few more than the cores; decoding is CPU-bound and each decoding thread keeps its allocators' scratch (about
# 20 MiB for 4 MiB objects, measured), so one per core.
DOWNLOAD_WORKERS = 4
# The smallest slice an object too large for memory is decoded (and downloaded) in, however small the bound.
SLICE_MIN = 4 << 10


# -- the reader ---------------------------------------------------------------------------------------


class GcsReader(Reader):
    """Predictions (or errors) under a gs:// output directory, prefix, or wildcard pattern.

    ``uri``: ``gs://bucket/dir`` (the ``predictions_*`` and ``predictions.*`` files under it, as custom
    models and publisher models such as Gemini write them; ``errors_*``/``errors.*`` for kind="errors"),
    ``gs://bucket/dir/predictions_0001.jsonl`` (that object), or a pattern (``*`` within a level, ``**``
    across levels, ``?``): every object it matches. Objects come in name order (numbers compared as numbers).

    A URI that matches no object at all (no such object, nothing under the directory, a pattern matching
    nothing) raises ``bpj.errors.NotFound`` naming it at the first read. A directory that exists (any object
    under it, a ``dir/`` placeholder included) but holds no file of this kind, or only empty ones, is an
    empty output: no rows.
    """

    def __init__(
        self,
        uri: str,
        *,
        max_workers: int | None = None,
        max_bytes_in_flight: int = 256 << 20,
        ordered: bool = False,
        progress: bool | None = None,
        kind: str = "predictions",
        endpoint: str | None = None,
        credentials: Any = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if kind not in ("predictions", "errors"):
            raise errors.UsageError(f"kind must be 'predictions' or 'errors', got {kind!r}")
        if max_bytes_in_flight < 1:
            raise errors.UsageError(f"max_bytes_in_flight must be positive, got {max_bytes_in_flight}")
        self.bucket, self.pattern = gcs_uri.split(uri)
        self.uri = uri
        self.kind = kind
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise errors.UsageError(f"max_workers must be a positive int or None, got {max_workers!r}")
        self.max_workers = max_workers
        self.max_bytes_in_flight = max_bytes_in_flight
        self.ordered = ordered
        self.progress = progress
        self.chunk_size = max(1, chunk_size)
        self._endpoint = endpoint
        self._credentials = credentials
        self._client = Gcs(
            endpoint,
            credentials=credentials,
            max_connections=max(self.max_workers or 0, DOWNLOAD_WORKERS) + 1,
        )
        self._objects: list[GcsObject] | None = None

    def errors(self) -> GcsReader:
        """The same reader over the ``errors_*`` files next to the predictions."""
        root = self.pattern
        m = gcs_uri.WILDCARD.search(root)
        if m:
            root = root[: m.start()].rpartition("/")[0]
        elif any(o.name == root for o in self._list(root)):  # one object: its directory
            root = root.rpartition("/")[0]
        return GcsReader(
            f"gs://{self.bucket}/{root}",
            max_workers=self.max_workers,
            max_bytes_in_flight=self.max_bytes_in_flight,
            ordered=self.ordered,
            progress=self.progress,
            kind="errors",
            endpoint=self._endpoint,
            credentials=self._credentials,
            chunk_size=self.chunk_size,
        )

    # -- listing --

    def _list(self, prefix: str) -> list[GcsObject]:
        """Every object under ``prefix``, directory placeholders (``dir/``) included."""
        return list(self._client.objects(self.bucket, prefix))

    def objects(self) -> list[GcsObject]:
        """The objects this reader reads, in file order (listed once, then remembered)."""
        if self._objects is None:
            self._objects = sorted(self._select(), key=lambda o: _natural(o.name))
        return list(self._objects)

    def _select(self) -> list[GcsObject]:
        name = self.pattern
        m = gcs_uri.WILDCARD.search(name)
        if m:
            regex = gcs_uri.glob_regex(name)
            matched = [o for o in self._list(name[: m.start()]) if regex.fullmatch(o.name)]
            files = [o for o in matched if not o.name.endswith("/")]
            if not files:
                raise _not_found("no object matches this pattern", self.uri)
            return files
        found = self._list(name)
        exact = [o for o in found if o.name == name and not name.endswith("/")]
        if exact:
            return exact
        directory = name.rstrip("/") + "/" if name else ""
        inside = [o for o in found if o.name.startswith(directory)]
        # gs://b/dir names the directory (which exists when anything is under it), not gs://b/dir-other/...
        exists = bool(inside) or not name
        kind = _kind_regex(self.kind)
        selected = [
            o
            for o in (inside or found)
            if not o.name.endswith("/") and kind.fullmatch(o.name.rpartition("/")[2])
        ]
        if not selected and not exists:
            raise _not_found("no object or directory has this name", self.uri)
        return selected

    # -- reading --

    def files(self) -> Iterator[tuple[str, bytes | memoryview]]:
        """``(uri, bytes)`` for every object, each checked against its crc32c before it is handed out.

        An object larger than ``max_bytes_in_flight`` is downloaded into a temporary file (never held in
        memory), checked there, and comes as a read-only memory map of that file (a ``memoryview``: the OS
        pages it in as it is read; the file is already unlinked and its space returns when the view goes).
        """
        meter = self._meter()
        try:
            for obj, data in self._run(None):
                meter.add(0, obj.size)
                yield obj.uri, data.view() if isinstance(data, Spool) else data
        finally:
            meter.close()

    def _meter(self) -> Progress:
        """The progress line of one read, its total the listed objects' bytes."""
        return Progress(
            self.progress, label=self.uri, total_bytes=sum(o.size for o in self.objects()) or None
        )

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Arrow record batches, decoded in the worker threads (one schema per file; to_arrow() unifies).

        A JSONL object too large to decode whole within ``max_bytes_in_flight`` (a Gemini job's one
        ``predictions.jsonl``) is downloaded into a temporary file while its crc32c is computed, checked,
        then decoded from the file slice by slice (whole lines, about a sixth of ``max_bytes_in_flight``
        each, so one slice decoding takes about half of it) as the batches are taken: one schema per slice,
        and peak memory about twice ``max_bytes_in_flight`` whatever the object's size. (A CSV object that
        large is decoded whole once checked: a slice could cut a quoted newline.)
        """
        meter = self._meter()
        slice_size = max(SLICE_MIN, self.max_bytes_in_flight // (2 * DECODE_FACTOR))
        # A slice is decoded by the consumer's thread: pyarrow's threads parse its blocks on every core.
        block_size = max(SLICE_MIN, slice_size // _cores())

        def transform(obj: GcsObject, data: bytes | Spool) -> Any:
            if not isinstance(data, Spool):
                return decode(obj, data)
            if obj.format == "jsonl":
                return _decoded_lines(obj, data, slice_size, block_size)
            return decode(obj, cast(bytes, data.read(0, obj.size)))

        try:
            for obj, value in self._run(transform):
                tables = value if isinstance(value, Iterator) else iter((value,))
                del value
                while (table := cast("pa.Table | None", next(tables, _END))) is not _END:
                    if table is not None:
                        meter.add(table.num_rows, 0)
                        for batch in table.to_batches():
                            if batch.num_rows:
                                yield batch
                    # Let go of this slice before the next is decoded (only one in memory at a time).
                    table = batch = None
                meter.add(0, obj.size)
        finally:
            meter.close()

    def partitions(self, max_bytes: int | None = None) -> list[GcsPartition]:
        """Picklable tasks (:class:`bpj.outputs.gcs_partitions.GcsPartition`), one per object by default:
        ``task.read()`` returns its rows as a pyarrow Table, checked against the object's crc32c.

        With ``max_bytes``, a JSONL object larger than that is split into byte ranges of about
        ``max_bytes`` on line boundaries (CSV and other objects stay whole). A range's rows can only be
        checked with the other ranges of its object: ``task.read_piece()`` returns ``(table, piece)``, and
        the rows are final once :func:`bpj.outputs.pieces.check` passed on the pieces of every range
        (``read()`` on a range raises UsageError). Whole objects have ``read_piece()`` too.
        """
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise errors.UsageError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        root = self._client.settings.tls_root_cert
        return [p for o in self.objects() for p in split(self._client.endpoint, o, root, max_bytes)]

    def export(self, path: Any, *, format: str | None = None) -> int:
        """As :meth:`Reader.export`; JSONL from JSONL objects copies the checked bytes as they are."""

        if export_format(path, format) != "jsonl" or any(o.format != "jsonl" for o in self.objects()):
            return super().export(path, format=format)
        rows, piece = 0, max(SLICE_MIN, self.max_bytes_in_flight // 4)
        with open(path, "wb") as f:
            for _, data in self._run(None):
                # A spooled object in slices of whole lines (a bytearray reads as bytes do).
                lines = cast(Iterator[bytes], data.lines(piece)) if isinstance(data, Spool) else (data,)
                rows += _copy_lines(f, lines)
        return rows

    def _run(self, transform: Callable[[GcsObject, Any], Any] | None) -> Iterator[tuple[GcsObject, Any]]:
        """``(object, transform(object, data))`` per object, in file order or as completed. ``data`` is
        the object's checked bytes, or a :class:`Spool` (a checked temporary file) for an object larger
        than the in-memory bound (``max_bytes_in_flight``, or a third of it when decoding); the spool is
        closed when the next object is handed over or the iterator ends."""
        objects = self.objects()
        chunk = self.chunk_size
        factor = 1 if transform is None else DECODE_FACTOR
        stop = threading.Event()
        budget = _Budget(self.max_bytes_in_flight)
        tasks: queue.Queue[tuple[int, int, int, int] | None] = queue.Queue()
        results: queue.Queue[tuple[int, Any, int] | BaseException] = queue.Queue()
        pieces: dict[int, list[Any]] = {}
        whole: dict[int, bytearray] = {}
        spools: dict[int, Spool] = {}
        left: dict[int, int] = {}
        lock = threading.Lock()
        client = self._client
        n_workers = self.max_workers or (DOWNLOAD_WORKERS if transform is None else _cores())
        # A spooled object's ranges pass through memory on their way to the file: keep them small enough
        # that all the workers' together stay well within the bound.
        spool_chunk = max(SLICE_MIN, min(chunk, budget.cap // (4 * n_workers)))

        def feed() -> None:
            try:
                for i, obj in enumerate(objects):
                    spooled = obj.size * factor > budget.cap
                    step = spool_chunk if spooled else chunk
                    spans = [(s, min(obj.size, s + step)) for s in range(0, obj.size, step)] or [(0, 0)]
                    if not budget.acquire(min(obj.size * factor, budget.cap), stop):
                        return
                    with lock:
                        pieces[i] = [None] * len(spans)
                        left[i] = len(spans)
                        if spooled:
                            spools[i] = Spool(obj)
                        elif transform is not None and len(spans) > 1:
                            # Decoding takes the bytes as they are: the ranges go straight into their
                            # place, never joined from a list (which would hold the object twice).
                            whole[i] = bytearray(obj.size)
                    for k, (s, e) in enumerate(spans):
                        tasks.put((i, k, s, e))
            except BaseException as exc:  # (no temporary file, no memory): the consumer hears why
                stop.set()
                results.put(exc)
            finally:
                for _ in workers:
                    tasks.put(None)

        def work() -> None:
            while not stop.is_set():
                item = tasks.get()
                if item is None:
                    return
                i, k, s, e = item
                obj = objects[i]
                try:
                    got = client.fetch(obj, s, e) if e > s else (b"", None)
                    with lock:
                        into: bytearray | Spool | None = whole.get(i) or spools.get(i)
                    if into is not None:
                        if len(got[0]) != e - s:
                            raise errors.DataCorruption(
                                f"{obj.uri}: bytes {s}-{e} came back as {len(got[0])} bytes"
                            )
                        if isinstance(into, Spool):
                            into.write(s, got[0])
                        else:
                            into[s:e] = got[0]
                        got = (b"", got[1])
                    with lock:
                        pieces[i][k] = got
                        left[i] -= 1
                        done = left[i] == 0
                        parts = pieces.pop(i) if done else None
                    if parts is None or stop.is_set():
                        continue
                    header_crc = next((p[1] for p in parts if p[1] is not None), None)
                    data: Any
                    if isinstance(into, Spool):
                        into.check(header_crc)
                        data = into
                    elif into is not None:
                        with lock:  # a bytearray reads as bytes do, for the check and the decoders
                            data = cast(bytes, whole.pop(i))
                    else:
                        data = parts[0][0] if len(parts) == 1 else b"".join(p[0] for p in parts)
                    if not isinstance(data, Spool):
                        verify(obj, data, header_crc)
                    del parts
                    value = transform(obj, data) if transform else data
                    results.put((i, value, min(obj.size * factor, budget.cap)))
                    del data, value
                except BaseException as exc:
                    stop.set()
                    results.put(exc)
                    return

        workers = [threading.Thread(target=work, name=f"bpj-gcs-{n}", daemon=True) for n in range(n_workers)]
        feeder = threading.Thread(target=feed, name="bpj-gcs-feed", daemon=True)
        for t in [feeder, *workers]:
            t.start()
        waiting: dict[int, tuple[Any, int]] = {}
        handed: Spool | None = None
        try:
            for n in range(len(objects)):
                if self.ordered:
                    while n not in waiting:
                        item = _next(results, workers)
                        waiting[item[0]] = item[1:]
                    i = n
                    value, cost = waiting.pop(n)
                else:
                    i, value, cost = _next(results, workers)
                budget.hand_over(cost)
                with lock:
                    if handed is not None:
                        handed.close()
                    handed = spools.pop(i, None)
                yield objects[i], value
                del value
        finally:
            stop.set()
            budget.wake()
            for _ in workers:  # wake workers blocked on an empty queue
                tasks.put(None)
            for t in [feeder, *workers]:
                t.join()
            for spool in [*spools.values(), *([handed] if handed is not None else [])]:
                spool.close()


_END = object()


def _decoded_lines(obj: GcsObject, spool: Spool, size: int, block_size: int) -> Iterator[pa.Table | None]:
    """A spooled JSONL object decoded a slice of about ``size`` bytes of whole lines at a time, each
    slice's parse scratch handed back to the OS before the next (memory stays that of one slice)."""
    for block in spool.lines(size):
        table = decode(obj, cast(bytes, block), block_size)
        del block
        release_unused()
        yield table
        del table


def _next(results: queue.Queue[Any], workers: list[threading.Thread]) -> Any:
    while True:
        try:
            item = results.get(timeout=0.5)
        except queue.Empty:
            if not any(t.is_alive() for t in workers):
                raise errors.Internal("the GCS download workers ended without a result") from None
            continue
        if isinstance(item, BaseException):
            raise item
        return item


class _Budget:
    """Bytes reserved by objects from download until the consumer has let go of them (the object the
    consumer holds stays reserved until the next one is handed over). A reservation waits while the
    reserved bytes would pass the cap, unless only the consumer's object is reserved (so one object larger
    than the cap still goes through, and the consumer never waits on a reservation it holds itself)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.held = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> bool:
        with self._cond:
            while self.used > self.held and self.used + n > self.cap and not stop.is_set():
                self._cond.wait(0.2)
            if stop.is_set():
                return False
            self.used += n
            return True

    def hand_over(self, n: int) -> None:
        """The consumer lets go of what it held and now holds ``n`` reserved bytes."""
        with self._cond:
            self.used -= self.held
            self.held = n
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


# -- helpers ------------------------------------------------------------------------------------------


def _copy_lines(f: Any, slices: Iterable[bytes]) -> int:
    """Write one JSONL object's slices of whole lines to ``f`` as they are (nothing if it is all blank; a
    newline added after a last line that has none) and return its rows: the lines that are not blank."""
    rows, blank, last = 0, [], b"\n"
    for piece in slices:
        n = sum(1 for _ in _CONTENT_LINE.finditer(piece))
        if not rows and not n:  # blank so far: written only if a row follows
            blank.append(piece)
            continue
        for p in [*blank, piece]:
            f.write(p)
        rows, blank, last = rows + n, [], piece[-1:]
    if rows and last != b"\n":
        f.write(b"\n")
    return rows


# The start of a line that holds more than white space.
_CONTENT_LINE = re.compile(rb"^[^\S\n]*\S", re.MULTILINE)


def _not_found(what: str, uri: str) -> errors.NotFound:
    """NotFound naming ``uri`` (its message reads ``NOT_FOUND on <uri>: <what> ...``)."""
    return errors.NotFound(
        f"{what}; a job's output directory is its output_info.gcs_output_directory", resource=uri
    )


def _kind_regex(kind: str) -> re.Pattern[str]:
    """File names of one kind of output: ``predictions_0001.jsonl`` (custom models), ``predictions.jsonl``
    (publisher models such as Gemini), ``errors_0001.jsonl``..."""
    return re.compile(re.escape(kind) + r"(?:_.*|\..+)", re.DOTALL)


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
