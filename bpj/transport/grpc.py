"""The gRPC transport: one channel per transport, one cached multicallable per RPC.

    transport = GrpcTransport("us-central1-aiplatform.googleapis.com", credentials=creds)  # TLS, port 443
    transport = GrpcTransport("127.0.0.1:8500")                 # a local server: plaintext
    transport = GrpcTransport("localhost:8501", tls=True, root_certificates=cert_pem)

TLS rule: an endpoint on a loopback address (127.0.0.0/8, ::1, localhost) is plaintext unless ``tls=True``
or ``root_certificates`` are given; every other endpoint is TLS. Credentials (google-auth) are sent only
over TLS. Every ``grpc.RpcError`` becomes a :class:`bpj.errors.ApiError` in :func:`api_error`, with the
details of ``grpc-status-details-bin`` (RetryInfo, ErrorInfo...) kept.

This module imports grpc at the top; ``import bpj`` never imports it.
"""

from __future__ import annotations

import contextlib
import platform
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc

from bpj import errors
from bpj._version import __version__
from bpj.transport import http_rules
from bpj.transport.base import Metadata, Method
from bpj.transport.endpoints import parse_endpoint
from bpj.transport.http_rules import ROUTING_KEY, routing_params

if TYPE_CHECKING:
    from google.protobuf.message import Message

USER_AGENT = f"bpj/{__version__}"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
API_CLIENT_KEY = "x-goog-api-client"

# Shared with bpj.local.servers.serve: messages of any size (a ReadRows response can carry many MB), and
# keepalive pings that notice a dead connection on a long-lived, reused channel.
MESSAGE_SIZE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)
KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def channel_options(user_agent: str = USER_AGENT, extra: Any = ()) -> list[tuple[str, Any]]:
    """The options bpj opens a channel with; ``extra`` options (a sequence of pairs) override them."""
    merged = dict(MESSAGE_SIZE_OPTIONS + KEEPALIVE_OPTIONS)
    merged["grpc.primary_user_agent"] = user_agent
    merged.update(dict(extra))
    return list(merged.items())


# -- errors -------------------------------------------------------------------------------------------


def api_error(error: grpc.RpcError, method: Method, request: Message | None) -> errors.ApiError:
    """The ApiError for a failed call: its code and message, and the google.rpc.Status details that the
    server sent in ``grpc-status-details-bin``."""
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or ""
    trailing_fn = getattr(error, "trailing_metadata", None)
    trailing = (trailing_fn() if callable(trailing_fn) else None) or ()
    detail_dicts: list[dict[str, Any]] = []
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            from google.protobuf.message import DecodeError
            from google.rpc import status_pb2

            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                continue
            detail_dicts = errors.details_from_any(status.details)
            message = message or status.message
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and message in _GRPC_DEADLINE_WORDS:
        message = "Deadline Exceeded"  # the words the other transports use for a deadline the client set
    return errors.from_status(
        code,
        message,
        detail_dicts,
        rpc=method.rpc_name if method else "",
        resource=http_rules.resource_of(method, request) if method and request is not None else "",
    )


def failed_call(err: errors.ApiError, reached: bool, endpoint: str) -> tuple[errors.ApiError, bool]:
    """The error to raise for a failed call, and whether the endpoint has now answered the transport: any
    error but a failure to connect came from the server. A failure to connect to an endpoint that never
    answered becomes :class:`bpj.errors.Unreachable`."""
    words = err.message.lower()
    if not isinstance(err, errors.Unavailable) or not any(w in words for w in _CONNECT_FAILED_WORDS):
        return err, True
    return (err if reached else errors.Unreachable.of(err, endpoint)), reached


# How grpc-core words a failure to open any connection (refused, no route, no such host).
_CONNECT_FAILED_WORDS = ("failed to connect to all addresses", "dns resolution failed")
# How grpc-core words a deadline it enforced itself, before and during a stream.
_GRPC_DEADLINE_WORDS = frozenset({"Deadline Exceeded", "Stream removed (Deadline Exceeded)"})


@contextlib.contextmanager
def mapped_errors(method: Method, request: Message | None) -> Iterator[None]:
    """Turns a ``grpc.RpcError`` raised inside into the matching :class:`bpj.errors.ApiError`."""
    try:
        yield
    except grpc.RpcError as e:
        raise api_error(e, method, request) from None


# -- request metadata -----------------------------------------------------------------------------------


class BoundRpc(NamedTuple):
    call: Any  # a grpc.UnaryUnaryMultiCallable or UnaryStreamMultiCallable
    routes: bool  # the method has path variables to send as x-goog-request-params


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


# -- channels -----------------------------------------------------------------------------------------------

Credentials = Any  # a google.auth.credentials.Credentials, or a zero-argument callable returning one


def channel_credentials(root_certificates: bytes | None, credentials: Credentials) -> grpc.ChannelCredentials:
    """TLS channel credentials, carrying google-auth ``credentials`` (or what a zero-argument callable
    returns) on every call when given. Serves ``grpc`` and ``grpc.aio`` channels alike."""
    channel_creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    credentials = credentials() if callable(credentials) else credentials
    if credentials is None:
        return channel_creds
    import google.auth.credentials
    import google.auth.transport.grpc
    import google.auth.transport.requests

    credentials = google.auth.credentials.with_scopes_if_required(
        credentials, None, default_scopes=[CLOUD_PLATFORM_SCOPE]
    )
    plugin = google.auth.transport.grpc.AuthMetadataPlugin(
        credentials, google.auth.transport.requests.Request()
    )
    return grpc.composite_channel_credentials(channel_creds, grpc.metadata_call_credentials(plugin))


