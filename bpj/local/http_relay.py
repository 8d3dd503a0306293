"""HTTP/1.1 plumbing for the GCS guard (bpj/local/gcs_guard.py): heads read without touching the body, framing
checked, bodies moved socket to socket with ``splice(2)``, chunked bodies re-framed, error answers in the Cloud
Storage JSON API's format, and a close that does not lose the answer to a reset."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import socket
import struct
import time

from bpj.local.gcs_routes import Refused

MAX_HEAD_BYTES = 64 << 10
IDLE_TIMEOUT = 120.0
HEAD_TIMEOUT = 10.0
_DIGITS = re.compile(r"[0-9]{1,15}")
_PIPE_BYTES = 1 << 20
_REASONS = {400: "invalid", 401: "required", 403: "forbidden", 404: "notFound", 405: "methodNotAllowed"}
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
}


class Closed(Exception):
    """The peer closed the connection (between requests: a normal end)."""


# -- reading HTTP/1.1 heads ----------------------------------------------------------------------------------


def read_head(sock: socket.socket, limit: int = MAX_HEAD_BYTES, *, first_wait: float = IDLE_TIMEOUT) -> bytes:
    """One message head, up to and including the blank line, without taking a byte of the body, so that
    the body can be spliced straight from the socket. The first byte may take ``first_wait`` seconds; the
    whole head must follow within HEAD_TIMEOUT of it."""
    too_long = Refused(431, f"the request head is over {limit // 1024} KiB")
    return read_until(sock, b"\r\n\r\n", limit, first_wait, too_long)


def read_until(sock: socket.socket, marker: bytes, limit: int, first_wait: float, too_long: Refused) -> bytes:
    """The bytes up to and including ``marker``, and not one more.

    What is waiting is peeked; without the marker it is taken (so that the next wait is for new bytes,
    not for these), with it exactly up to the marker is taken. Closed when the peer ends the stream first,
    when nothing comes within ``first_wait`` seconds, or when the rest does not follow the first byte within
    HEAD_TIMEOUT (a client that trickles bytes holds a thread no longer than that)."""
    buf = bytearray()
    deadline = 0.0
    while True:
        wait = deadline - time.monotonic() if buf else first_wait
        if wait <= 0 or not select.select([sock], [], [], wait)[0]:
            raise Closed
        data = sock.recv(limit + len(marker), socket.MSG_PEEK)
        if not data:
            raise Closed
        if not buf:
            deadline = time.monotonic() + HEAD_TIMEOUT
        start = len(buf)
        buf += data
        end = buf.find(marker, max(0, start - len(marker) + 1))
        if end >= 0:
            del buf[end + len(marker) :]
            return bytes(buf[:start]) + recv_exact(sock, len(buf) - start)
        if len(buf) > limit:
            raise too_long
        recv_exact(sock, len(data))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed
        buf += chunk
    return bytes(buf)


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """``(first word, second word, rest, headers)`` of a request or status line and its headers."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise Refused(400, "unreadable request head") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise Refused(400, "malformed request line")
    headers = []
    for line in lines[1:]:
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip() or any(c in key for c in " \t\x00"):
            raise Refused(400, "malformed header line")
        if any(c in value for c in "\x00\r\n"):
            raise Refused(400, "a header value contains a control character")
        headers.append((key.lower(), value.strip()))
    return parts[0], parts[1], parts[2], headers


def one(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k == name]
    if len(values) > 1:
        raise Refused(400, f"the {name} header is given more than once")
    return values[0] if values else None


def is_decimal(text: str | None) -> bool:
    """Plain ASCII digits (``str.isdigit`` also takes '²', which ``int`` refuses)."""
    return text is not None and _DIGITS.fullmatch(text) is not None


