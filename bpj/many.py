"""Many jobs at once: watch N jobs with one List call per poll, and submit many with a bound on jobs in flight.

    jobs = bpj.submit_many(configs, max_in_flight=20)       # configs: dicts of BatchPredictionJob.create kwargs
    for job in bpj.as_completed(jobs, timeout=6 * 3600):    # in the order they end
        print(job.display_name, bpj.states.name(job.gca_resource.state))
    bpj.wait_all(jobs)                                      # all of them; JobsFailed if any did not succeed

How the watch filters its List calls (``by=``):

- ``"labels"``: every watched job carries the same label ``key=value`` (``submit_many`` stamps
  ``bpj_batch=<id>`` on the jobs it submits for that reason): one ``labels.key="value"`` filter, so a poll
  costs one List call per page of results (up to ``page_size`` jobs a page), whatever the number of jobs.
- ``"create_time"``: the jobs' creation window, ``create_time>="t0" AND create_time<="t1"`` (filter fields
  Vertex AI documents). Also one call per page, but other jobs created in that window are listed too.
- ``"names"``: ``name="..." OR name="..."`` in chunks of at most ``MAX_FILTER_CHARS`` characters, so a poll
  costs one call per chunk (about 50 jobs). The local stack accepts it; Vertex AI documents no ``name`` field
  for ListBatchPredictionJobs filters, so use this one only where you know the server takes it.
- ``"auto"`` (the default): ``labels`` when the jobs share a label, else ``create_time``.

Each listed message replaces the job object's resource (``job.refresh(resource)``, no RPC). A watched job the
List did not return (deleted, or not yet visible) is fetched with one Get, so no job is ever lost, and a
deleted one raises NotFound.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from bpj import clients, errors, rules, states, steps, validation
from bpj._log import logger
from bpj.jobs import BatchPredictionJob, JobFailed
from bpj.steps import Pacer

log = logger()

__all__ = ["JobsFailed", "NotDone", "SubmitFailed", "as_completed", "submit_many", "wait_all"]

BATCH_LABEL = "bpj_batch"
MAX_FILTER_CHARS = 4000  # a List filter travels in the URL over REST: keep it well under 8 KB
PAGE_SIZE = 1000  # the most a page may hold; the server may give fewer
STRATEGIES = ("auto", "labels", "create_time", "names")


class NotDone(errors.BpjError, TimeoutError):
    """The timeout passed before every job ended. ``done`` and ``not_done`` are the job objects."""

    def __init__(
        self, done: list[BatchPredictionJob], not_done: list[BatchPredictionJob], timeout: float
    ) -> None:
        self.done = done
        self.not_done = not_done
        self.timeout = timeout
        super().__init__(f"{len(not_done)} of {len(done) + len(not_done)} jobs not done after {timeout:g}s")


class JobsFailed(errors.BpjError):
    """``wait_all``: every job ended, and some ended FAILED, CANCELLED or EXPIRED.

    ``jobs`` are all the jobs (in the order given), ``failures`` one :class:`bpj.jobs.JobFailed` (or its
    JobCancelled / JobExpired subclass) per job that did not succeed, each with the job and its status.
    """

    def __init__(self, jobs: list[BatchPredictionJob], failures: list[JobFailed]) -> None:
        self.jobs = jobs
        self.failures = failures
        shown = "; ".join(str(f) for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} of {len(jobs)} jobs did not succeed: {shown}{more}")


class SubmitFailed(errors.BpjError):
    """``submit_many`` could not submit ``configs[index]``: ``error`` says why (also ``__cause__``), and
    ``jobs`` are the jobs submitted before it (they run on: wait for or cancel them)."""

    def __init__(self, index: int, config: Any, error: BaseException, jobs: list[BatchPredictionJob]) -> None:
        self.index = index
        self.config = config
        self.error = error
        self.jobs = jobs
        super().__init__(f"config #{index} was not submitted ({len(jobs)} jobs were): {error}")


# -- watching -----------------------------------------------------------------------------------------


def _shared_label(jobs: Iterable[BatchPredictionJob]) -> tuple[str, str] | None:
    """A label every job carries with the same value: bpj_batch first, else the first in sorted order."""
    common: set[tuple[str, str]] | None = None
    for job in jobs:
        items = set(job.gca_resource.labels.items())
        common = items if common is None else common & items
        if not common:
            return None
    if not common:
        return None
    batch = [kv for kv in common if kv[0] == BATCH_LABEL]
    return batch[0] if batch else min(common)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(jobs: Sequence[BatchPredictionJob]) -> tuple[datetime, datetime] | None:
    """Whole seconds around the jobs' creation times, or None when one of them has none."""
    times = [job.create_time for job in jobs]
    if not times or any(t is None for t in times):
        return None
    known = [t for t in times if t is not None]
    return min(known).replace(microsecond=0), max(known).replace(microsecond=0) + timedelta(seconds=1)


