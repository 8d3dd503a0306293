"""The framing of record inputs, CSV rows and TFRecord records, so that one bad record fails only itself.

TFRecord, as TensorFlow writes it: every record is ``uint64 length | uint32 masked crc32c of the length |
data | uint32 masked crc32c of the data``, little-endian. A record whose data fails its crc32c is reported on
its own and reading goes on (the framing still holds). What breaks the framing cannot be resynchronised, so it
ends the file with one DATA_LOSS record naming the byte offset: a length whose crc32c fails, a length larger
than what is left of the object or than :data:`MAX_RECORD_BYTES`, a file that ends inside a record, or a
gzip stream that does not decompress. A length is never trusted for an allocation: data is read in pieces of
at most :data:`_PIECE` bytes, so 8 forged bytes cost at most what the object really holds.

CSV: :class:`CsvLines` feeds ``csv.reader`` the object's lines, decoded from UTF-8 a large chunk at a time; a
chunk that does not decode is decoded again line by line, its bad lines with U+FFFD so that the quoting still
frames the rows, and their numbers listed in ``bad`` for the caller to fail the rows that hold them. After
``csv.Error`` (a field over ``csv.field_size_limit()``, 128 KiB by default) :meth:`CsvLines.skip_record`
finds where the bad row ends by following its quotes, and the reader goes on with the next row. A quoted field
that is never closed takes the rest of the file, as Python's csv reader reads it (strict=False); the caller
reports those lines as one bad row.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import IO, NamedTuple

__all__ = ["MAX_RECORD_BYTES", "CsvLines", "Record", "masked_crc", "tfrecords"]

MAX_RECORD_BYTES = 256 << 20
_PIECE = 1 << 20
_CHUNK = 1 << 20
_MASK_DELTA = 0xA282EAD8


# -- TFRecord -------------------------------------------------------------------------------------------


class Record(NamedTuple):
    """One TFRecord: its byte offset, its data (None when the framing broke), and what is wrong with it."""

    offset: int
    data: bytes | None
    problem: str | None = None
    code: str = "INVALID_ARGUMENT"


def masked_crc(data: bytes) -> int:
    """TFRecord's masked crc32c."""
    from bpj import checksum

    crc = checksum.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecords(f: IO[bytes], uri: str, *, size: int | None) -> Iterator[Record]:
    """The records of a TFRecord stream. ``size``: the stream's length when known (an uncompressed object);
    offsets are in the decompressed stream for gzip. Errors of ``f`` other than a broken gzip stream
    (a failed download) propagate."""
    import zlib

    where = uri if size is not None else f"{uri} (decompressed)"
    offset = 0
    try:
        while True:
            header = _read(f, 12)
            if not header:
                return
            if len(header) < 12:
                yield _lost(offset, f"the TFRecord at byte {offset} of {where} is cut short in its header")
                return
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                yield _lost(
                    offset,
                    f"the length of the TFRecord at byte {offset} of {where} is corrupt (crc32c mismatch)",
                )
                return
            after = None if size is None else size - offset - 12
            if after is not None and length + 4 > after:
                yield _lost(
                    offset,
                    f"the TFRecord at byte {offset} of {where} is cut short: its length says {length} bytes "
                    f"of data and 4 of crc32c, the file holds {after} more",
                )
                return
            if length > MAX_RECORD_BYTES:
                yield _lost(
                    offset,
                    f"the TFRecord at byte {offset} of {where} claims {length} bytes of data, "
                    f"more than the {MAX_RECORD_BYTES} bytes a record may hold here",
                )
                return
            data = _read(f, length)
            crc = _read(f, 4)
            if len(data) < length or len(crc) < 4:
                yield _lost(
                    offset, f"the TFRecord at byte {offset} of {where} is cut short (the file ends inside it)"
                )
                return
            if masked_crc(data) != struct.unpack("<I", crc)[0]:
                yield Record(
                    offset, data, f"the TFRecord at byte {offset} of {where} is corrupt (crc32c mismatch)"
                )
            else:
                yield Record(offset, data)
            offset += 16 + length
    except (OSError, EOFError, zlib.error) as e:  # gzip's errors; the GCS client raises bpj.errors
        if size is not None:
            raise
        yield _lost(offset, f"{uri} does not decompress (after byte {offset} of its data): {e}")


def _lost(offset: int, message: str) -> Record:
    return Record(offset, None, f"{message}; the rest of the file is skipped", "DATA_LOSS")


