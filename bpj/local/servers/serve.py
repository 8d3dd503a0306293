"""The server side of gRPC: bpj servicers behind a real ``grpc.Server``.

    with serve_grpc(FakeJobs(), FakeBigQueryRead()) as server:
        client = JobServiceClient(GrpcTransport(server.endpoint))

A servicer method gets ``(request, context)`` with the real ``grpc.ServicerContext`` (which also takes
bpj's :class:`~bpj.errors.Code` in ``abort``/``set_code``). An
:class:`bpj.errors.ApiError` it raises is sent as a status with ``grpc-status-details-bin``, so the
client gets the same class, message and details as from the in-memory transport; ``context.abort(...)``
works as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NamedTuple, NoReturn

import grpc

from bpj import errors
from bpj.local.servers.guard import bearer_ok
from bpj.transport.base import Method
from bpj.transport.context import check_response
from bpj.transport.grpc import KEEPALIVE_OPTIONS, MESSAGE_SIZE_OPTIONS, STATUS_DETAILS_KEY

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    *MESSAGE_SIZE_OPTIONS,
    # Accept the keepalive pings bpj's channels send (every 30 s, also between calls).
    ("grpc.keepalive_permit_without_calls", 1),
    (
        "grpc.http2.min_recv_ping_interval_without_data_ms",
        min(v for k, v in KEEPALIVE_OPTIONS if k.endswith("time_ms")),
    ),
    # Two servers on one port would split the calls between them; fail to bind instead.
    ("grpc.so_reuseport", 0),
)

_STATUS_CODE = {c.value[0]: c for c in grpc.StatusCode}


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, Any], ...]


grpc.Status.register(_Status)


def _grpc_code(code: object) -> grpc.StatusCode:
    if isinstance(code, grpc.StatusCode):
        return code
    return _STATUS_CODE[int(errors.Code.of(code))]


class ServicerContext:
    """The real ``grpc.ServicerContext``, also taking a :class:`bpj.errors.Code` (or a code's name or number)
    where gRPC wants a ``grpc.StatusCode``, as the in-memory and REST contexts do; everything else is gRPC's."""

    __slots__ = ("grpc_context",)

    def __init__(self, grpc_context: grpc.ServicerContext) -> None:
        self.grpc_context = grpc_context

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grpc_context, name)

    def abort(self, code: object, details: str) -> NoReturn:
        self.grpc_context.abort(_grpc_code(code), details)
        raise AssertionError("grpc's abort returned")  # pragma: no cover

    def abort_with_status(self, status: Any) -> NoReturn:
        trailing = tuple(getattr(status, "trailing_metadata", None) or ())
        self.grpc_context.abort_with_status(_Status(_grpc_code(status.code), status.details, trailing))
        raise AssertionError("grpc's abort_with_status returned")  # pragma: no cover

    def set_code(self, code: object) -> None:
        self.grpc_context.set_code(_grpc_code(code))


grpc.ServicerContext.register(ServicerContext)


# gRPC clients refuse trailers over 8 KiB (the message travels twice: grpc-message, and inside
# grpc-status-details-bin): a long message would turn any error into RESOURCE_EXHAUSTED. Bound both.
MAX_STATUS_MESSAGE = 1000
MAX_STATUS_DETAILS = 4096


