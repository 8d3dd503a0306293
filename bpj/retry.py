"""Retries: exponential backoff with full jitter, an overall deadline, and google.rpc.RetryInfo honoured.

Only idempotent methods are retried. A call that may have taken effect (CreateBatchPredictionJob, UploadModel)
is never sent twice blindly: a lost reply there needs a lookup first, which is the job layer's business.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from bpj import errors
from bpj.transport.base import Method, RetryPolicy

T = TypeVar("T")
log = logging.getLogger("bpj")


def delays(policy: RetryPolicy, rng: Callable[[], float] = random.random) -> Iterator[float]:
    """Sleep times between attempts: full jitter over an exponentially growing cap."""
    cap = policy.initial
    while True:
        yield rng() * cap
        cap = min(policy.maximum, cap * policy.multiplier)


def retryable(method: Method, policy: RetryPolicy | None, err: errors.ApiError) -> bool:
    return policy is not None and method.idempotent and err.code.name in policy.codes


def call_with_retry(
    attempt: Callable[[float | None], T],
    *,
    method: Method,
    policy: RetryPolicy | None,
    timeout: float | None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``attempt(per_attempt_timeout)`` until it succeeds, the error is not retryable, or the policy's
    deadline would pass. The last error is raised unchanged."""
    if policy is None or not method.idempotent:
        return attempt(timeout)
    deadline = clock() + policy.deadline
    waits = delays(policy, rng)
    tries = 0
    last: errors.ApiError | None = None
    while True:
        remaining = deadline - clock()
        cut_short = timeout is None or remaining < timeout
        per_try = remaining if timeout is None else min(timeout, remaining)
        tries += 1
        try:
            return attempt(max(per_try, 0.0))
        except errors.ApiError as err:
            if last is not None and cut_short and isinstance(err, errors.DeadlineExceeded):
                # The overall deadline, not the server, ended this attempt: the error worth showing is the
                # one that made us retry.
                raise last from err
            if not retryable(method, policy, err):
                raise
            last = err
            hint = err.retry_delay
            wait = hint if hint is not None else next(waits)
            if clock() + wait >= deadline:
                log.debug("%s: giving up after %d attempts: %s", errors.rpc_name(method), tries, err)
                raise
            log.debug(
                "%s: %s; attempt %d again in %.2fs", errors.rpc_name(method), err.code.name, tries + 1, wait
            )
            sleep(wait)