def filters(jobs: Sequence[BatchPredictionJob], by: str = "auto") -> list[str]:
    """The List filters that together return every job of ``jobs`` (one parent), for strategy ``by``.

    An empty string means "no filter": the whole location is listed (a job without a create_time, with
    ``by="create_time"``).
    """
    if by not in STRATEGIES:
        raise validation.fail("by", f"must be one of {', '.join(STRATEGIES)}, got {by!r}")
    if by in ("auto", "labels"):
        shared = _shared_label(jobs)
        if shared is not None:
            text = f"labels.{shared[0]}={_quote(shared[1])}"
            since = _window(jobs)
            # Jobs made before the oldest one watched cannot be among them: skip their pages.
            return [f'{text} AND create_time>="{_rfc3339(since[0])}"' if since else text]
        if by == "labels":
            raise validation.fail("by", "'labels' needs a label (key and value) that every job carries")
    if by in ("auto", "create_time"):
        window = _window(jobs)
        if window is None:
            return [""]
        return [f'create_time>="{_rfc3339(window[0])}" AND create_time<="{_rfc3339(window[1])}"']
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for job in jobs:
        term = f"name={_quote(job.resource_name)}"
        if current and size + len(term) + 4 > MAX_FILTER_CHARS:
            chunks.append(" OR ".join(current))
            current, size = [], 0
        current.append(term)
        size += len(term) + 4
    if current:
        chunks.append(" OR ".join(current))
    return chunks


class Watch:
    """The pending jobs of a watch and one poll over them: List calls (per parent, per filter, per page),
    then a Get for each pending job no List returned."""

    def __init__(
        self,
        jobs: Iterable[BatchPredictionJob],
        *,
        by: str = "auto",
        page_size: int = PAGE_SIZE,
        credentials: Any = None,
    ) -> None:
        if by not in STRATEGIES:
            raise validation.fail("by", f"must be one of {', '.join(STRATEGIES)}, got {by!r}")
        rules.integer(page_size, "page_size")
        self.by = by
        self.page_size = page_size
        self.credentials = credentials
        self.pending: dict[str, list[BatchPredictionJob]] = {}
        self.order: list[BatchPredictionJob] = []
        for job in jobs:
            self.add(job)

    def add(self, job: BatchPredictionJob) -> None:
        if not isinstance(job, BatchPredictionJob):
            raise validation.fail(
                "jobs", f"must hold bpj BatchPredictionJob objects, got {type(job).__name__}"
            )
        self.order.append(job)
        if not states.is_terminal(job.gca_resource.state):
            self.pending.setdefault(job.resource_name, []).append(job)

    def settled(self) -> list[BatchPredictionJob]:
        """Jobs already terminal when they were added (no RPC needed)."""
        return [j for j in self.order if states.is_terminal(j.gca_resource.state)]

    def poll(self) -> list[BatchPredictionJob]:
        """One poll: update every pending job, return (and stop watching) those now terminal."""
        return steps.run(self.poll_steps(), client_for)

    def poll_steps(self) -> steps.Machine[list[BatchPredictionJob]]:
        """:meth:`poll` as a step machine. A List's ``where`` is ``(project, location, credentials)``, a
        Get's the job object."""
        ended: list[BatchPredictionJob] = []
        seen: set[str] = set()
        for project, location, request in self.list_requests():
            where = (project, location, self.credentials)
            while True:
                page = yield steps.Call("list_batch_prediction_jobs", request, where=where)
                for resource in page.batch_prediction_jobs:
                    ended += self.observe(resource, seen)
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
        for first in self.unseen(seen):
            log.debug("%s not in the List results: one Get", first.resource_name)
            ended += self.update((yield steps.get_job(first.resource_name, where=first)))
        return ended

    def list_requests(self) -> list[tuple[str, str, Any]]:
        """``(project, location, ListBatchPredictionJobsRequest)`` of every List a poll makes (its first
        page; the caller follows ``next_page_token``): per parent, per filter of :func:`filters`."""
        from bpj import types

        groups: dict[tuple[str, str], list[BatchPredictionJob]] = {}
        for objs in self.pending.values():
            groups.setdefault((objs[0].project, objs[0].location), []).append(objs[0])
        return [
            (
                project,
                location,
                types.ListBatchPredictionJobsRequest(
                    parent=f"projects/{project}/locations/{location}", filter=text, page_size=self.page_size
                ),
            )
            for (project, location), jobs in groups.items()
            for text in filters(jobs, self.by)
        ]

    def observe(self, resource: Any, seen: set[str]) -> list[BatchPredictionJob]:
        """Take in one listed job (once a poll; ``seen`` holds the names taken in so far): the watched
        objects that ended with it."""
        if resource.name not in self.pending or resource.name in seen:
            return []
        seen.add(resource.name)
        return self.update(resource)

    def unseen(self, seen: set[str]) -> list[BatchPredictionJob]:
        """One object of each pending job that no List returned (each needs a Get)."""
        return [objs[0] for name, objs in self.pending.items() if name not in seen]

    def update(self, resource: Any) -> list[BatchPredictionJob]:
        """Refresh the objects of one pending job; those now terminal leave the watch and are returned."""
        objs = self.pending[resource.name]
        for job in objs:
            job.refresh(resource)
        if states.is_terminal(resource.state):
            del self.pending[resource.name]
            return objs
        return []

    def not_done(self) -> list[BatchPredictionJob]:
        return [j for j in self.order if j.resource_name in self.pending]


