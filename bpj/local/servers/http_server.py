"""A small HTTP/1.1 server for the local stack's WSGI applications (Vertex REST gateway, BigQuery REST).

    server = RestServer(app, "127.0.0.1", 0, token="s3cret")   # .url, .guard, .stop()

Keep-alive, chunked responses for unsized bodies (server streams), chunked request bodies. Every answer is
a JSON error body in the application's format, the server's own refusals included: a request the server
turns away before the application runs (a malformed request line or header, a body too large or badly
framed, a foreign ``Host`` or ``Origin``, a missing token, a method nobody serves) is rendered by the
application's ``error_body(err) -> dict`` when it has one, else as a google.rpc.Status
(:func:`bpj.errors.status_json`). ``err`` is an :class:`~bpj.errors.ApiError` whose ``http_status`` is
the status sent (:class:`HttpRefusal` for the statuses no google.rpc code maps to: 405, 411, 413, 414...).

The order of checks: framing (request line, headers, Content-Length / Transfer-Encoding), then the
:class:`~bpj.local.servers.guard.Guard` (Host, Origin, token), then the method, then the body is read. A request
refused before its body is read closes the connection, since the unread body cannot be told from the next
request.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bpj import errors
from bpj.local.servers.guard import Guard

__all__ = ["DEFAULT_MAX_BODY", "HttpRefusal", "RestServer"]

App = Callable[..., Iterable[bytes]]
ErrorBody = Callable[[errors.ApiError], Any]

DEFAULT_MAX_BODY = 32 << 20
IDLE_TIMEOUT = 120.0
MAX_CONNECTIONS = 256
MAX_LINE = 65536  # request line, header line, as http.server and http.client bound them
_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 32
_SERVED = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE"
_KNOWN_NOT_SERVED = frozenset({"OPTIONS", "TRACE", "CONNECT"})
_METHOD_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HEX = frozenset(b"0123456789abcdefABCDEF")
# After a refusal with the request unread, read (and drop) at most this much for at most this long, so that
# the refusal is not lost to the reset that closing a socket with unread input sends.
_LINGER_BYTES = 4 << 20
_LINGER_SECONDS = 2.0


class HttpRefusal(errors.ApiError):
    """An HTTP-level refusal: an :class:`~bpj.errors.ApiError` sent with ``http_status`` (which its code
    alone would not give, e.g. 413 with INVALID_ARGUMENT)."""

    def __init__(self, http_status: int, message: str, code: errors.Code | None = None) -> None:
        super().__init__(message, code=code or errors.Code.from_http(http_status))
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status

    def __reduce__(self) -> tuple[Any, ...]:
        return (HttpRefusal, (self._http_status, self.message, self.code))


def _invalid(status: int, message: str) -> HttpRefusal:
    return HttpRefusal(status, message, errors.Code.INVALID_ARGUMENT)


def error_body_of(app: Any) -> ErrorBody:
    """The application's error renderer: its ``error_body`` attribute, else google.rpc.Status JSON."""
    render = getattr(app, "error_body", None)
    return render if callable(render) else errors.status_json


