"""Job control written once: step machines, and the blocking and async runners that drive them.

A step machine is a generator that does no I/O. It yields what it needs done and takes the answer:

- ``Call(rpc, request, ...)``: call method ``rpc`` of a client with ``request``; the answer is the response
  (an ApiError is thrown into the machine at the ``yield``, so it catches errors with a plain ``try``);
- ``Sleep(seconds)``: wait; the answer is None;
- ``Emit(items)``: hand items to the consumer (listing, watching); the answer is None.

What it returns is the result. :func:`run` and :func:`iterate` drive a machine with blocking calls and
``time.sleep``; :func:`run_async` and :func:`iterate_async` with ``await`` and ``asyncio.sleep``. The
decisions (pacing, when a create is looked up, when a wait gives up) live in the machines, once, as
:class:`bpj.retry.Attempts` keeps the retry decisions for both worlds.

The machines here: :func:`wait_job`, :func:`create_job` (with the request-id lookup), :func:`find_by_request_id`,
:func:`list_items` (paging) and :func:`wait_operation`; :mod:`bpj.many` adds the many-jobs watch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union

from bpj import errors, states
from bpj._log import logger

log = logger()
T = TypeVar("T")

REQUEST_ID_LABEL = "bpj_request_id"
CREATE_ATTEMPTS = 3
# Errors after which a create may or may not have made the job.
AMBIGUOUS = (errors.DeadlineExceeded, errors.Unavailable)


@dataclass(frozen=True)
class Call:
    """Call ``client.<rpc>(request, **options)``; ``where`` picks the client (the runner's ``client_for``)."""

    rpc: str
    request: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    where: Any = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    items: Iterable[Any]


Step = Union[Call, Sleep, Emit]  # noqa: UP007 (a runtime alias: 3.10 evaluates it)
Machine = Generator[Step, Any, T]
ClientFor = Callable[[Any], Any]


def messages() -> Any:
    """The ``bpj.types`` module, imported at first use (``import bpj`` stays light)."""
    from bpj import types

    return types


# -- the runners ----------------------------------------------------------------------------------------


class _Driver(Generic[T]):
    """Feeds a machine its answers (or errors) and keeps what it returned."""

    def __init__(self, machine: Machine[T]) -> None:
        self.machine = machine
        self.answer: Any = None
        self.error: BaseException | None = None
        self.value: T | None = None

    def next(self) -> Step | None:
        """The machine's next step, or None once it returned (its value is then in ``value``)."""
        answer, error = self.answer, self.error
        self.answer = self.error = None
        try:
            return self.machine.throw(error) if error is not None else self.machine.send(answer)
        except StopIteration as stop:
            self.value = stop.value
            return None


def _drive(d: _Driver[Any], client_for: ClientFor, sleep: Callable[[float], None]) -> Iterator[Any]:
    try:
        while (step := d.next()) is not None:
            if isinstance(step, Emit):
                yield from step.items
            elif isinstance(step, Sleep):
                sleep(step.seconds)
            else:
                try:
                    d.answer = getattr(client_for(step.where), step.rpc)(step.request, **step.options)
                except errors.ApiError as e:
                    d.error = e
    finally:
        d.machine.close()


async def _drive_async(
    d: _Driver[Any], client_for: ClientFor, sleep: Callable[[float], Any]
) -> AsyncIterator[Any]:
    try:
        while (step := d.next()) is not None:
            if isinstance(step, Emit):
                for item in step.items:
                    yield item
            elif isinstance(step, Sleep):
                await sleep(step.seconds)
            else:
                try:
                    d.answer = await getattr(client_for(step.where), step.rpc)(step.request, **step.options)
                except errors.ApiError as e:
                    d.error = e
    finally:
        d.machine.close()


def _no_items(item: Any) -> None:
    raise TypeError(f"this machine emits items ({type(item).__name__}): drive it with iterate()")


def run(machine: Machine[T], client_for: ClientFor, *, sleep: Callable[[float], None] = time.sleep) -> T:
    """Drive a machine with blocking calls; return what it returns."""
    d = _Driver(machine)
    for item in _drive(d, client_for, sleep):
        _no_items(item)
    return d.value  # type: ignore[return-value]


def iterate(
    machine: Machine[Any], client_for: ClientFor, *, sleep: Callable[[float], None] = time.sleep
) -> Iterator[Any]:
    """Drive a machine with blocking calls, yielding what it emits, as it emits it."""
    return _drive(_Driver(machine), client_for, sleep)


async def run_async(
    machine: Machine[T], client_for: ClientFor, *, sleep: Callable[[float], Any] = asyncio.sleep
) -> T:
    """Drive a machine with ``await`` (the clients are async) and ``asyncio.sleep``; return its result."""
    d = _Driver(machine)
    async for item in _drive_async(d, client_for, sleep):
        _no_items(item)
    return d.value  # type: ignore[return-value]


def iterate_async(
    machine: Machine[Any], client_for: ClientFor, *, sleep: Callable[[float], Any] = asyncio.sleep
) -> AsyncIterator[Any]:
    """Drive a machine with ``await``, yielding what it emits (``async for``)."""
    return _drive_async(_Driver(machine), client_for, sleep)


def one(client: Any) -> ClientFor:
    """``client_for`` for machines that talk to one client."""
    return lambda where: client


# -- pacing ---------------------------------------------------------------------------------------------


class Pacer:
    """Pauses between polls: ``poll`` seconds at first, growing by ``growth`` a poll up to ``max_poll``, with
    jitter (each pause is 50-100% of the current step); the last one shortened to end at the deadline."""

    def __init__(
        self,
        poll: float,
        max_poll: float,
        timeout: float | None,
        *,
        growth: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        from bpj import validation

        for name, value in (("poll", poll), ("max_poll", max_poll)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise validation.fail(name, f"must be seconds >= 0, got {value!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise validation.fail("timeout", f"must be seconds or None, got {timeout!r}")
        self.delay = poll
        self.max = max(max_poll, poll)
        self.growth = growth
        self.timeout = timeout
        self.clock = clock
        self.rng = rng
        self.deadline = None if timeout is None else clock() + timeout

    def pause(self) -> float | None:
        """Seconds to wait before the next poll; None when the deadline has passed."""
        pause = self.delay * (0.5 + self.rng() / 2)
        if self.deadline is not None:
            left = self.deadline - self.clock()
            if left <= 0:
                return None
            pause = min(pause, left)
        self.delay = min(self.max, self.delay * self.growth)
        return pause


# -- jobs ----------------------------------------------------------------------------------------------


def get_job(name: str, where: Any = None) -> Call:
    return Call("get_batch_prediction_job", messages().GetBatchPredictionJobRequest(name=name), where=where)


def wait_job(
    job: Any, pacer: Pacer, progress: Any = None, clock: Callable[[], float] = time.monotonic
) -> Machine[bool]:
    """Poll Get until ``job`` (an object with ``gca_resource``, ``resource_name`` and ``refresh(resource)``)
    is in a terminal state: True; False when the pacer's deadline passed first. State changes go to the
    ``bpj`` logger; ``progress`` (``show(elapsed)``, ``end()``) is redrawn after every poll."""
    start = clock()
    seen = job.gca_resource.state
    if not states.is_terminal(seen):
        job.refresh((yield get_job(job.resource_name)))
    while True:
        state = job.gca_resource.state
        if state != seen:
            log.info("%s: %s", job.resource_name, states.name(state))
            seen = state
        if progress is not None:
            progress.show(clock() - start)
        pause = None if states.is_terminal(state) else pacer.pause()
        if pause is None:
            if progress is not None:
                progress.end()
            return states.is_terminal(state)
        yield Sleep(pause)
        job.refresh((yield get_job(job.resource_name)))


def list_items(rpc: str, request: Any, items: str, where: Any = None) -> Machine[None]:
    """Emit every item of a List RPC's pages (field ``items`` of each response), one call per page."""
    while True:
        page = yield Call(rpc, request, where=where)
        yield Emit(getattr(page, items))
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def find_by_request_id(parent: str, request_id: str) -> Machine[Any]:
    """The job a create stamped with ``bpj_request_id=<request_id>``, or None."""
    request = messages().ListBatchPredictionJobsRequest(
        parent=parent, filter=f'labels.{REQUEST_ID_LABEL}="{request_id}"'
    )
    while True:
        page = yield Call("list_batch_prediction_jobs", request)
        for job in page.batch_prediction_jobs:
            if job.labels.get(REQUEST_ID_LABEL) == request_id:
                return job
        if not page.next_page_token:
            return None
        request.page_token = page.next_page_token


def create_job(
    request: Any,
    timeout: float | None,
    request_id: str | None,
    *,
    lookup_first: bool,
    rng: Callable[[], float] = random.random,
) -> Machine[Any]:
    """Create a job once; after an ambiguous failure (the job may exist) look it up by its request id
    before sending again, ``CREATE_ATTEMPTS`` sends in all. The create RPC itself is never retried blindly."""
    if lookup_first and request_id is not None:
        found = yield from find_by_request_id(request.parent, request_id)
        if found is not None:
            log.info("create: %s already made %s", request_id, found.name)
            return found
    settle = 0.5
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            options = {"timeout": timeout, "retry": None}
            return (yield Call("create_batch_prediction_job", request, options))
        except AMBIGUOUS as err:
            if request_id is None or attempt == CREATE_ATTEMPTS:
                raise
            log.warning(
                "create (%s=%s) failed with %s; looking the job up before trying again",
                REQUEST_ID_LABEL,
                request_id,
                err.code.name,
            )
            # Give a create still in flight on the server time to land before looking.
            yield Sleep(settle * (0.5 + rng() / 2))
            settle *= 2
            found = yield from find_by_request_id(request.parent, request_id)
            if found is not None:
                log.info("create: the lost reply had made %s", found.name)
                return found
    raise AssertionError("unreachable")


# -- long-running operations --------------------------------------------------------------------------


def wait_operation(
    op: Any, timeout: float | None = None, what: str = "", rng: Callable[[], float] = random.random
) -> Machine[Any]:
    """Poll a google.longrunning Operation until it is done and return it; raise the ApiError its ``error``
    carries, or TimeoutError when ``timeout`` seconds pass first. Polls back off from 50 ms to 5 s, jittered."""
    pacer = Pacer(0.05, 5.0, timeout, growth=2.0, rng=rng)
    while not op.done:
        pause = pacer.pause()
        if pause is None:
            raise TimeoutError(f"{what or 'operation'} {op.name} was not done after {timeout}s")
        yield Sleep(pause)
        op = yield Call("get_operation", messages().GetOperationRequest(name=op.name))
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
