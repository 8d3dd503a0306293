"""An object too large to hold in memory, downloaded into a temporary file and checked there.

The download threads write the object's ranges into the file at their offsets, in whatever order they come,
and keep each range's CRC32C; once all are in, the CRC32Cs are combined (:func:`bpj.checksum.combine`) into
the object's, so the check needs no second pass over the bytes. Only then does anyone read the file: in
slices of whole lines to decode or copy (bounded memory whatever the object's size), or as a read-only
memory map. The file is unlinked as soon as it is created (nothing is left behind, whatever
happens to the process) and its space returns when :meth:`Spool.close` closes it.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections.abc import Iterator

from bpj import checksum, errors
from bpj.gcs import GcsObject, verify_sum

__all__ = ["Spool"]

_PREADV = hasattr(os, "preadv")


class Spool:
    """One object's bytes in an unlinked temporary file in the default temporary directory."""

    def __init__(self, obj: GcsObject) -> None:
        self.obj = obj
        fd, path = tempfile.mkstemp(prefix="bpj-", suffix=".part")
        os.unlink(path)
        self._fd: int | None = fd
        self._crcs: dict[int, tuple[int, int]] = {}  # start -> (crc32c, length)
        self._lock = threading.Lock()

    def _open_fd(self) -> int:
        fd = self._fd
        if fd is None:
            raise errors.Internal(f"the temporary file of {self.obj.uri} was closed")
        return fd

    def write(self, start: int, data: bytes) -> None:
        """Bytes ``[start, start + len(data))`` of the object (any thread, any order)."""
        crc = checksum.crc32c(data)
        view, pos = memoryview(data), start
        while view:
            n = os.pwrite(self._open_fd(), view, pos)
            view, pos = view[n:], pos + n
        with self._lock:
            self._crcs[start] = (crc, len(data))

    def check(self, header_crc: int | None = None) -> None:
        """DataCorruption unless the ranges written cover the object, each byte once, and their CRC32Cs
        combine to its listed crc32c (else ``header_crc``, from the response headers)."""
        crc, pos = 0, 0
        for start, (part, length) in sorted(self._crcs.items()):
            if start != pos:
                raise errors.DataCorruption(f"{self.obj.uri}: bytes {pos}-{start} were not downloaded")
            crc, pos = checksum.combine(crc, part, length), pos + length
        verify_sum(self.obj, pos, lambda: crc, header_crc)

    def read(self, start: int, end: int) -> bytearray:
        """Bytes ``[start, end)`` (fewer at the end of the file)."""
        out = bytearray(max(0, min(end, self.obj.size) - start))
        view, pos = memoryview(out), start
        while view:
            if _PREADV:
                n = os.preadv(self._open_fd(), [view], pos)
            else:  # (macOS before 11: pread, and a copy)
                got = os.pread(self._open_fd(), len(view), pos)
                n = len(got)
                view[:n] = got
            if n == 0:
                break
            view, pos = view[n:], pos + n
        return out

    def lines(self, size: int) -> Iterator[bytearray]:
        """The file in slices of about ``size`` bytes of whole lines (a line longer than that whole)."""
        total, start = self.obj.size, 0
        while start < total:
            block = self.read(start, start + size)
            end = start + len(block)
            if end < total:
                cut = block.rfind(b"\n")
                if cut >= 0:
                    del block[cut + 1 :]
                else:  # one line longer than a slice: read on to its end
                    while end < total and (more := self.read(end, end + size)):
                        k = more.find(b"\n")
                        block += more if k < 0 else more[: k + 1]
                        end += len(more)
                        if k >= 0:
                            break
            start += len(block)
            yield block

    def view(self) -> memoryview | bytes:
        """The whole object as a read-only memory map (it stays valid after :meth:`close`, and keeps the
        file until it is released)."""
        if self.obj.size == 0:
            return b""
        return memoryview(mmap.mmap(self._open_fd(), self.obj.size, prot=mmap.PROT_READ))

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
