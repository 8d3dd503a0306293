"""The servicer context used where no gRPC server provides one: the REST gateway and the in-memory transport.

It offers the part of ``grpc.ServicerContext`` that servicers use, with the same meaning, so one servicer
runs unchanged under a real gRPC server, the REST gateway and :class:`bpj.transport.memory.InMemoryTransport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from bpj import errors
from bpj.transport.base import Metadata, Method


class CallContext:
    def __init__(
        self, metadata: Metadata = (), timeout: float | None = None, peer: str = "in-memory"
    ) -> None:
        self._metadata = tuple(metadata)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._peer = peer
        self._callbacks: list[Callable[[], None]] = []
        self.code: errors.Code = errors.Code.OK
        self.details = ""
        self.trailing_metadata: tuple[tuple[str, str], ...] = ()
        self.cancelled = False

    # -- what servicers call ------------------------------------------------------------------------
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self.cancelled and (self._deadline is None or time.monotonic() < self._deadline)

    def peer(self) -> str:
        return self._peer

    def abort(self, code: object, details: str) -> NoReturn:
        c = errors.Code.of(code)
        raise errors.error_class(c)(details, code=c)

    def abort_with_status(self, status: Any) -> NoReturn:
        self.abort(status.code, status.details)

    def set_code(self, code: object) -> None:
        self.code = errors.Code.of(code)

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing_metadata = tuple(metadata)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    # -- what the serving side calls -----------------------------------------------------------------
    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def error_set(self) -> errors.ApiError | None:
        """The error a servicer reported with ``set_code`` without raising, if any."""
        if self.code == errors.Code.OK:
            return None
        return errors.error_class(self.code)(self.details, code=self.code)

    def finish(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()


def check_response(method: Method, response: Any) -> None:
    """Refuse what a servicer returned unless it is a message of the method's response type (INTERNAL)."""
    descriptor = getattr(response, "DESCRIPTOR", None)
    if descriptor is None or getattr(descriptor, "full_name", None) != method.response_type:
        got = descriptor.full_name if descriptor is not None else type(response).__name__
        raise errors.Internal(f"{method.full_name} servicer returned a {got}, not a {method.response_type}")
