"""The server side of REST: serve servicer objects over proto3 JSON with their ``google.api.http`` rules.

:class:`RestGateway` is a WSGI application; :func:`serve_rest` runs it on 127.0.0.1 in a daemon thread
with a small HTTP/1.1 server (keep-alive, chunked streams)::

    with serve_rest(FakeJobs()) as server:
        transport = RestTransport(server.url)

Servicers are the generated ``*Servicer`` classes' instances, the same objects a gRPC server or
:class:`~bpj.transport.memory.InMemoryTransport` serves. Errors answer as Google's REST does: the HTTP
status of the code and a ``{"error": {code, message, status, details}}`` body; a server stream is a JSON
array written one element at a time, ended by an ``{"error": ...}`` element when the servicer fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote

from bpj import errors
from bpj.transport.base import Method
from bpj.transport.context import CallContext, check_response
from bpj.transport.http_rules import from_http

StartResponse = Callable[..., Any]

# Query parameters that every Google API accepts and that are not request fields.
_SYSTEM_PARAMS = frozenset(
    {
        "alt",
        "key",
        "prettyPrint",
        "fields",
        "access_token",
        "quotaUser",
        "callback",
        "upload_protocol",
        "uploadType",
    }
)
# HTTP framing, not call metadata.
_NOT_METADATA = frozenset(
    {"host", "content-length", "content-type", "connection", "accept-encoding", "accept"}
)
_JSON = [("Content-Type", "application/json; charset=utf-8")]


class RestGateway:
    """A WSGI application serving ``servicers`` by the HTTP rules of their methods."""

    def __init__(self, *servicers: Any) -> None:
        if not servicers:
            raise errors.UsageError("RestGateway needs at least one servicer")
        self.routes: list[tuple[Method, Callable[[Any, CallContext], Any]]] = []
        for servicer in servicers:
            service = getattr(servicer, "service", None)
            if service is None:
                raise errors.UsageError(
                    f"{type(servicer).__name__} is not a generated *Servicer (no .service)"
                )
            for method in service.methods:
                if method.http:
                    self.routes.append((method, getattr(servicer, method.name)))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        verb = environ["REQUEST_METHOD"]
        path = _raw_path(environ)
        query = [(k, v) for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)]
        options = {v for k, v in query if k == "$alt"}
        query = [(k, v) for k, v in query if not k.startswith("$") and k not in _SYSTEM_PARAMS]
        int_enums = any("enum-encoding=int" in v for v in options)
        body = _read_body(environ)
        try:
            route = self._route(verb, path, query, body)
        except errors.UsageError as e:
            return _error_response(start_response, errors.InvalidArgument(str(e)))
        if route is None:
            return _error_response(start_response, errors.NotFound(f"no RPC serves {verb} {path}"))
        method, handler, request = route
        context = CallContext(_metadata(environ), _timeout(environ), peer=_peer(environ))
        if method.server_streaming:
            return self._stream(method, handler, request, context, int_enums, start_response)
        try:
            try:
                response = handler(request, context)
                _check(context)
                payload = _to_json(method, response, int_enums)
            finally:
                context.finish()
        except Exception as e:
            return _error_response(start_response, _as_api_error(e))
        start_response("200 OK", [*_JSON, ("Content-Length", str(len(payload)))])
        return [payload]

    def _route(
        self, verb: str, path: str, query: list[tuple[str, str]], body: bytes
    ) -> tuple[Method, Callable[[Any, CallContext], Any], Any] | None:
        # Two methods may share a template (BigQueryRead's ReadRows and SplitReadStream do): the first whose
        # fields accept the query and body wins; when none does, the first one's complaint is the answer.
        refused: errors.UsageError | None = None
        for method, handler in self.routes:
            try:
                request = from_http(method, verb, path, query, body)
            except errors.UsageError as e:
                refused = refused or e
                continue
            if request is not None:
                return method, handler, request
        if refused is not None:
            raise refused
        return None

    def _stream(
        self,
        method: Method,
        handler: Callable[[Any, CallContext], Any],
        request: Any,
        context: CallContext,
        int_enums: bool,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        # The first message is read before answering, so an error before it gets its own HTTP status.
        try:
            responses = iter(handler(request, context))
            first = next(responses, None)
            first_json = None if first is None else _to_json(method, first, int_enums)
            if first is None:
                _check(context)
        except Exception as e:
            context.finish()
            return _error_response(start_response, _as_api_error(e))
        start_response("200 OK", list(_JSON))
        return _StreamBody(method, responses, first_json, context, int_enums)


class _StreamBody:
    """The JSON array of a server stream; closing it (the client went away) closes the servicer's iterator."""

    def __init__(
        self,
        method: Method,
        responses: Iterator[Any],
        first: bytes | None,
        context: CallContext,
        int_enums: bool,
    ) -> None:
        self._method, self._responses, self._first = method, responses, first
        self._context, self._int_enums = context, int_enums

    def __iter__(self) -> Iterator[bytes]:
        if self._first is None:
            yield b"[]"
            return
        yield b"[" + self._first
        try:
            for response in self._responses:
                _check(self._context)
                yield b",\r\n" + _to_json(self._method, response, self._int_enums)
            _check(self._context)
        except Exception as e:
            yield b",\r\n" + json.dumps(errors.status_json(_as_api_error(e))).encode()
        yield b"]"

    def close(self) -> None:
        self._context.cancelled = True
        close = getattr(self._responses, "close", None)
        if close is not None:
            close()
        self._context.finish()