def grpc_status(err: errors.ApiError) -> grpc.Status:
    """The ``grpc.Status`` (for ``context.abort_with_status``) of an error, with its details, kept within
    what every gRPC client accepts: a message cut at MAX_STATUS_MESSAGE characters (saying so), details
    left out when they would still be too large."""
    message = err.message
    if len(message) > MAX_STATUS_MESSAGE:
        cut = len(message) - MAX_STATUS_MESSAGE
        message = f"{message[:MAX_STATUS_MESSAGE]}... ({cut} more characters)"
        err = errors.error_class(err.code)(
            message, rpc=err.rpc, resource=err.resource, details=err.details, code=err.code
        )
    details = errors.status_bytes(err)
    if len(details) > MAX_STATUS_DETAILS:
        bare = errors.error_class(err.code)(message, rpc=err.rpc, resource=err.resource, code=err.code)
        details = errors.status_bytes(bare)
    status = _Status(_STATUS_CODE[int(err.code)], message, ((STATUS_DETAILS_KEY, details),))
    return status  # type: ignore[return-value]


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def _unary_behaviour(method: Method, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = fn(request, ServicerContext(context))
            check_response(method, response)
        except errors.ApiError as e:
            context.abort_with_status(grpc_status(e))
        return response

    return behaviour


def _stream_behaviour(method: Method, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Iterator[Any]]:
    def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        responses = None
        try:
            responses = fn(request, ServicerContext(context))
            for response in responses:
                check_response(method, response)
                yield response
        except errors.ApiError as e:
            context.abort_with_status(grpc_status(e))
        finally:
            # gRPC drops a cancelled call's iterator; close the servicer's generator now, not at GC.
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    return behaviour


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """``{method name: handler}`` for every method of ``servicer.service``."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in servicer.service.methods:
        fn = getattr(servicer, method.name)
        deserialize = method.request_class.FromString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream_behaviour(method, fn),
                request_deserializer=deserialize,
                response_serializer=_serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary_behaviour(method, fn), request_deserializer=deserialize, response_serializer=_serialize
            )
    return handlers


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, handlers: list[grpc.GenericRpcHandler]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        for h in self._handlers:
            found = h.service(handler_call_details)
            if found is not None:
                return found
        return None


def _by_service(servicers: tuple[Any, ...]) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    if not servicers:
        raise errors.UsageError("give at least one servicer")
    out: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for s in servicers:
        service = getattr(s, "service", None)
        if service is None or not hasattr(service, "methods"):
            raise errors.UsageError(
                f"{type(s).__name__} is not a bpj servicer (subclass one of bpj._gen.services' *Servicer classes)"
            )
        if service.name in out:
            raise errors.UsageError(f"two servicers for {service.name}")
        out[service.name] = method_handlers(s)
    return out


def grpc_handler(*servicers: Any) -> grpc.GenericRpcHandler:
    """One ``grpc.GenericRpcHandler`` serving every method of each servicer's service."""
    generic = [grpc.method_handlers_generic_handler(name, h) for name, h in _by_service(servicers).items()]
    return generic[0] if len(generic) == 1 else _Handlers(generic)


class GrpcServer:
    """A running server: ``port``, ``endpoint`` (``host:port``), ``stop()``; a context manager."""

    def __init__(self, server: grpc.Server, host: str, port: int, tls: bool) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.tls = tls
        self._stopped = threading.Event()

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Stops accepting calls; calls in flight get ``grace`` seconds (None: cancelled now). Waits."""
        if not self._stopped.is_set():
            self._stopped.set()
            self.server.stop(grace).wait()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)

    def __enter__(self) -> GrpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GrpcServer({self.endpoint!r}, tls={self.tls})"


class BearerToken(grpc.ServerInterceptor):
    """Refuses calls that do not carry ``authorization: Bearer <token>`` (UNAUTHENTICATED); the scheme in
    any case, the token compared in constant time (:func:`bpj.local.servers.guard.bearer_ok`)."""

    def __init__(self, token: str) -> None:
        self._token = token

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required: set BPJ_TOKEN")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and bearer_ok(value, self._token):
                return continuation(handler_call_details)
        return self._refusal


def serve_grpc(
    *servicers: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: tuple[bytes, bytes] | None = None,
    max_workers: int = 16,
    options: Any = (),
    token: str | None = None,
) -> GrpcServer:
    """Starts a gRPC server for ``servicers`` on ``host:port`` (port 0: a free one) and returns it.

    ``tls`` is ``(key_pem, cert_pem)`` (see :func:`bpj.local.servers.tls.self_signed_cert`); without it the
    server is plaintext. ``max_workers`` bounds the calls served at once (a stream holds a worker). With
    ``token``, every call must carry ``authorization: Bearer <token>``, else UNAUTHENTICATED.
    """
    by_service = _by_service(servicers)
    merged = dict(SERVER_OPTIONS)
    merged.update(dict(options))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bpj-grpc"),
        handlers=[grpc.method_handlers_generic_handler(n, h) for n, h in by_service.items()],
        options=list(merged.items()),
        interceptors=[BearerToken(token)] if token else None,
    )
    add_registered = getattr(server, "add_registered_method_handlers", None)
    if add_registered is not None:  # grpcio >= 1.63: a path lookup without the generic handlers
        for name, handlers in by_service.items():
            add_registered(name, handlers)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            key_pem, cert_pem = tls
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    except RuntimeError as e:
        raise errors.UsageError(f"cannot listen on {address}: {e}") from None
    if not bound:
        raise errors.UsageError(f"cannot listen on {address} (in use?)")
    server.start()
    return GrpcServer(server, host, bound, tls is not None)