def _read(f: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes (fewer at the end of the stream), read in pieces of at most ``_PIECE``."""
    if n <= _PIECE:
        data = f.read(n)
        if len(data) == n or not data:
            return data
        parts, got = [data], len(data)
    else:
        parts, got = [], 0
    while got < n:
        piece = f.read(min(_PIECE, n - got))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


# -- CSV ----------------------------------------------------------------------------------------------


class CsvLines:
    """The lines of a CSV stream for ``csv.reader`` (``reader`` reads them), as ``open(newline="")`` splits
    them (at ``\\n``, ``\\r\\n`` and ``\\r``, line ends kept), with a UTF-8 BOM dropped.

    ``bad`` lists, in order, the numbers of lines that are not UTF-8; ``total`` is the number of lines once
    they are all read (until then ``sys.maxsize``); ``skipped`` counts the lines :meth:`skip_record` read
    past the reader (a line's number is ``reader.line_num + skipped``). After the last line the reader gets
    :data:`_END`, which makes ``csv.Error`` whether or not a quoted field was left open: the caller, seeing
    an error on a line past ``total``, knows the file has ended, and whether a row was still open then.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.bad: list[int] = []
        self.total = sys.maxsize
        self.skipped = 0
        self.keep_from = 1  # lines before this one are no longer needed by skip_record
        self._kept: list[
            tuple[int, str | list[str]]
        ] = []  # recent chunks: (first line number, text or lines)
        self.lines: Iterator[str] = itertools.chain.from_iterable(self._chunks())
        self.reader = csv.reader(self.lines)

    def _lineno(self) -> int:
        """The number of the next line (as the reader reads a chunk's lines before it asks for more)."""
        return self.reader.line_num + self.skipped + 1

    def _chunks(self) -> Iterator[Iterable[str]]:
        first = True
        pending: list[bytes] = []
        while True:
            chunk = self.f.read(_CHUNK)
            if not chunk:
                break
            cut = _line_cut(chunk)
            if cut < 0:  # no line ends here: keep it whole for the next one
                pending.append(chunk)
                continue
            data = b"".join((*pending, chunk[:cut])) if pending else chunk[:cut]
            pending = [chunk[cut:]] if cut < len(chunk) else []
            yield self._decode(data, first)
            first = False
        if pending:
            yield self._decode(b"".join(pending), first)
        self.total = self._lineno() - 1
        yield (_END,)

    def _decode(self, data: bytes, first: bool) -> Iterable[str]:
        lineno = self._lineno()
        if first and data.startswith(codecs.BOM_UTF8):
            data = data[3:]
        lines: str | list[str]
        try:
            lines = data.decode("utf-8")
        except UnicodeDecodeError:
            # Bytes lines split where text lines do: a UTF-8 sequence never holds \r or \n.
            lines = []
            for n, line in enumerate(data.splitlines(keepends=True), lineno):
                try:
                    lines.append(line.decode("utf-8"))
                except UnicodeDecodeError:
                    self.bad.append(n)
                    lines.append(line.decode("utf-8", "replace"))
        kept = self._kept
        while len(kept) > 1 and kept[1][0] <= self.keep_from:
            del kept[0]
        kept.append((lineno, lines))
        return io.StringIO(lines, newline="") if isinstance(lines, str) else lines

    def text(self, start: int, end: int) -> list[str]:
        """Lines ``start`` to ``end`` (both included), of those still kept."""
        out = []
        for first, chunk in self._kept:
            lines = io.StringIO(chunk, newline="").readlines() if isinstance(chunk, str) else chunk
            lo, hi = max(start, first), min(end, first + len(lines) - 1)
            out.extend(lines[lo - first : hi - first + 1])
        return out

    def skip_record(self, start: int, end: int) -> tuple[int, bool]:
        """After ``csv.Error`` in the row that starts on line ``start``, the reader having read up to line
        ``end`` (not past ``total``): the last line of that row, and whether it is a quoted field that is never
        closed (then the row runs to ``total``). Lines the row still holds are read past, so that the reader
        goes on after it."""
        quoted = False
        for line in self.text(start, end):
            quoted = quoted_at_end(line, quoted)
        while quoted:
            more = next(self.lines)
            self.skipped += 1
            end += 1
            if end > self.total:  # _END
                return self.total, True
            quoted = quoted_at_end(more, True)
        return end, False


# After the last line: whether the reader is between rows or inside a quoted field, this line makes it raise
# csv.Error ("new-line character seen in unquoted field"): '"' opens or closes a quoted field, '\r' after a
# closing quote ends the field and then anything but a line end is an error.
_END = '"\rx"\rx'


def _line_cut(chunk: bytes) -> int:
    """Where the text after the chunk's last line end starts (-1: no line ends in it). A ``\\r`` that ends
    the chunk is left for the next one, where a ``\\n`` may follow it."""
    n = chunk.rfind(b"\n")
    r = chunk.rfind(b"\r", 0, len(chunk) - 1)
    cut = max(n, r)
    return cut + 1 if cut >= 0 else -1


def quoted_at_end(line: str, quoted: bool) -> bool:
    """Whether csv.reader (excel dialect, not strict) is inside a quoted field at the end of ``line``, given
    whether it was at its start. A ``"`` opens a quoted field only where a field starts, ``""`` inside one
    is a quote, and after the closing quote the field goes on unquoted up to the next delimiter."""
    i, n = 0, len(line)
    field_start = not quoted
    while i < n:
        if quoted:
            j = line.find('"', i)
            if j < 0:
                return True
            if line.startswith('"', j + 1):
                i = j + 2
                continue
            quoted, field_start, i = False, False, j + 1
        elif field_start and line[i] == '"':
            quoted, i = True, i + 1
        else:
            j = line.find(",", i)
            if j < 0:
                return False
            field_start, i = True, j + 1
    return quoted
