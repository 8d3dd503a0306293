"""Raw HTTP/1.1 over a fresh socket, every byte the test's to choose: for attacking the local servers."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any


def request(
    port: int,
    method: str,
    target: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request written byte by byte (any target, any header, a lone surrogate too):
    ``(status, headers lower-cased, body)``."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host if host is not None else f'127.0.0.1:{port}'}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s, method=method)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def exchange(port: int, data: bytes | list[bytes], *, wait: float = 1.0, pause: float = 0.15) -> bytes:
    """Send raw bytes (a list: piece by piece, ``pause`` between); all that comes back before the server
    closes or ``wait`` seconds of silence."""
    pieces: list[Any] = data if isinstance(data, list) else [data]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i, piece in enumerate(pieces):
            s.sendall(piece)
            if i + 1 < len(pieces):
                time.sleep(pause)
        s.settimeout(wait)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out