def framing_of(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """``("length", n)``, ``("chunked", 0)`` or ``("none", 0)`` for a request's body."""
    te = one(headers, "transfer-encoding")
    cl = one(headers, "content-length")
    if te is not None:
        if cl is not None:
            raise Refused(400, "a request cannot have both Content-Length and Transfer-Encoding")
        if te.lower() != "chunked":
            raise Refused(501, f"Transfer-Encoding {te!r} is not supported (only chunked)")
        return "chunked", 0
    if cl is not None:
        if not is_decimal(cl):
            raise Refused(400, f"Content-Length must be a decimal number of bytes, not {cl[:40]!r}")
        return "length", int(cl)
    return "none", 0


# -- moving bytes ----------------------------------------------------------------------------------------------


class Pipe:
    """A kernel pipe for ``splice``: socket -> pipe -> socket, no copy through Python."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)

    def move(self, src: socket.socket, dst: socket.socket, n: int) -> None:
        """Move exactly ``n`` bytes from ``src`` to ``dst``; Closed when ``src`` ends early."""
        # SPLICE_F_MORE only while more is coming: on the last piece it would cork the socket (~200 ms).
        src_fd, dst_fd, move, more = src.fileno(), dst.fileno(), os.SPLICE_F_MOVE, os.SPLICE_F_MORE
        while n > 0:
            got = os.splice(src_fd, self.w, min(n, _PIPE_BYTES), flags=move)
            if got == 0:
                raise Closed
            n -= got
            while got > 0:
                got -= os.splice(self.r, dst_fd, got, flags=move | more if n else move)

    def move_to_end(self, src: socket.socket, dst: socket.socket) -> None:
        """Move everything until ``src`` closes."""
        while True:
            got = os.splice(src.fileno(), self.w, _PIPE_BYTES, flags=os.SPLICE_F_MOVE)
            if got == 0:
                return
            while got > 0:
                got -= os.splice(self.r, dst.fileno(), got, flags=os.SPLICE_F_MOVE)


def _read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    too_long = Refused(400, "malformed chunked body: a chunk-size line is too long")
    return read_until(sock, b"\r\n", limit, IDLE_TIMEOUT, too_long)


def _chunk_size(line: bytes) -> int:
    text = line[:-2].split(b";", 1)[0].strip()
    if not text or len(text) > 12 or any(c not in b"0123456789abcdefABCDEF" for c in text):
        raise Refused(400, "malformed chunk size in a chunked body")
    return int(text, 16)


def relay_chunked(src: socket.socket, dst: socket.socket, pipe: Pipe) -> None:
    """Relay a chunked body, chunk by chunk, re-framed; trailers are dropped."""
    while True:
        size = _chunk_size(_read_line(src))
        dst.sendall(b"%x\r\n" % size)
        if size == 0:
            while _read_line(src) != b"\r\n":
                pass
            dst.sendall(b"\r\n")
            return
        pipe.move(src, dst, size)
        if recv_exact(src, 2) != b"\r\n":
            raise Refused(400, "malformed chunked body")
        dst.sendall(b"\r\n")


def read_body(sock: socket.socket, framing: tuple[str, int], limit: int) -> bytes:
    """A whole request body (for the routes whose body is checked), at most ``limit`` bytes."""
    kind, n = framing
    if kind == "length":
        if n > limit:
            raise Refused(413, f"this request's body is limited to {limit >> 10} KiB")
        return recv_exact(sock, n)
    if kind == "none":
        return b""
    out = bytearray()
    while True:
        size = _chunk_size(_read_line(sock))
        if size == 0:
            while _read_line(sock) != b"\r\n":
                pass
            return bytes(out)
        if len(out) + size > limit:
            raise Refused(413, f"this request's body is limited to {limit >> 10} KiB")
        out += recv_exact(sock, size)
        if recv_exact(sock, 2) != b"\r\n":
            raise Refused(400, "malformed chunked body")


def error_answer(status: int, message: str, *, close: bool = False) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [
                    {"message": message, "domain": "global", "reason": _REASONS.get(status, "invalid")}
                ],
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\nContent-Type: application/json; charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    )
    return head.encode() + body


def linger_close(sock: socket.socket, budget: int = 1 << 20) -> None:
    """Close after an answer while the client may still be sending: stop writing, read and drop what comes
    for a moment, then close, so that the kernel sends the answer rather than a reset that would lose it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
        while budget > 0:
            got = sock.recv(min(budget, 65536))
            if not got:
                break
            budget -= len(got)
    with contextlib.suppress(OSError):
        sock.close()


def set_timeouts(sock: socket.socket) -> None:
    # Kernel-level timeouts (splice honours them; Python's settimeout would make the socket non-blocking).
    tv = struct.pack("ll", int(IDLE_TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
