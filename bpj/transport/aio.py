"""The asyncio transports: twins of the gRPC, REST and in-memory transports, for ``AsyncServiceClient``.

    jobs = AsyncJobServiceClient(AsyncGrpcTransport("127.0.0.1:8500"))
    job = await jobs.get_batch_prediction_job(request)
    async for response in reads.read_rows(request): ...

Each twin keeps its sync sibling's rules by using it: the endpoint, TLS and credential rules, the metadata
(routing header, ``x-goog-api-client``), the errors (same class, message, RPC, resource and details) and
the deadlines are those of :class:`~bpj.transport.grpc.GrpcTransport`,
:class:`~bpj.transport.rest.RestTransport` and :class:`~bpj.transport.memory.InMemoryTransport`.

- :class:`AsyncGrpcTransport` runs on ``grpc.aio``; its channel is opened in the running loop at the first
  call and is bound to that loop.
- :class:`AsyncRestTransport` runs the sync REST transport in a bounded pool of worker threads it owns (no
  asyncio HTTP dependency); a stream is read by a thread of its own into a bounded buffer.
- :class:`AsyncInMemoryTransport` awaits ``async def`` servicer methods (and iterates async generators)
  directly, and runs plain servicer methods in a worker thread so a blocking one does not block the loop.

A server stream is an :class:`AsyncResponseStream`: an async iterator that starts the call at its first
``__anext__``; ``aclose()`` (or ``async with``, or dropping it) before the end cancels the call, and the
server side ends.

This module imports grpc and requests at the top; ``import bpj`` never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
import grpc.aio

from bpj import errors
from bpj.transport import http_rules
from bpj.transport.base import Metadata, Method
from bpj.transport.context import CallContext
from bpj.transport.grpc import (
    USER_AGENT,
    BoundRpc,
    Credentials,
    GrpcTransport,
    channel_credentials,
    failed_call,
    mapped_errors,
    multicallable,
)
from bpj.transport.memory import Handler, InMemoryTransport, with_routing
from bpj.transport.rest import RestTransport

if TYPE_CHECKING:
    import requests
    from google.protobuf.message import Message

T = TypeVar("T")

# What every transport says when a call's deadline passes (gRPC's words; REST and in-memory use them too).
DEADLINE_MESSAGE = "Deadline Exceeded"
# Responses a stream read by a thread may hold before the consumer takes them.
STREAM_BUFFER = 8
_CLOSED_MESSAGE = "this transport is closed"


async def _within(work: Awaitable[T], timeout: float | None, method: Method, request: Message) -> T:
    """``await work``, ended by DeadlineExceeded (as the wire transports raise it) when ``timeout`` passes."""
    if timeout is None:
        return await work
    try:
        return await asyncio.wait_for(work, max(timeout, 0.0))
    except asyncio.TimeoutError:
        raise http_rules.with_context(errors.DeadlineExceeded(DEADLINE_MESSAGE), method, request) from None


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# -- server streams -----------------------------------------------------------------------------------


class _Source(Protocol):
    """Where an :class:`AsyncResponseStream` gets its messages."""

    async def read(self) -> Message | None:
        """The next message; None at the end."""

    def cancel(self) -> None:
        """Stop the call now (from anywhere, ``__del__`` included)."""

    async def aclose(self) -> None:
        """Stop the call."""


class AsyncResponseStream:
    """The responses of a server-streaming call, as an async iterator.

    The call starts at the first ``__anext__``. Errors are :class:`bpj.errors.ApiError` naming the RPC and
    the resource. ``aclose()``, leaving ``async with``, or dropping the last reference before the end
    cancels the call, so the server stops sending.
    """

    def __init__(
        self,
        method: Method,
        request: Message,
        start: Callable[[], _Source],
        deadline: float | None = None,
    ) -> None:
        self._method = method
        self._request = request
        self._start: Callable[[], _Source] | None = start
        self._source: _Source | None = None
        # Enforced here for sources that do not end the call at its deadline themselves (gRPC does).
        self._deadline = deadline
        self._done = False

    def __aiter__(self) -> AsyncResponseStream:
        return self

    async def __anext__(self) -> Message:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._source is None:
                assert self._start is not None
                self._source, self._start = self._start(), None
            message = await self._read(self._source)
        except errors.ApiError as e:
            await self.aclose()
            raise http_rules.with_context(e, self._method, self._request) from None
        except BaseException:
            # A UsageError, or the consumer was cancelled: the call is over either way.
            await self.aclose()
            raise
        if message is None:
            await self.aclose()
            raise StopAsyncIteration
        return message

    async def _read(self, source: _Source) -> Message | None:
        if self._deadline is None:
            return await source.read()
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            return await asyncio.wait_for(source.read(), remaining)
        except asyncio.TimeoutError:
            raise errors.DeadlineExceeded(DEADLINE_MESSAGE) from None

    async def aclose(self) -> None:
        """Cancel the call unless it is over; the server side ends."""
        if self._done:
            return
        self._done = True
        self._start = None
        if self._source is not None:
            await self._source.aclose()

    def cancel(self) -> None:
        """:meth:`aclose` for code that cannot await."""
        if not self._done:
            self._done = True
            self._start = None
            if self._source is not None:
                self._source.cancel()

    async def __aenter__(self) -> AsyncResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel()


class _GrpcSource:
    def __init__(self, call: Any, method: Method, request: Message) -> None:
        self._call = call
        self._method = method
        self._request = request

    async def read(self) -> Message | None:
        with mapped_errors(self._method, self._request):
            message = await self._call.read()
        return None if message is grpc.aio.EOF else message

    def cancel(self) -> None:
        self._call.cancel()

    async def aclose(self) -> None:
        self.cancel()


_END = object()


class _ThreadSource:
    """Reads a blocking iterator in a thread of its own and hands the items to the loop, at most
    ``buffer`` at a time. When cancelled, the thread stops at its next item and closes the iterator
    (an HTTP response, a servicer's generator)."""

    def __init__(self, open_iterator: Callable[[], Iterator[Any]], buffer: int = STREAM_BUFFER) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = threading.Semaphore(buffer)
        self._stop = threading.Event()
        self.thread = threading.Thread(
            target=self._produce, args=(open_iterator,), name="bpj-aio-stream", daemon=True
        )
        self.thread.start()

    def _produce(self, open_iterator: Callable[[], Iterator[Any]]) -> None:
        iterator: Any = None
        try:
            iterator = open_iterator()
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except Exception as e:
            self._put(e)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def _put(self, item: Any) -> bool:
        while not self._slots.acquire(timeout=0.25):
            if self._stop.is_set() or self._loop.is_closed():
                return False
        if self._stop.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is reading
            return False
        return True

    async def read(self) -> Message | None:
        item = await self._queue.get()
        self._slots.release()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self._stop.set()
        self._slots.release()  # wakes the thread if it waits for room

    async def aclose(self) -> None:
        self.cancel()


class _AsyncIterSource:
    def __init__(self, messages: Any) -> None:
        self._messages = messages

    async def read(self) -> Message | None:
        try:
            return await self._messages.__anext__()  # type: ignore[no-any-return]
        except StopAsyncIteration:
            return None

    def cancel(self) -> None:
        # An async generator can only be closed by awaiting; dropped, the loop's finalizer closes it.
        self._messages = None

    async def aclose(self) -> None:
        messages, self._messages = self._messages, None
        if messages is not None:
            await messages.aclose()


# -- gRPC -----------------------------------------------------------------------------------------------


class AsyncGrpcTransport:
    """A :class:`bpj.transport.base.AsyncTransport` over one ``grpc.aio`` channel.

    Arguments and rules are :class:`~bpj.transport.grpc.GrpcTransport`'s. The channel is opened at the
    first call, in the running event loop, and serves only that loop: use one transport per loop.
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
        # The sync transport (never opened) holds the endpoint, TLS rule, options and metadata.
        self._config = GrpcTransport(
            endpoint,
            credentials=credentials,
            tls=tls,
            root_certificates=root_certificates,
            options=options,
            user_agent=user_agent,
        )
        self.endpoint = endpoint
        self.target = self._config.target
        self.tls = self._config.tls
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rpcs: dict[Any, BoundRpc] = {}
        self._closed = False
        self.reached = False  # as GrpcTransport.reached

    def __repr__(self) -> str:
        return f"AsyncGrpcTransport({self.target!r}, tls={self.tls})"

    def _open(self) -> grpc.aio.Channel:
        config = self._config
        if not config.tls:
            return grpc.aio.insecure_channel(config.target, options=config.options)
        creds = channel_credentials(config.root_certificates, config.credentials)
        return grpc.aio.secure_channel(config.target, creds, options=config.options)

    def _rpc(self, method: Method) -> BoundRpc:
        if self._closed:
            raise errors.UsageError(_CLOSED_MESSAGE)
        loop = asyncio.get_running_loop()
        if self._channel is None:
            self._channel, self._loop = self._open(), loop
        elif loop is not self._loop:
            raise errors.UsageError(
                f"{self!r} serves the event loop of its first call; make one transport per event loop"
            )
        rpc = self._rpcs.get(method.cache_key)
        if rpc is None:
            rpc = self._rpcs[method.cache_key] = BoundRpc(
                multicallable(self._channel, method), bool(method.http)
            )
        return rpc

    def _call(self, method: Method, request: Message, timeout: float | None, metadata: Metadata) -> Any:
        rpc = self._rpc(method)
        sent = self._config.call_metadata(method, rpc, request, metadata)
        return rpc.call(request, timeout=timeout, metadata=sent)

    async def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        call = self._call(method, request, timeout, metadata)
        try:
            with mapped_errors(method, request):
                response = await call
        except errors.ApiError as e:
            err, self.reached = failed_call(e, self.reached, self.endpoint)
            raise err from None
        self.reached = True
        return response  # type: ignore[no-any-return]

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncResponseStream:
        if self._closed:
            raise errors.UsageError(_CLOSED_MESSAGE)

        def start() -> _Source:
            return _GrpcSource(self._call(method, request, timeout, metadata), method, request)

        return AsyncResponseStream(method, request, start)

    async def close(self) -> None:
        """Closes the channel; calls in flight end with CANCELLED. Later calls raise UsageError."""
        self._closed = True
        channel, self._channel = self._channel, None
        self._rpcs.clear()
        self._config.close()
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncGrpcTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- REST -----------------------------------------------------------------------------------------------


class AsyncRestTransport:
    """A :class:`bpj.transport.base.AsyncTransport` over HTTP/1.1 and JSON: the sync
    :class:`~bpj.transport.rest.RestTransport` (same arguments) run in ``max_workers`` threads of its own.

    A unary call holds a worker for its duration; a call whose awaiting task is cancelled, or whose
    deadline passes first, still holds its worker until the HTTP exchange ends (bounded by the timeout,
    which is also sent to the server). A stream is read by a thread of its own.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Any = None,
        session: requests.Session | None = None,
        timeout_default: float | None = None,
        user_agent: str = USER_AGENT,
        root_certificates: str | None = None,
        max_workers: int = 32,
    ) -> None:
        self._sync = RestTransport(
            endpoint,
            credentials=credentials,
            session=session,
            timeout_default=timeout_default,
            user_agent=user_agent,
            root_certificates=root_certificates,
        )
        self.endpoint = self._sync.endpoint
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bpj-aio-rest")
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncRestTransport({self.endpoint!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        return self._sync.timeout_default if timeout is None else timeout

    async def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        if self._closed:
            raise errors.UsageError(_CLOSED_MESSAGE)
        timeout = self._timeout(timeout)
        call = functools.partial(self._sync.unary, method, request, timeout=timeout, metadata=metadata)
        work = asyncio.get_running_loop().run_in_executor(self._executor, call)
        return await _within(work, timeout, method, request)

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncResponseStream:
        if self._closed:
            raise errors.UsageError(_CLOSED_MESSAGE)
        timeout = self._timeout(timeout)
        # Transcoding happens here, so bad input fails now; the HTTP request goes out from the thread.
        responses = self._sync.server_stream(method, request, timeout=timeout, metadata=metadata)
        return AsyncResponseStream(
            method, request, lambda: _ThreadSource(lambda: responses), _deadline(timeout)
        )

    async def close(self) -> None:
        """Stops the workers (calls in flight finish) and closes the connection pool."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._sync.close()

    async def __aenter__(self) -> AsyncRestTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- in-memory ------------------------------------------------------------------------------------------


class AsyncInMemoryTransport:
    """A :class:`bpj.transport.base.AsyncTransport` that calls servicers (or ``handler``) in this process,
    with :class:`~bpj.transport.memory.InMemoryTransport`'s behaviour: messages copied through bytes, the
    routing header in the metadata, the same errors and deadlines.

    A servicer method may be ``async def`` (awaited), an async generator (iterated), or a plain method or
    generator, which runs in a worker thread. The deadline ends the call for the caller when it passes,
    even while a plain servicer method is still running.
    """

    def __init__(self, *servicers: Any, handler: Handler | None = None) -> None:
        self._sync = InMemoryTransport(*servicers, handler=handler)
        self._servicers = servicers
        self._handler = handler

    def _async_target(self, method: Method) -> Callable[[Any, CallContext], Any] | None:
        """The servicer's function for ``method`` when it is a coroutine or async generator function."""
        if self._sync.closed.is_set():
            return None  # the sync path says so
        try:
            fn = self._sync.target(method)
        except errors.ApiError:
            return None  # the sync path raises it, as InMemoryTransport does
        owner = getattr(fn, "__self__", None)
        origin = fn if any(owner is s for s in self._servicers) else self._handler
        return fn if inspect.iscoroutinefunction(origin) or inspect.isasyncgenfunction(origin) else None

    def _context(
        self, method: Method, request: Message, timeout: float | None, metadata: Metadata
    ) -> CallContext:
        return CallContext(with_routing(method, request, metadata), timeout)

    async def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        fn = self._async_target(method)
        if fn is None:
            work: Awaitable[Message] = asyncio.to_thread(
                self._sync.unary, method, request, timeout=timeout, metadata=metadata
            )
        else:
            work = self._serve(method, request, fn, self._context(method, request, timeout, metadata))
        return await _within(work, timeout, method, request)

    async def _serve(
        self, method: Method, request: Message, fn: Callable[[Any, CallContext], Any], context: CallContext
    ) -> Message:
        try:
            response = await fn(method.request_class.FromString(request.SerializeToString()), context)
            self._sync.check(method, request, context)
            return self._sync.copy_out(method, response)
        except errors.ApiError as e:
            raise http_rules.with_context(e, method, request) from None
        finally:
            context.finish()

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncResponseStream:
        if self._sync.closed.is_set():
            raise errors.UsageError(_CLOSED_MESSAGE)
        fn = self._async_target(method)
        start: Callable[[], _Source]
        if fn is None:

            def responses() -> Iterator[Message]:
                return self._sync.server_stream(method, request, timeout=timeout, metadata=metadata)

            start = functools.partial(_ThreadSource, responses)
        else:
            context = self._context(method, request, timeout, metadata)
            start = functools.partial(_AsyncIterSource, self._serve_stream(method, request, fn, context))
        return AsyncResponseStream(method, request, start, _deadline(timeout))

    async def _serve_stream(
        self, method: Method, request: Message, fn: Callable[[Any, CallContext], Any], context: CallContext
    ) -> Any:
        responses: Any = None
        try:
            responses = fn(method.request_class.FromString(request.SerializeToString()), context)
            if inspect.isawaitable(responses):  # an ``async def`` returning the responses
                responses = await responses
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield self._sync.copy_out(method, response)
            else:
                for response in responses:
                    yield self._sync.copy_out(method, response)
            self._sync.check(method, request, context)
        finally:
            context.cancelled = True
            if hasattr(responses, "aclose"):
                await responses.aclose()
            elif hasattr(responses, "close"):
                responses.close()
            context.finish()

    async def close(self) -> None:
        self._sync.close()

    async def __aenter__(self) -> AsyncInMemoryTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
