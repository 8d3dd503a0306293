"""The wire contract every transport implements, and the plain data that describes an RPC.

A transport knows how to move one request message and get back one response (``unary``) or an
iterator of responses (``server_stream``). Everything that is specific to an RPC (its gRPC path,
its HTTP rules, its default deadline and retry) is data in a :class:`Method`, written by
``python -m codegen`` into ``bpj/_gen/``. Transports never know about Vertex AI or BigQuery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from google.protobuf.message import Message

Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class HttpRule:
    """One ``google.api.http`` binding: ``verb`` is get/put/post/delete/patch, ``template`` a URI template
    such as ``/v1/{name=projects/*/locations/*/batchPredictionJobs/*}``, ``body`` is "", "*" or a field."""

    verb: str
    template: str
    body: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts, bounded by ``deadline`` seconds overall.

    ``codes`` are the canonical status names (``"UNAVAILABLE"``...) that are worth another attempt.
    """

    initial: float = 0.1
    maximum: float = 60.0
    multiplier: float = 1.3
    deadline: float = 600.0
    codes: frozenset[str] = frozenset({"UNAVAILABLE"})
    # How long to keep trying an endpoint that has never accepted a connection (errors.Unreachable).
    unreachable_deadline: float = 10.0


@dataclass(frozen=True)
class Method:
    """Everything a transport needs to call one RPC, and nothing about how it is called."""

    service: str
    name: str
    request_type: str
    response_type: str
    server_streaming: bool
    http: tuple[HttpRule, ...]
    timeout: float | None
    retry: RetryPolicy | None
    # Safe to send twice: a lost reply can be retried without a second side effect.
    idempotent: bool
    # Resolves a full message name to its class; bound by the generated module to bpj's private pool.
    resolve: Callable[[str], type[Message]] = field(compare=False, repr=False)
    # Turns one response's wire bytes into what the call returns; None: the response class's FromString.
    # A variant of a method (``dataclasses.replace(METHOD, decode=...)``) may read responses lazily: every
    # transport hands ``decode`` the response's wire form (REST and in-memory serialize the message first).
    decode: Callable[[bytes], Any] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        """The gRPC path, ``/package.Service/Method``."""
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def rpc_name(self) -> str:
        """``JobService.GetBatchPredictionJob``: how errors and logs name the RPC."""
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"

    @property
    def request_class(self) -> type[Message]:
        return self.resolve(self.request_type)

    @property
    def response_class(self) -> type[Message]:
        return self.resolve(self.response_type)

    @property
    def response_decoder(self) -> Callable[[bytes], Any]:
        """Turns one response's wire bytes into what the calls of this method return."""
        return self.response_class.FromString if self.decode is None else self.decode

    @property
    def cache_key(self) -> Any:
        """What a transport may key state bound to this method on (its path; a decoding variant apart)."""
        return self.path if self.decode is None else (self.path, self.decode)


@dataclass(frozen=True)
class Service:
    """A service: its full name and its methods, in declaration order."""

    name: str
    methods: tuple[Method, ...]

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"{self.name} has no method {name!r}")


@runtime_checkable
class Transport(Protocol):
    """Moves messages for a :class:`Method`. Implementations: gRPC, REST, in-memory.

    Every implementation raises :class:`bpj.errors.ApiError` subclasses, identical for the same server
    error whatever the transport, and honours ``timeout`` (seconds, for the whole call) the same way.
    Retries are not a transport's business: :mod:`bpj.retry` wraps calls.
    """

    def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message: ...

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[Message]: ...

    def close(self) -> None: ...


class WithMetadata:
    """A transport that adds fixed metadata (e.g. ``authorization``) to every call of another."""

    def __init__(self, inner: Transport, metadata: Metadata) -> None:
        self.inner = inner
        self.metadata = tuple(metadata)

    def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        return self.inner.unary(method, request, timeout=timeout, metadata=(*self.metadata, *metadata))

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[Message]:
        return self.inner.server_stream(
            method, request, timeout=timeout, metadata=(*self.metadata, *metadata)
        )

    def close(self) -> None:
        self.inner.close()


@runtime_checkable
class AsyncTransport(Protocol):
    """The asyncio twin of :class:`Transport`: same methods, same errors, same deadlines."""

    async def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message: ...

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncIterator[Message]: ...

    async def close(self) -> None: ...
