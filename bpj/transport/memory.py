"""The in-memory transport: calls servicer objects directly, with the behaviour of the wire.

Requests and responses are copied through their serialized form, so a servicer never shares a mutable
message with its caller; errors, deadlines and metadata behave as over gRPC and REST. Use it in tests,
yours included::

    class FakeJobs(JobServiceServicer):
        def GetBatchPredictionJob(self, request, context):
            return bpj.types.BatchPredictionJob(name=request.name, state=...)

    transport = InMemoryTransport(FakeJobs())

A plain function can serve too (as httpx's MockTransport takes one): ``InMemoryTransport(handler=fn)``,
where ``fn(method, request, context)`` returns the response, or an iterator of them for a stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.transport import http_rules
from bpj.transport.base import Metadata, Method
from bpj.transport.context import CallContext, check_response
from bpj.transport.http_rules import ROUTING_KEY, routing_params

if TYPE_CHECKING:
    from google.protobuf.message import Message

Handler = Callable[[Method, Any, CallContext], Any]


class InMemoryTransport:
    def __init__(self, *servicers: Any, handler: Handler | None = None) -> None:
        if not servicers and handler is None:
            raise errors.UsageError("InMemoryTransport needs at least one servicer or a handler=function")
        self._servicers = servicers
        self._handler = handler
        self.closed = threading.Event()

    def target(self, method: Method) -> Callable[[Any, CallContext], Any]:
        for s in self._servicers:
            service = getattr(s, "service", None)
            declared = getattr(service, "name", None)
            if declared is not None and declared != method.service:
                continue
            fn = getattr(s, method.name, None)
            if callable(fn):
                return fn
        if self._handler is not None:
            handler = self._handler
            return lambda request, context: handler(method, request, context)
        raise errors.Unimplemented(f"no servicer for {method.full_name}", rpc=method.rpc_name)

    def _run(
        self, method: Method, request: Message, timeout: float | None, metadata: Metadata
    ) -> tuple[Any, CallContext]:
        if self.closed.is_set():
            raise errors.UsageError("this transport is closed")
        context = CallContext(with_routing(method, request, metadata), timeout)
        copy = method.request_class.FromString(request.SerializeToString())
        try:
            result = self.target(method)(copy, context)
        except errors.ApiError as e:
            raise http_rules.with_context(e, method, request) from None
        return result, context

    def check(self, method: Method, request: Message, context: CallContext) -> None:
        err = context.error_set()
        if err is not None:
            raise http_rules.with_context(err, method, request)
        if context.expired():
            raise http_rules.with_context(errors.DeadlineExceeded("Deadline Exceeded"), method, request)

    def copy_out(self, method: Method, response: Any) -> Message:
        check_response(method, response)
        return method.response_decoder(response.SerializeToString())

    def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        response, context = self._run(method, request, timeout, metadata)
        try:
            self.check(method, request, context)
            return self.copy_out(method, response)
        except errors.ApiError as e:
            raise http_rules.with_context(e, method, request) from None
        finally:
            context.finish()

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[Message]:
        responses, context = self._run(method, request, timeout, metadata)
        return self._stream(method, request, responses, context)

    def _stream(
        self, method: Method, request: Message, responses: Any, context: CallContext
    ) -> Iterator[Message]:
        try:
            for response in responses:
                if context.expired():
                    raise errors.DeadlineExceeded("Deadline Exceeded")
                yield self.copy_out(method, response)
            self.check(method, request, context)
        except errors.ApiError as e:
            raise http_rules.with_context(e, method, request) from None
        finally:
            context.cancelled = True
            close = getattr(responses, "close", None)
            if close is not None:
                close()
            context.finish()

    def close(self) -> None:
        self.closed.set()


def with_routing(method: Method, request: Message, metadata: Metadata) -> list[tuple[str, str]]:
    """``metadata`` plus the routing header the wire transports send, so servicers see the same."""
    out = [(k.lower(), v) for k, v in metadata]
    if method.http and all(k != ROUTING_KEY for k, _ in out):
        params = routing_params(method, request)
        if params:
            out.append((ROUTING_KEY, params))
    return out
