"""The server side of REST: serve servicer objects over proto3 JSON with their ``google.api.http`` rules.

:class:`RestGateway` is a WSGI application; :func:`serve_rest` runs it on 127.0.0.1 in a daemon thread
with the small HTTP/1.1 server of :mod:`bpj.local.servers.http_server` (keep-alive, chunked streams, Host,
Origin and token checks)::

    with serve_rest(FakeJobs()) as server:
        transport = RestTransport(server.url)

Servicers are the generated ``*Servicer`` classes' instances, the same objects a gRPC server or
:class:`~bpj.transport.memory.InMemoryTransport` serves. Errors answer as Google's REST does: the HTTP
status of the code and a ``{"error": {code, message, status, details}}`` body; a server stream is a JSON
array written one element at a time, ended by an ``{"error": ...}`` element when the servicer fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote

from bpj import errors
from bpj.local.servers.guard import bearer_ok
from bpj.local.servers.http_server import DEFAULT_MAX_BODY, RestServer
from bpj.transport.base import Method
from bpj.transport.context import CallContext, check_response
from bpj.transport.http_rules import from_http

__all__ = ["RestGateway", "RestServer", "require_bearer", "serve_rest"]

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
    {"host", "content-length", "content-type", "connection", "accept-encoding", "accept", "expect", "origin"}
)
_JSON = [("Content-Type", "application/json; charset=utf-8")]


class RestGateway:
    """A WSGI application serving ``servicers`` by the HTTP rules of their methods."""

    # How RestServer renders the refusals it makes before the application runs: as this API's errors.
    error_body = staticmethod(errors.status_json)

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
        except RecursionError:  # json's decoder refuses a body nested about 1,000 deep
            return _error_response(start_response, errors.InvalidArgument("the JSON body nests too deeply"))
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


# -- serving -------------------------------------------------------------------------------------------


def serve_rest(
    *servicers: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    extra_names: Iterable[str] = (),
    max_body: int = DEFAULT_MAX_BODY,
) -> RestServer:
    """Serve ``servicers`` over REST on ``host:port`` (0: any free port) in a daemon thread. With ``token``,
    every request must carry ``Authorization: Bearer <token>``, else 401 UNAUTHENTICATED; a ``Host`` that
    does not name the server (``extra_names`` adds names) or a foreign ``Origin`` is 403 PERMISSION_DENIED
    (see :class:`~bpj.local.servers.http_server.RestServer`)."""
    return RestServer(
        RestGateway(*servicers), host, port, token=token, extra_names=extra_names, max_body=max_body
    )


def require_bearer(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: answer 401 with a google.rpc.Status body unless the request carries the token.
    (:class:`RestServer` checks the token itself; this is for running the gateway in another server.)"""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not bearer_ok(environ.get("HTTP_AUTHORIZATION"), token):
            return _error_response(
                start_response, errors.Unauthenticated("a bearer token is required: set BPJ_TOKEN")
            )
        return app(environ, start_response)

    return guarded
