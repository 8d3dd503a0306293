"""Picklable pieces of a GCS output for engines that run them past one machine (Dask, Ray Data, Beam).

A :class:`GcsPartition` is a whole object, or one byte range of a large JSONL object (so one 10 GB
``predictions.jsonl`` spreads over workers). A range owns the lines that *start* in it (Hadoop's rule):
with nominal bounds ``[s, e)`` it reads from ``s - 1`` (to learn whether ``s`` begins a line) and on past
``e`` to finish its last line, so the ranges of an object decode every line exactly once, whatever the
line lengths. Every GET is pinned to the generation listed, so all ranges read the same bytes.

Cloud Storage keeps one CRC32C per object, so a range cannot check its own rows: ``read_piece()`` returns
them with a :class:`bpj.outputs.pieces.Piece` (the bytes they were decoded from, and their CRC32C), and the
rows are final once :func:`bpj.outputs.pieces.check` has combined every piece of the object into its
CRC32C. A whole-object partition checks itself (``read()`` raises DataCorruption before returning a row)
and also has ``read_piece()``, so engines treat all partitions alike.

A partition carries the endpoint, the TLS root (a PEM path, or None for the worker's own settings), the
object (URI, size, generation, CRC32C) and the byte range, never credentials or a token: the worker's client
comes from its own environment (Application Default Credentials, or the local stack's ``BPJ_TOKEN``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpj import checksum, errors
from bpj.gcs import Gcs, GcsObject, client_for
from bpj.outputs.decode import decode
from bpj.outputs.pieces import Piece

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["GcsPartition", "split"]

# How far a range reads past its end at first to finish its last line; doubled while no newline comes.
_TAIL = 64 << 10


@dataclass(frozen=True)
class GcsPartition:
    """One object of an output, or bytes ``[start, end)`` of one (``end`` None: the whole object).
    Picklable; ``read_piece()`` works in any process (credentials are resolved there: anonymous for a
    loopback endpoint, else Application Default Credentials; the token from that process's settings)."""

    endpoint: str
    object: GcsObject
    tls_root: str | None = None
    start: int = 0
    end: int | None = None

    @property
    def uri(self) -> str:
        return self.object.uri

    @property
    def whole(self) -> bool:
        """Whether this partition covers the whole object (then it checks its own rows)."""
        return self.start == 0 and (self.end is None or self.end >= self.object.size)

    def read(self) -> pa.Table:
        """The object's rows, checked against its crc32c. A range of an object cannot check its rows alone:
        UsageError (use ``read_piece()`` and ``bpj.outputs.pieces.check()``)."""
        if not self.whole:
            raise errors.UsageError(
                f"this partition is bytes {self.start}-{self.end} of {self.uri}, whose rows can only be "
                "checked together with the other ranges of the object: call read_piece() on each and pass "
                "the pieces to bpj.outputs.pieces.check() before using the rows (the engine adapters "
                "to_dask() and to_ray() do this)"
            )
        return self.read_piece()[0]

    def read_piece(self) -> tuple[pa.Table, Piece]:
        """The rows of this partition and the :class:`Piece` they were decoded from. For a whole object the
        crc32c is already checked here; for a range, only :func:`bpj.outputs.pieces.check` can."""
        import pyarrow as pa

        client = client_for(self.endpoint, self.tls_root)
        obj = self.object
        if self.whole:
            data = client.download(obj)  # checked against the object's crc32c
            first = 0
            # That check proved the listed crc32c is these bytes': no second pass over them.
            crc = obj.crc32c if obj.crc32c is not None else checksum.crc32c(data)
        else:
            first, data = owned_lines(client, obj, self.start, obj.size if self.end is None else self.end)
            crc = checksum.crc32c(data)
        piece = Piece(obj.uri, int(obj.generation or 0), obj.size, obj.crc32c, first, first + len(data), crc)
        table = decode(obj, data) if data else None
        return (table if table is not None else pa.table({})), piece


def owned_lines(client: Gcs, obj: GcsObject, start: int, end: int) -> tuple[int, bytes]:
    """``(position, bytes)``: the lines of ``obj`` that start in ``[start, end)``, whole (the last one
    read past ``end`` to its newline or the object's end). No line starts there: ``(start, b"")``."""
    low = max(0, start - 1)
    head = _fetch(client, obj, low, end)
    if start == 0:
        first = 0
    else:
        # A line starts at p in [start, end) when byte p - 1 is a newline: look at bytes [start - 1, end - 1).
        k = head.find(b"\n", 0, end - 1 - low)
        if k < 0:
            return start, b""
        first = low + k + 1
    tail: list[bytes] = []
    pos, step = end, _TAIL
    if not head.endswith(b"\n"):
        while pos < obj.size:
            more = _fetch(client, obj, pos, min(obj.size, pos + step))
            k = more.find(b"\n")
            if k >= 0:
                tail.append(more[: k + 1])
                break
            tail.append(more)
            pos += len(more)
            step *= 2
    return first, head[first - low :] + b"".join(tail) if tail else head[first - low :]


def _fetch(client: Gcs, obj: GcsObject, start: int, end: int) -> bytes:
    data, _ = client.fetch(obj, start, end)  # pinned to obj.generation
    if len(data) != end - start:
        raise errors.DataCorruption(f"{obj.uri}: bytes {start}-{end} came back as {len(data)} bytes")
    return data


def split(endpoint: str, obj: GcsObject, tls_root: str | None, max_bytes: int | None) -> list[GcsPartition]:
    """The partitions of one object: itself, or (a JSONL object larger than ``max_bytes``) ranges of about
    ``max_bytes`` each. Other formats stay whole: a CSV row may hold a quoted newline, and a range could
    not tell."""
    if max_bytes is None or obj.format != "jsonl" or obj.size <= max_bytes:
        return [GcsPartition(endpoint, obj, tls_root)]
    count = -(-obj.size // max_bytes)
    step = -(-obj.size // count)
    return [
        GcsPartition(endpoint, obj, tls_root, s, min(obj.size, s + step)) for s in range(0, obj.size, step)
    ]