def multicallable(channel: Any, method: Method) -> Any:
    """The multicallable of ``method`` on a ``grpc.Channel`` or a ``grpc.aio.Channel`` (same factories)."""
    factory = channel.unary_stream if method.server_streaming else channel.unary_unary
    deserialize = method.response_decoder
    try:
        return factory(method.path, _serialize, deserialize, _registered_method=True)
    except TypeError:  # grpcio before registered methods
        return factory(method.path, _serialize, deserialize)


# -- the transport ----------------------------------------------------------------------------------------


class GrpcTransport:
    """A :class:`bpj.transport.base.Transport` over one gRPC channel, opened at the first call.

    ``credentials`` is a google-auth Credentials object, or a zero-argument callable returning one (called
    once, at the first call; ``bpj.config`` resolves application default credentials this way). ``options``
    are extra channel options (pairs) that override bpj's. ``metadata`` given to a call is sent along with
    the routing header and ``x-goog-api-client``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Credentials = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        options: Any = (),
        user_agent: str = USER_AGENT,
    ) -> None:
        parsed = parse_endpoint(endpoint)
        if tls is not None and parsed.scheme_tls is not None and tls != parsed.scheme_tls:
            raise errors.UsageError(
                f"endpoint {endpoint!r} says tls={parsed.scheme_tls} but tls={tls} was given"
            )
        if tls is False and root_certificates is not None:
            raise errors.UsageError("root_certificates need TLS; drop tls=False")
        if tls is None:
            tls = parsed.tls(root_certificates)
        port = parsed.port
        if port is None:
            if not tls:
                raise errors.UsageError(f"endpoint {endpoint!r} needs a port, e.g. {parsed.target(8500)}")
            port = 443
        self.endpoint = endpoint
        self.target = parsed.target(port)
        self.tls = tls
        self.root_certificates = root_certificates
        self.credentials = credentials
        self.options = channel_options(user_agent, options)
        self._api_client = f"gl-python/{platform.python_version()} grpc/{grpc.__version__} bpj/{__version__}"
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._rpcs: dict[Any, BoundRpc] = {}
        self._closed = False
        self.reached = False  # a call has had an answer from the endpoint (see failed_call)

    @classmethod
    def from_channel(cls, channel: grpc.Channel, *, target: str = "<channel>") -> GrpcTransport:
        """A transport over a channel you opened (your options, credentials, interceptors);
        :meth:`close` closes it. ``target`` only names it in ``repr``."""
        self = cls("127.0.0.1:1")
        self.endpoint = self.target = target
        self._channel = channel
        return self

    def __repr__(self) -> str:
        return f"GrpcTransport({self.target!r}, tls={self.tls})"

    # -- channel and multicallables ----------------------------------------------------------------------
    def _open(self) -> grpc.Channel:
        if not self.tls:
            return grpc.insecure_channel(self.target, options=self.options)
        creds = channel_credentials(self.root_certificates, self.credentials)
        return grpc.secure_channel(self.target, creds, options=self.options)

    def _rpc(self, method: Method) -> BoundRpc:
        key = method.cache_key
        rpc = self._rpcs.get(key)
        if rpc is not None:
            return rpc
        with self._lock:
            rpc = self._rpcs.get(key)
            if rpc is not None:
                return rpc
            if self._closed:
                raise errors.UsageError("this transport is closed")
            if self._channel is None:
                self._channel = self._open()
            rpc = self._rpcs[key] = BoundRpc(multicallable(self._channel, method), bool(method.http))
            return rpc

    def call_metadata(
        self, method: Method, rpc: BoundRpc, request: Message, metadata: Metadata
    ) -> list[tuple[str, Any]]:
        out = [(k.lower(), v) for k, v in metadata]
        keys = {k for k, _ in out}
        if ROUTING_KEY not in keys and rpc.routes:
            params = routing_params(method, request)
            if params:
                out.append((ROUTING_KEY, params))
        if API_CLIENT_KEY not in keys:
            out.append((API_CLIENT_KEY, self._api_client))
        return out

    # -- Transport ----------------------------------------------------------------------------------------
    def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        rpc = self._rpc(method)
        try:
            with mapped_errors(method, request):
                response = rpc.call(
                    request, timeout=timeout, metadata=self.call_metadata(method, rpc, request, metadata)
                )
        except errors.ApiError as e:
            err, self.reached = failed_call(e, self.reached, self.endpoint)
            raise err from None
        self.reached = True
        return response

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> ResponseStream:
        rpc = self._rpc(method)
        with mapped_errors(method, request):
            call = rpc.call(
                request, timeout=timeout, metadata=self.call_metadata(method, rpc, request, metadata)
            )
        return ResponseStream(call, method, request)

    def close(self) -> None:
        """Closes the channel; calls in flight end with CANCELLED. Later calls raise UsageError."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
            self._rpcs.clear()
        if channel is not None:
            channel.close()

    def __enter__(self) -> GrpcTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResponseStream:
    """The responses of a server-streaming call. Closing it (``close()``, leaving a ``with`` block, or
    dropping the last reference) before the end cancels the call, so the server stops sending."""

    def __init__(self, call: Any, method: Method, request: Message) -> None:
        self._call = call
        self._method = method
        self._request = request
        self._done = False

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Message:
        if self._done:
            raise StopIteration
        try:
            with mapped_errors(self._method, self._request):
                return next(self._call)
        except BaseException:
            # StopIteration (the end), an ApiError or an interrupt: the call is over either way.
            self.close()
            raise

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._call.cancel()

    def cancel(self) -> None:
        self.close()

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        """The server's initial metadata (waits for it)."""
        return tuple(self._call.initial_metadata() or ())

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        """The server's trailing metadata (waits for the end of the call)."""
        return tuple(self._call.trailing_metadata() or ())

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