def client_for(where: Any) -> Any:
    """The blocking clients of a watch's calls: a job's own for a Get, the watch's for a List."""
    if isinstance(where, BatchPredictionJob):
        return where._client()
    project, location, credentials = where
    return clients.job_service(project=project, location=location, credentials=credentials)


def as_completed(
    jobs: Iterable[BatchPredictionJob],
    *,
    timeout: float | None = None,
    poll: float = 2.0,
    max_poll: float = 30.0,
    by: str = "auto",
    page_size: int = PAGE_SIZE,
    credentials: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[BatchPredictionJob]:
    """Yield each job as it reaches a terminal state (whatever the outcome: check ``job.gca_resource.state``,
    or call ``job.wait()``, which then raises the typed error without an RPC). Jobs terminal already come first.

    One poll is one List call per page of results (see the module docstring for ``by``), every ``poll``
    seconds growing to ``max_poll``. Raises :class:`NotDone` (a TimeoutError) when ``timeout`` seconds pass
    with jobs still running. ``credentials``: for the List calls, when not those of ``bpj.init``. ``sleep``:
    called with the seconds to wait between polls (tests pass their own).
    """
    watch = Watch(jobs, by=by, page_size=page_size, credentials=credentials)
    pacer = Pacer(poll, max_poll, timeout)
    return steps.iterate(completed(watch, pacer), client_for, sleep=sleep)


def completed(watch: Watch, pacer: Pacer) -> steps.Machine[None]:
    """Emit each watched job as it ends, those terminal already first; poll until none is pending.
    :class:`NotDone` (holding the objects the watch holds) when the pacer's deadline passes first."""
    done = watch.settled()
    yield steps.Emit([*done])
    first = True
    while watch.pending:
        if not first:
            pause = pacer.pause()
            if pause is None:
                raise NotDone(done, watch.not_done(), pacer.timeout or 0.0)
            yield steps.Sleep(pause)
        first = False
        ended = yield from watch.poll_steps()
        log.debug("poll: %d ended, %d pending", len(ended), len(watch.pending))
        done += ended
        yield steps.Emit(ended)


def failures(jobs: Iterable[Any]) -> list[JobFailed]:
    """One typed error (``bpj.states.error_for``) per job that ended without success."""
    return [states.error_for(j) for j in jobs if states.rule(j.gca_resource.state).outcome in states.FAILURES]


def wait_all(
    jobs: Iterable[BatchPredictionJob],
    *,
    timeout: float | None = None,
    poll: float = 2.0,
    max_poll: float = 30.0,
    raise_on_failure: bool = True,
    by: str = "auto",
    page_size: int = PAGE_SIZE,
    credentials: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[BatchPredictionJob]:
    """Wait until every job is in a terminal state; return the jobs in the order given.

    It always waits for all of them, even after one failed (so no job is left unwatched). Then, with
    ``raise_on_failure`` (the default), it raises :class:`JobsFailed` if any ended FAILED, CANCELLED or
    EXPIRED, carrying every job and one typed error per failure; with ``raise_on_failure=False`` it returns
    them all and you read each state. SUCCEEDED and PARTIALLY_SUCCEEDED count as success, as in ``wait()``.
    Polls as :func:`as_completed`; :class:`NotDone` when ``timeout`` passes first.
    """
    watch = Watch(jobs, by=by, page_size=page_size, credentials=credentials)
    for _ in steps.iterate(completed(watch, Pacer(poll, max_poll, timeout)), client_for, sleep=sleep):
        pass
    failed = failures(watch.order)
    if failed and raise_on_failure:
        raise JobsFailed(watch.order, failed)
    return watch.order


# -- submitting ---------------------------------------------------------------------------------------


def submit_many(
    configs: Iterable[Mapping[str, Any]],
    *,
    max_in_flight: int = 8,
    poll: float = 2.0,
    max_poll: float = 30.0,
    batch_label: str | bool = True,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    patience: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[BatchPredictionJob]:
    """Submit one job per config (the keyword arguments of :meth:`BatchPredictionJob.create`; ``sync`` is
    not allowed), never with more than ``max_in_flight`` of them not yet terminal; return the jobs in config
    order, the last ones maybe still running (``wait_all`` them).

    While ``max_in_flight`` jobs run it polls them with one List call per page (as :func:`as_completed`).
    A create refused with RESOURCE_EXHAUSTED (a quota) is sent again after ``backoff`` seconds, doubling up
    to ``max_backoff``, with jitter, or after the delay the server's RetryInfo asks for; after ``patience``
    seconds of refusals for one config the error is raised. A refused create made no job, so sending it again
    is safe. ``batch_label``: stamp ``bpj_batch=<id>`` on every job (True: a fresh id, a str: that id,
    False: none) so that watching them costs one List call per page. Any other error stops the submission with
    :class:`SubmitFailed`, which holds the jobs submitted so far.
    """
    validation.positive_int(max_in_flight, "max_in_flight")
    for field, value in (("backoff", backoff), ("max_backoff", max_backoff), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise validation.fail(field, f"must be seconds >= 0, got {value!r}")
    label: str | None
    if batch_label is True:
        label = uuid.uuid4().hex
    elif batch_label is False:
        label = None
    else:
        label = batch_label
        problem = validation.label_problem(label, key=False)
        if problem:
            raise validation.fail("batch_label", problem)
    submitted: list[BatchPredictionJob] = []
    watch = Watch([], by="auto")
    for index, config in enumerate(configs):
        try:
            kwargs = _create_kwargs(config, label)
            while len(watch.pending) >= max_in_flight:
                pacer = Pacer(poll, max_poll, None)
                while not watch.poll() and len(watch.pending) >= max_in_flight:
                    sleep(pacer.pause() or 0.0)
            job = _submit(kwargs, backoff, max_backoff, patience, sleep)
        except (errors.BpjError, ValueError, TypeError) as e:
            raise SubmitFailed(index, config, e, submitted) from e
        log.info("submit_many: #%d is %s", index, job.resource_name)
        submitted.append(job)
        watch.add(job)
    return submitted


def _create_kwargs(config: Any, label: str | None) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise validation.fail(
            "configs", f"each config must be a dict of create() arguments, got {type(config).__name__}"
        )
    if "sync" in config:
        raise validation.fail("sync", "submit_many never waits for a job: leave sync out of the configs")
    kwargs = dict(config)
    if label is not None:
        labels = kwargs.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise validation.fail("labels", f"must be a mapping of str to str, got {type(labels).__name__}")
        kwargs["labels"] = {**labels, BATCH_LABEL: label}
    return kwargs


def _submit(
    kwargs: dict[str, Any],
    backoff: float,
    max_backoff: float,
    patience: float,
    sleep: Callable[[float], None],
) -> BatchPredictionJob:
    give_up = time.monotonic() + patience
    cap = backoff
    while True:
        try:
            return BatchPredictionJob.submit(**kwargs)
        except errors.ResourceExhausted as err:
            hint = err.retry_delay
            wait = hint if hint is not None else cap * (0.5 + random.random() / 2)
            if time.monotonic() + wait > give_up:
                raise
            log.info("submit_many: RESOURCE_EXHAUSTED (%s); trying again in %.1fs", err.message, wait)
            sleep(wait)
            cap = min(max_backoff, cap * 2)
