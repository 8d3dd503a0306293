"""Object downloads the GCS guard answers itself, from fake-gcs-server's files, with ``sendfile(2)``.

Relaying a download through the guard costs a second loopback TCP hop for every byte, and on a small machine
the bytes are what the CPU spends its time on (the reader benchmark lost a third of its throughput to it).
So for the one request that moves bulk data, a plain ``GET ...?alt=media`` (whole object or one byte range),
the guard asks the engine for the object's metadata (a small JSON request, so the engine stays the authority
on what exists, its size, generation and checksums), opens the object's file under the engine's filesystem
root, checks it is that object, and sends it to the client straight from the page cache. Anything else —
a generation or precondition parameter, a stored content encoding the engine would transcode, several
ranges, a range the object does not hold, a file that does not match the metadata — goes to the engine as
every other request does.

Names reach this module checked (bpj.gcs_uri: no '.'/'..' segments, no control characters); the path is
built as the engine builds it (``root/<bucket>/<name>``, with Go's filepath.Join folding empty segments),
opened without following symbolic links anywhere under the root, and must resolve inside the root.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import stat
from datetime import datetime
from typing import Any

__all__ = ["MediaFile", "open_media", "parse_range"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_SENDFILE_CHUNK = 8 << 20


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """``(first, last)`` of a single satisfiable byte range, None without a Range header, False for what the
    engine must answer (several ranges, a malformed or unsatisfiable one)."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return False
    first, last = m.groups()
    if not first and not last:
        return False
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else False
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


class MediaFile:
    """An object's open file, checked against the engine's metadata, and the answer's head."""

    def __init__(self, fd: int, size: int, metadata: dict[str, Any]) -> None:
        self.fd = fd
        self.size = size
        self.metadata = metadata

    def head(self, span: tuple[int, int] | None) -> bytes:
        meta = self.metadata
        lines = ["HTTP/1.1 206 Partial Content" if span else "HTTP/1.1 200 OK", "Accept-Ranges: bytes"]
        first, last = span if span else (0, self.size - 1)
        lines.append(f"Content-Length: {last - first + 1 if self.size else 0}")
        if span:
            lines.append(f"Content-Range: bytes {first}-{last}/{self.size}")
        lines.append(f"Content-Type: {meta.get('contentType') or 'application/octet-stream'}")
        if meta.get("etag"):
            lines.append(f'Etag: "{meta["etag"]}"')
        with contextlib.suppress(ValueError, TypeError, KeyError):
            updated = datetime.fromisoformat(str(meta["updated"]).replace("Z", "+00:00"))
            lines.append(f"Last-Modified: {email.utils.format_datetime(updated, usegmt=True)}")
        lines.append(f"X-Goog-Generation: {meta.get('generation', '')}")
        hashes = [f"{k}={meta[v]}" for k, v in (("crc32c", "crc32c"), ("md5", "md5Hash")) if meta.get(v)]
        if hashes:
            lines.append(f"X-Goog-Hash: {','.join(hashes)}")
        lines.append("X-Goog-Stored-Content-Encoding: identity")
        for line in lines:
            if any(c in line for c in "\r\n\x00"):
                raise ValueError("metadata with a control character")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def send(self, sock: Any, span: tuple[int, int] | None) -> None:
        """Send the answer's body (the whole object or the span) from the file, without copying it."""
        offset, last = span if span else (0, self.size - 1)
        left = last - offset + 1 if self.size else 0
        out = sock.fileno()
        while left > 0:
            sent = os.sendfile(out, self.fd, offset, min(left, _SENDFILE_CHUNK))
            if sent == 0:
                raise OSError("the object's file ended early")
            offset += sent
            left -= sent

    def close(self) -> None:
        os.close(self.fd)


def open_media(root: str, bucket: str, name: str, metadata: dict[str, Any]) -> MediaFile | None:
    """The object's file under ``root`` when it is served from here, else None (the engine answers)."""
    if metadata.get("contentEncoding") not in (None, "", "identity"):
        return None
    try:
        size = int(metadata["size"])
    except (KeyError, TypeError, ValueError):
        return None
    parts = [p for p in name.split("/") if p]
    if not parts or name.endswith("/") or any(p in (".", "..") for p in parts):
        return None
    fd = _open_beneath(root, [bucket, *parts])
    if fd is None:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        os.close(fd)
        return None
    return MediaFile(fd, size, metadata)


def _open_beneath(root: str, parts: list[str]) -> int | None:
    """Open ``root/parts...`` one component at a time, refusing symbolic links at every step."""
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags_dir, dir_fd=current)
            os.close(current)
            current = nxt
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=current)
    except OSError:
        return None
    finally:
        os.close(current)