def _check(context: CallContext) -> None:
    err = context.error_set()
    if err is not None:
        raise err
    if context.expired():
        raise errors.DeadlineExceeded("Deadline Exceeded")


def _to_json(method: Method, response: Any, int_enums: bool) -> bytes:
    from google.protobuf import json_format

    check_response(method, response)
    descriptor = response.DESCRIPTOR
    data = json_format.MessageToDict(
        response,
        preserving_proto_field_name=False,
        use_integers_for_enums=int_enums,
        descriptor_pool=descriptor.file.pool,
    )
    return json.dumps(data).encode()


def _as_api_error(e: Exception) -> errors.ApiError:
    if isinstance(e, errors.ApiError):
        return e
    if isinstance(e, errors.UsageError):
        return errors.InvalidArgument(str(e))
    return errors.Internal(str(e) or type(e).__name__)


def _error_response(start_response: StartResponse, err: errors.ApiError) -> list[bytes]:
    payload = json.dumps(errors.status_json(err)).encode()
    status = f"{err.http_status} {err.code.name}"
    start_response(status, [*_JSON, ("Content-Length", str(len(payload)))])
    return [payload]


def _raw_path(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw).split("?", 1)[0]
    # PATH_INFO is decoded (as latin-1, per PEP 3333): encode it back; an escaped '/' cannot be told apart.
    return quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/:@!$&'()*+,;=~")


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _metadata(environ: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            if name not in _NOT_METADATA:
                out.append((name, value))
    return out


def _timeout(environ: dict[str, Any]) -> float | None:
    text = environ.get("HTTP_X_SERVER_TIMEOUT")
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        return None


def _peer(environ: dict[str, Any]) -> str:
    return f"ipv4:{environ.get('REMOTE_ADDR', '')}:{environ.get('REMOTE_PORT', '')}"


# -- a small HTTP/1.1 server for WSGI applications -----------------------------------------------------


class RestServer:
    """A running :class:`RestGateway`; ``url`` is ``http://127.0.0.1:PORT``. Stop it with :meth:`stop`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _HttpServer((host, port), _Handler)
        self._server.app = app
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"bpj-rest-{self.port}", daemon=True
        )
        self._thread.start()

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


def serve_rest(
    *servicers: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> RestServer:
    """Serve ``servicers`` over REST on ``host:port`` (0: any free port) in a daemon thread. With ``token``,
    every request must carry ``Authorization: Bearer <token>``, else 401 UNAUTHENTICATED."""
    app: Callable[..., Iterable[bytes]] = RestGateway(*servicers)
    return RestServer(require_bearer(app, token) if token else app, host, port)


def require_bearer(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: answer 401 with a google.rpc.Status body unless the request carries the token."""
    expected = f"Bearer {token}"

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != expected:
            return _error_response(
                start_response, errors.Unauthenticated("a bearer token is required: set BPJ_TOKEN")
            )
        return app(environ, start_response)

    return guarded


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    app: Callable[..., Iterable[bytes]]

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

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        target, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "RAW_URI": self.path,
            "PATH_INFO": _unquote_latin1(target),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
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
            name = "HTTP_" + key.upper().replace("-", "_")
            environ[name] = f"{environ[name]}, {value}" if name in environ else value
        headers_out: list[tuple[str, str]] = []
        status_out: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status_out[:] = [status]
            headers_out[:] = headers

        result = self.server.app(environ, start_response)
        try:
            self._write(status_out[0], headers_out, result)
        except OSError:
            self.close_connection = True
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _write(self, status: str, headers: list[tuple[str, str]], result: Iterable[bytes]) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        sized = any(k.lower() == "content-length" for k, _ in headers)
        chunked = not sized and self.request_version == "HTTP/1.1"
        for key, value in headers:
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not sized:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for data in result:
            if not data:
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def _unquote_latin1(path: str) -> str:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")
