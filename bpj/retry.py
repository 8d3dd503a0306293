"""Retries: exponential backoff with full jitter, an overall deadline, and google.rpc.RetryInfo honoured.

Only idempotent methods are retried. A call that may have taken effect (CreateBatchPredictionJob, UploadModel)
is never sent twice blindly: a lost reply there needs a lookup first, which is the job layer's business.
The decisions live in :class:`Attempts`; :func:`call_with_retry` and :func:`call_with_retry_async` only
sleep the way their world sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from bpj import errors
from bpj._log import logger
from bpj.transport.base import Method, RetryPolicy

T = TypeVar("T")
log = logger()


def delays(policy: RetryPolicy, rng: Callable[[], float] = random.random) -> Iterator[float]:
    """Sleep times between attempts: full jitter over an exponentially growing cap."""
    cap = policy.initial
    while True:
        yield rng() * cap
        cap = min(policy.maximum, cap * policy.multiplier)


def retryable(method: Method, policy: RetryPolicy | None, err: errors.ApiError) -> bool:
    return policy is not None and method.idempotent and err.code.name in policy.codes


class Attempts:
    """The retry decisions for one call: the timeout of each attempt, and after a failure either the time
    to wait before the next attempt or the error to raise."""

    def __init__(
        self,
        method: Method,
        policy: RetryPolicy | None,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.method = method
        self.policy = policy if method.idempotent else None
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        self.deadline = None if self.policy is None else self.started + self.policy.deadline
        self.waits = delays(self.policy, rng) if self.policy is not None else iter(())
        self.tries = 0
        self.last: errors.ApiError | None = None
        self.cut_short = False

    def next_timeout(self) -> float | None:
        """The timeout for the next attempt: the per-attempt timeout, shrunk to what the deadline leaves."""
        self.tries += 1
        if self.deadline is None:
            return self.timeout
        remaining = max(self.deadline - self.clock(), 0.0)
        self.cut_short = self.timeout is None or remaining < self.timeout
        return remaining if self.timeout is None else min(self.timeout, remaining)

    def after(self, err: errors.ApiError) -> float:
        """Seconds to wait before trying again; raises the error to report when there is no next attempt."""
        if self.last is not None and self.cut_short and isinstance(err, errors.DeadlineExceeded):
            # The overall deadline, not the server, ended this attempt: the error worth showing is the one
            # that made us retry.
            raise self.last from err
        if self.deadline is None or not retryable(self.method, self.policy, err):
            raise err
        self.last = err
        hint = err.retry_delay
        wait = hint if hint is not None else next(self.waits)
        name = self.method.rpc_name
        if isinstance(err, errors.Unreachable) and self.policy is not None:
            # An endpoint never reached is most likely wrong or down: a short grace (a server starting),
            # not the whole deadline.
            self.deadline = min(self.deadline, self.started + self.policy.unreachable_deadline)
        if self.clock() + wait >= self.deadline:
            log.debug("%s: giving up after %d attempts: %s", name, self.tries, err)
            raise err
        log.debug("%s: %s; attempt %d again in %.2fs", name, err.code.name, self.tries + 1, wait)
        return wait


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
    state = Attempts(method, policy, timeout, clock, rng)
    while True:
        try:
            return attempt(state.next_timeout())
        except errors.ApiError as err:
            sleep(state.after(err))


async def call_with_retry_async(
    attempt: Callable[[float | None], Awaitable[T]],
    *,
    method: Method,
    policy: RetryPolicy | None,
    timeout: float | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """:func:`call_with_retry` for coroutines: the same decisions, sleeping with ``asyncio.sleep``."""
    state = Attempts(method, policy, timeout, clock, rng)
    while True:
        try:
            return await attempt(state.next_timeout())
        except errors.ApiError as err:
            await sleep(state.after(err))