class RestServer:
    """A running WSGI application on ``host:port`` (0: a free port); ``url`` is ``http://HOST:PORT``.

    ``guard`` (a :class:`~bpj.local.servers.guard.Guard`) decides who may talk to it: the ``Host`` must name this
    server (``extra_names`` adds names), an ``Origin`` must be its own, and with ``token`` every request
    carries ``Authorization: Bearer <token>``. Bodies over ``max_body`` bytes are refused with 413. A connection
    that sends nothing for ``idle_timeout`` seconds (mid-request too) is closed, so a client that sends half a
    request cannot hold a thread for ever; past ``max_connections`` open connections a new one is answered 503.
    Stop it with :meth:`stop`.
    """

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        extra_names: Iterable[str] = (),
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._server = _HttpServer((host, port), _Handler)
        self._server.idle_timeout = idle_timeout
        self._server.max_connections = max_connections
        self._server.app = app
        self._server.error_body = error_body_of(app)
        self._server.max_body = max_body
        self.host = host
        self.port: int = self._server.server_address[1]
        self._server.guard = Guard(host, self.port, token=token, extra_names=extra_names)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"bpj-rest-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def guard(self) -> Guard:
        """The Host/Origin/token checks every request passes; assign a new :class:`Guard` to change them."""
        return self._server.guard

    @guard.setter
    def guard(self, guard: Guard) -> None:
        self._server.guard = guard

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting, close every open connection and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join()

    def __enter__(self) -> RestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    app: App
    idle_timeout: float
    error_body: ErrorBody
    guard: Guard
    max_body: int
    max_connections: int

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host up in DNS (getfqdn) for a name nobody reads.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its connection (a reset between keep-alive requests, a cancelled stream) is
        # routine; anything else goes to socketserver's report on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection: past max_connections a newcomer gets 503 and is closed, here, at once.
        with self.connections_lock:
            full = len(self.connections) >= self.max_connections
        if not full:
            super().process_request(request, client_address)
            return
        err = errors.Unavailable(f"the server is serving {self.max_connections} connections: retry later")
        payload = json.dumps(self.error_body(err)).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(head.encode() + payload)
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, each small response waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server: _HttpServer
    _body_unread = False  # the request's body is still in the socket: answering must close the connection
    _linger_on_close = False
    _head = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)

    # -- http.server's hooks --------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            for _ in range(8):  # RFC 9112 §2.2: empty lines before a request line are ignored
                if line not in (b"\r\n", b"\n"):
                    break
                line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                self.close_connection = True
                return
            # A refusal before parse_request knows the method must still leave out the body for HEAD.
            self._head = line.split(None, 1)[:1] == [b"HEAD"]
            if len(line) > MAX_LINE:
                self._refuse(HttpRefusal(414, f"the request line is longer than {MAX_LINE} bytes"))
                return
            if not line.strip():
                self._refuse(_invalid(400, "the request line is blank"))
                return
            self.raw_requestline = line
            if not self.parse_request():  # its refusals come through send_error below
                return
            if self.request_version == "HTTP/0.9":
                self._refuse(_invalid(400, "HTTP/0.9 requests are not served: send HTTP/1.1"))
                return
            self._serve()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line or version, header lines too long or too many).
        # Whatever is left of the request cannot be framed: the connection ends with this answer.
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        if explain:
            text = f"{text}: {explain}"
        if len(text) > 300:
            text = text[:300] + "..."
        code_ = errors.Code.UNIMPLEMENTED if code == 505 else errors.Code.INVALID_ARGUMENT
        self._refuse(HttpRefusal(code, text, code_))

    def handle_expect_100(self) -> bool:
        return True  # "100 Continue" is sent by _read_body, once the request has passed every check

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._linger_on_close:
                self._linger()

    # -- one request ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        server = self.server
        head = self._head = self.command == "HEAD"
        self._body_unread = True  # until the framing says otherwise
        try:
            if not _METHOD_TOKEN.fullmatch(self.command):
                raise _invalid(400, f"{self.command[:40]!r} is not an HTTP method")
            if not self.path.startswith("/"):
                raise _invalid(400, "the request target must be a path starting with '/'")
            hosts = self.headers.get_all("Host") or []
            if len(hosts) > 1:
                raise _invalid(400, "a request carries one Host header")
            length = self._framing()
            self._body_unread = length != 0
            origins: list[str | None] = [*(self.headers.get_all("Origin") or [])] or [None]
            if len(origins) > 1:
                raise _invalid(400, "a request carries at most one Origin header")
            refusal = server.guard.refusal(
                host=hosts[0] if hosts else None,
                origin=origins[0],
                authorization=self.headers.get("Authorization"),
            )
            if refusal is not None:
                status, message = refusal
                code = errors.Code.UNAUTHENTICATED if status == 401 else errors.Code.PERMISSION_DENIED
                raise HttpRefusal(status, message, code)
            if self.command not in _SERVED:
                if self.command in _KNOWN_NOT_SERVED:
                    raise HttpRefusal(405, f"{self.command} is not served here", errors.Code.UNIMPLEMENTED)
                raise HttpRefusal(501, f"the method {self.command} is not served", errors.Code.UNIMPLEMENTED)
            body = self._read_body(length)
        except HttpRefusal as e:
            if self._body_unread:
                self.close_connection = True
            self._refuse(e)
            return
        environ = self._environ("GET" if head else self.command, body)
        status_out: list[str] = []
        headers_out: list[tuple[str, str]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status_out[:] = [status]
            headers_out[:] = headers

        try:
            result: Iterable[bytes] = server.app(environ, start_response)
            if not status_out:  # WSGI lets an application call start_response with its first chunk
                chunks = iter(result)
                result = itertools.chain([next(chunks, b"")], chunks)
        except Exception as e:  # a bug in the application still answers in its format
            self._refuse(errors.Internal(f"{type(e).__name__}: {e}"))
            return
        try:
            self._write(status_out[0], headers_out, result, head)
        except OSError:
            self.close_connection = True
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _framing(self) -> int | None:
        """The body's length by Content-Length, None for a chunked body; a refusal for anything else."""
        codings = self.headers.get_all("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length")
        if codings:
            self._body_unread = True
            if lengths:
                raise _invalid(400, "a request carries Content-Length or Transfer-Encoding, not both")
            if self.request_version != "HTTP/1.1":
                raise _invalid(400, f"Transfer-Encoding needs HTTP/1.1, not {self.request_version}")
            names = [c.strip().lower() for value in codings for c in value.split(",")]
            if names != ["chunked"]:
                raise HttpRefusal(
                    501,
                    f"Transfer-Encoding {', '.join(codings)!r}: only chunked is served",
                    errors.Code.UNIMPLEMENTED,
                )
            return None
        if not lengths:
            return 0
        values = {v.strip() for value in lengths for v in value.split(",")}
        if len(values) != 1:
            self._body_unread = True
            raise _invalid(400, f"Content-Length {', '.join(lengths)!r} is not one length")
        text = values.pop()
        if not (text.isascii() and text.isdigit()):
            self._body_unread = True
            raise _invalid(400, f"Content-Length {text[:40]!r} is not a number of bytes")
        if len(text) > 18 or int(text) > self.server.max_body:
            self._body_unread = True
            raise _invalid(413, f"the body ({text[:40]} bytes) is over {self.server.max_body} bytes")
        return int(text)

    def _read_body(self, length: int | None) -> bytes:
        if length == 0:
            return b""
        expect = self.headers.get("Expect", "").lower()
        if expect == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        if length is None:
            body = self._read_chunked()
        else:
            body = self.rfile.read(length)
            if len(body) < length:
                raise _invalid(400, f"the body ended after {len(body)} of {length} bytes")
        self._body_unread = False
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total, limit = 0, self.server.max_body
        while True:
            line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
            size_text = line.split(b";", 1)[0].strip()
            if len(line) > _MAX_CHUNK_LINE or not line.endswith(b"\n") or not size_text:
                raise _invalid(400, "a chunk of the chunked body does not start with its size")
            if len(size_text) > 16 or not _HEX.issuperset(size_text):
                raise _invalid(400, f"chunk size {size_text[:40]!r} is not hexadecimal")
            size = int(size_text, 16)
            if total + size > limit:
                raise _invalid(413, f"the chunked body is over {limit} bytes")
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(2) != b"\r\n":
                raise _invalid(400, "a chunk of the chunked body is cut short or not ended by CRLF")
            parts.append(data)
            total += size
        for _ in range(_MAX_TRAILERS):
            line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
            if not line.endswith(b"\n") or len(line) > _MAX_CHUNK_LINE:
                break
        raise _invalid(400, "the trailer of the chunked body is too long or cut short")

    def _environ(self, verb: str, body: bytes) -> dict[str, Any]:
        target, _, query = self.path.partition("?")
        address = self.server.server_address
        environ: dict[str, Any] = {
            "REQUEST_METHOD": verb,
            "RAW_URI": self.path,
            "PATH_INFO": _unquote_latin1(target),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": address[0],
            "SERVER_PORT": str(address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for key, value in self.headers.items():
            if key.lower() in ("content-length", "transfer-encoding"):
                continue  # the body is read: CONTENT_LENGTH says its size
            name = "HTTP_" + key.upper().replace("-", "_")
            environ[name] = f"{environ[name]}, {value}" if name in environ else value
        return environ

    # -- answers ----------------------------------------------------------------------------------------

    def _refuse(self, err: errors.ApiError) -> None:
        if self.close_connection:
            self._linger_on_close = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # an answer always has a status line
        try:
            payload = json.dumps(self.server.error_body(err)).encode()
        except Exception:  # the application's renderer failed: google.rpc.Status still answers
            payload = json.dumps(errors.status_json(err)).encode()
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(payload)))]
        if err.http_status == 401:
            headers.append(("WWW-Authenticate", "Bearer"))
        if err.http_status == 405:
            headers.append(("Allow", _ALLOW))
        status = f"{err.http_status} {_phrase(err.http_status)}"
        try:
            self._write(status, headers, [payload], self._head)
        except OSError:
            self.close_connection = True

    def _write(
        self, status: str, headers: list[tuple[str, str]], result: Iterable[bytes], head: bool
    ) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        sized = any(k.lower() == "content-length" for k, _ in headers)
        chunked = not sized and self.request_version == "HTTP/1.1"
        for key, value in headers:
            if key.lower() == "access-control-allow-origin" and value.strip() == "*":
                continue  # never: a wildcard lets every web page read the answer
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not sized:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            self.wfile.flush()
            return
        for data in result:
            if not data:
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _linger(self) -> None:
        # Closing a socket with unread input makes the kernel send a reset, which can destroy the refusal
        # before the client reads it: stop writing, read (and drop) what the client still sends, then close.
        sock = self.connection
        deadline = time.monotonic() + _LINGER_SECONDS
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            left = _LINGER_BYTES
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                sock.settimeout(wait)
                data = sock.recv(min(65536, left))
                if not data:
                    break
                left -= len(data)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _unquote_latin1(path: str) -> str:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")
