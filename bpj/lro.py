"""Long-running operations (google.longrunning): wait for one, the same way for every caller. The decisions
are :func:`bpj.steps.wait_operation`'s; this is its blocking face (``bpj.aio.wait_operation`` the async one)."""

from __future__ import annotations

from typing import Any

from bpj import steps


def wait_operation(operations: Any, op: Any, *, timeout: float | None = None, what: str = "") -> Any:
    """Poll a google.longrunning Operation until it is done and return it; raise the ApiError its
    ``error`` carries, or TimeoutError when ``timeout`` seconds pass first. Polls back off from 50 ms to 5 s
    with jitter."""
    return steps.run(steps.wait_operation(op, timeout, what), steps.one(operations))
