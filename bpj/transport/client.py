"""Bases of the generated clients and servicers: the small amount of behaviour codegen does not write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from bpj import errors
from bpj.transport.base import AsyncTransport, Metadata, Method, RetryPolicy, Service, Transport

if TYPE_CHECKING:
    from google.protobuf.message import Message


class Default:
    """Marker for "use the method's default" (its retry policy), distinct from None ("no retry")."""

    _instance: ClassVar[Default | None] = None

    def __new__(cls) -> Default:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = Default()


class ServiceClient:
    """Calls one service's methods over a transport; subclasses are generated, one per service.

    ``timeout`` is the deadline of one attempt in seconds (the method's default when None);
    ``retry`` is the method's :class:`RetryPolicy` by default, another policy, or None for a single attempt.
    Retries happen only for idempotent methods (see :mod:`bpj.retry`).
    """

    service: ClassVar[Service]

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _unary(
        self,
        method: Method,
        request: Message,
        timeout: float | None,
        metadata: Metadata,
        retry: RetryPolicy | None | Default,
    ) -> Message:
        from bpj.retry import call_with_retry

        _check_request(method, request)
        return call_with_retry(
            lambda t: self.transport.unary(method, request, timeout=t, metadata=metadata),
            method=method,
            policy=_policy(method, retry),
            timeout=_timeout(method, timeout),
        )

    def _server_stream(
        self,
        method: Method,
        request: Message,
        timeout: float | None,
        metadata: Metadata,
        retry: RetryPolicy | None | Default,
    ) -> Iterator[Message]:
        # A stream is not retried here: only its reader knows where to resume (e.g. ReadRows' offset).
        _check_request(method, request)
        return self.transport.server_stream(
            method, request, timeout=_timeout(method, timeout), metadata=metadata
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncServiceClient:
    """The asyncio twin of :class:`ServiceClient`: ``await client.get_x(request)``; streams are async
    iterators. Same defaults, same retries (sleeping with ``asyncio.sleep``), same errors."""

    service: ClassVar[Service]

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

    async def _unary(
        self,
        method: Method,
        request: Message,
        timeout: float | None,
        metadata: Metadata,
        retry: RetryPolicy | None | Default,
    ) -> Message:
        from bpj.retry import call_with_retry_async

        _check_request(method, request)
        return await call_with_retry_async(
            lambda t: self.transport.unary(method, request, timeout=t, metadata=metadata),
            method=method,
            policy=_policy(method, retry),
            timeout=_timeout(method, timeout),
        )

    def _server_stream(
        self,
        method: Method,
        request: Message,
        timeout: float | None,
        metadata: Metadata,
        retry: RetryPolicy | None | Default,
    ) -> AsyncIterator[Message]:
        _check_request(method, request)
        return self.transport.server_stream(
            method, request, timeout=_timeout(method, timeout), metadata=metadata
        )

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _policy(method: Method, retry: RetryPolicy | None | Default) -> RetryPolicy | None:
    return method.retry if isinstance(retry, Default) else retry


def _timeout(method: Method, timeout: float | None) -> float | None:
    return timeout if timeout is not None else method.timeout


def _check_request(method: Method, request: Any) -> None:
    name = getattr(getattr(request, "DESCRIPTOR", None), "full_name", None)
    if name != method.request_type:
        raise errors.UsageError(
            f"{method.rpc_name} takes a {method.request_type} (from bpj.types), got {type(request).__name__}"
        )
    if type(request) is not method.request_class:
        raise errors.UsageError(
            f"{method.rpc_name} got a {name} built outside bpj's descriptor pool (for instance the "
            "official library's class); build it with bpj.types, or convert with "
            "bpj.types.X.FromString(msg.SerializeToString())"
        )


class ServicerBase:
    """Base of generated servicers. A servicer method takes ``(request, context)`` and returns the response
    (an iterator of them for server streaming); it signals errors by raising :class:`bpj.errors.ApiError`
    or with ``context.abort(code, message)``. The same servicer runs under a real gRPC server, the REST
    gateway and the in-memory transport."""

    service: ClassVar[Service]

    def unimplemented(self, name: str) -> errors.ApiError:
        return errors.Unimplemented(f"{self.service.name}.{name} is not implemented by {type(self).__name__}")
