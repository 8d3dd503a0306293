"""Faults for the Cloud Storage client to meet, on 127.0.0.1: a TCP proxy in front of a real server that cuts
bodies or flips a byte, and a scripted HTTP server that answers what a test tells it to."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from dataclasses import dataclass, field


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side ends, then end both (the test relays' one loop)."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Proxy:
    """A threaded TCP proxy on 127.0.0.1 that follows the HTTP responses going back to the client. For a
    media response (one with an X-Goog-Hash header) it can cut the connection after ``cut_after`` body
    bytes (``cuts`` times), or flip the body byte at ``flip_at``."""

    def __init__(
        self, upstream: str, *, cut_after: int | None = None, cuts: int = 0, flip_at: int | None = None
    ):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_after, self.cuts, self.flip_at = cut_after, cuts, flip_at
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._spawn(self._pump, client, upstream)
            self._spawn(self._responses, upstream, client)

    _pump = staticmethod(pipe)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_done < self.cuts:
                self.cuts_done += 1
                return True
            return False

    def _responses(self, src: socket.socket, dst: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = src.recv(1 << 16)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                headers = head.decode("latin-1").lower()
                length = next(
                    (
                        int(line.split(":")[1])
                        for line in headers.split("\r\n")
                        if line.startswith("content-length:")
                    ),
                    None,
                )
                dst.sendall(head + b"\r\n\r\n")
                if length is None and "transfer-encoding: chunked" in headers:  # a listing: pass it on
                    while (end := (b"\r\n" + buf).find(b"\r\n0\r\n\r\n")) < 0:
                        data = src.recv(1 << 16)
                        if not data:
                            return
                        buf += data
                    dst.sendall(buf[: end + 5])
                    buf = buf[end + 5 :]
                    continue
                if length is None:  # not framed: pass the rest through
                    dst.sendall(buf)
                    self._pump(src, dst)
                    return
                media = "x-goog-hash:" in headers
                cut = media and self.cut_after is not None
                sent = 0
                while sent < length:
                    if not buf:
                        buf = src.recv(1 << 16)
                        if not buf:
                            return
                    piece, buf = buf[: length - sent], buf[length - sent :]
                    if media and self.flip_at is not None and sent <= self.flip_at < sent + len(piece):
                        k = self.flip_at - sent
                        piece = piece[:k] + bytes([piece[k] ^ 0x01]) + piece[k + 1 :]
                    if cut and sent + len(piece) > self.cut_after and self._take_cut():
                        dst.sendall(piece[: max(0, self.cut_after - sent)])
                        dst.shutdown(socket.SHUT_RDWR)
                        return
                    dst.sendall(piece)
                    sent += len(piece)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self._listener.close()


@dataclass
class Answer:
    """One scripted response: ``body`` (a dict is sent as JSON), of which only ``send`` bytes go out before
    the connection is closed when ``send`` is set."""

    status: int = 200
    body: bytes | dict = b""
    headers: dict[str, str] = field(default_factory=dict)
    send: int | None = None

    def payload(self) -> bytes:
        return json.dumps(self.body).encode() if isinstance(self.body, dict) else self.body


def error(status: int, message: str = "scripted", **headers: str) -> Answer:
    """A JSON API error answer, as Cloud Storage writes one."""
    return Answer(status, {"error": {"code": status, "message": message}}, headers)


class Scripted:
    """An HTTP/1.1 server on 127.0.0.1 that gives the scripted answers in order (the last one again when
    the script runs out) and keeps every request: ``(method, path with query, headers)``."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        script = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                if size:
                    self.rfile.read(size)
                script.requests.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                answer = script.answers.pop(0) if len(script.answers) > 1 else script.answers[0]
                body = answer.payload()
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if answer.send is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: answer.send])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
