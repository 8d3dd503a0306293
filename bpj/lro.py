"""Long-running operations (google.longrunning): wait for one, the same way for every caller."""

from __future__ import annotations

import random
import time
from typing import Any

from bpj import errors


def wait_operation(operations: Any, op: Any, *, timeout: float | None = None, what: str = "") -> Any:
    """Poll a google.longrunning Operation until it is done and return it; raise the ApiError its
    ``error`` carries, or TimeoutError when ``timeout`` seconds pass first. Polls back off from 50 ms to 5 s
    with jitter."""
    from bpj import types

    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while not op.done:
        pause = delay * (0.5 + random.random() / 2)
        if deadline is not None and time.monotonic() + pause > deadline:
            raise TimeoutError(f"{what or 'operation'} {op.name} was not done after {timeout}s")
        time.sleep(pause)
        delay = min(delay * 2, 5.0)
        op = operations.get_operation(types.GetOperationRequest(name=op.name))
    if op.HasField("error") and op.error.code:
        code = errors.Code.of(op.error.code)
        raise errors.error_class(code)(
            op.error.message,
            rpc=what,
            resource=op.name,
            details=errors.details_from_any(op.error.details),
            code=code,
        )
    return op
