"""``bpj.aio``: batch prediction jobs with async/await, over ``grpc.aio`` or an async REST transport.

    import bpj
    from bpj import aio

    bpj.init(project="my-project", location="us-central1")
    job = await aio.BatchPredictionJob.submit(job_display_name="nightly", model_name="123",
                                              gcs_source="gs://in/*.jsonl", gcs_destination_prefix="gs://out/")
    await job.wait(timeout=3600)                 # JobFailed / JobCancelled / JobExpired / WaitTimeout
    job = await aio.BatchPredictionJob.retrieve("456")
    async for job in aio.BatchPredictionJob.list(filter='labels.team="vision"'): ...
    await aio.wait_all(jobs)                     # one List per poll, whatever the number of jobs

The surface, arguments, errors and rules are those of :mod:`bpj.jobs` and :mod:`bpj.many` (safe create with
the ``bpj_request_id`` label, ``wait`` on every terminal state, one List per poll), with these differences:

- ``BatchPredictionJob(name)`` cannot fetch (``__init__`` cannot await): retrieve with
  ``await BatchPredictionJob.retrieve(name)``. ``BatchPredictionJob(resource)`` wraps a message in hand.
- No property does I/O, ``state`` included: every property reads the resource as of the last create,
  retrieve, List, ``refresh()``, ``wait()`` or ``cancel(wait=True)``. Call ``await job.refresh()`` for news.
- Transports come from the same settings (``bpj.init``, ``BPJ_*``): :func:`async_transport_for` keeps one
  async transport per event loop and endpoint, since a grpc.aio channel serves only the loop that opened it.
  ``await close_transports()`` closes those of the running loop (do it before the loop ends).
  :func:`register_transport` serves an endpoint with a transport of yours (``AsyncInMemoryTransport`` over
  ``FakeVertex().servicers`` in tests), as ``bpj.config.register_transport`` does for the sync API.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from bpj import clients, config, errors, many, rules, states, steps, validation
from bpj import jobs as bpj_jobs
from bpj.jobs import JobCancelled, JobExpired, JobFailed, WaitTimeout, plan_create
from bpj.transport.base import AsyncTransport, Metadata, Method

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from bpj._gen.services.job_service import AsyncJobServiceClient
    from bpj._gen.services.operations import AsyncOperationsClient
    from bpj.transport.aio import AsyncResponseStream

__all__ = [
    "BatchPredictionJob",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "WaitTimeout",
    "as_completed",
    "async_transport_for",
    "close_transports",
    "register_transport",
    "wait_all",
    "wait_operation",
]

log = logging.getLogger("bpj")
T = TypeVar("T")


# -- transports -----------------------------------------------------------------------------------------

_lock = threading.Lock()
_registered: dict[str, AsyncTransport] = {}
# Event loop -> {(kind, endpoint, root cert, credentials id, token): transport}; gone with its loop.
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], AsyncTransport]] = (
    weakref.WeakKeyDictionary()
)


def register_transport(endpoint: str, transport: AsyncTransport | None) -> None:
    """Serve every async call to ``endpoint`` with ``transport``, from any loop (``None`` removes it). bpj
    never closes it. The sync twin is ``bpj.config.register_transport``; ``config.reset()`` does not clear
    this one."""
    with _lock:
        if transport is None:
            _registered.pop(endpoint, None)
        else:
            _registered[endpoint] = transport


def async_transport_for(
    endpoint: str, s: config.Settings | None = None, *, kind: str | None = None
) -> AsyncTransport:
    """The async transport of the running event loop for ``endpoint``: made at the first call in that loop,
    reused by every later one (one grpc.aio channel or HTTP session per loop and endpoint)."""
    registered = _registered.get(endpoint)
    if registered is not None:
        return registered
    if config.registered_transport(endpoint) is not None:
        raise errors.UsageError(
            f"{endpoint} has a sync transport registered (bpj.config.register_transport); give bpj.aio an "
            "async one with bpj.aio.register_transport(endpoint, transport), e.g. "
            "AsyncInMemoryTransport(*fake.servicers)"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise errors.UsageError("bpj.aio calls run inside a coroutine (no event loop is running)") from None
    s = s or config.settings()
    kind = kind or s.transport
    key = (kind, endpoint, s.tls_root_cert, id(s.credentials), s.token)
    with _lock:
        mine = _by_loop.setdefault(loop, {})
        t = mine.get(key)
        if t is None:
            t = _open(kind, endpoint, s)
            if s.token:
                t = AsyncWithMetadata(t, [("authorization", f"Bearer {s.token}")])
            mine[key] = t
        return t


def _open(kind: str, endpoint: str, s: config.Settings) -> AsyncTransport:
    from pathlib import Path

    from bpj.transport import aio

    parsed = config.parse_endpoint(endpoint)
    secure = parsed.tls(s.tls_root_cert)
    if kind == "grpc":
        root = Path(s.tls_root_cert).read_bytes() if s.tls_root_cert else None
        return aio.AsyncGrpcTransport(
            parsed.target(443 if secure else None),
            credentials=lambda: config.resolve_credentials(s, endpoint),
            tls=secure,
            root_certificates=root,
        )
    return aio.AsyncRestTransport(
        f"{'https' if secure else 'http'}://{parsed.target()}",
        credentials=config.resolve_credentials(s, endpoint),
        root_certificates=s.tls_root_cert,
    )


async def close_transports() -> None:
    """Close the transports :func:`async_transport_for` made for the running loop (not registered ones)."""
    with _lock:
        mine = _by_loop.pop(asyncio.get_running_loop(), {})
    for t in mine.values():
        await t.close()


class AsyncWithMetadata:
    """An async transport that adds fixed metadata (``authorization``) to every call of another."""

    def __init__(self, inner: AsyncTransport, metadata: Metadata) -> None:
        self.inner = inner
        self.metadata = tuple(metadata)

    async def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        return await self.inner.unary(method, request, timeout=timeout, metadata=(*self.metadata, *metadata))

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> AsyncResponseStream:
        sent = (*self.metadata, *metadata)
        return self.inner.server_stream(method, request, timeout=timeout, metadata=sent)  # type: ignore[return-value]

    async def close(self) -> None:
        await self.inner.close()


def _job_service(s: config.Settings) -> AsyncJobServiceClient:
    return clients.AsyncJobServiceClient(async_transport_for(s.vertex_endpoint, s))


def _operations(s: config.Settings) -> AsyncOperationsClient:
    return clients.AsyncOperationsClient(async_transport_for(s.vertex_endpoint, s))


# -- the job --------------------------------------------------------------------------------------------


class _Held(Generic[T]):
    """A read-only attribute of the job that is the sync object's attribute of the same name: read from the
    resource it holds, never an RPC."""

    def __init__(self, doc: str | None = None) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, job: BatchPredictionJob, owner: type | None = None) -> T:
        return getattr(job._job, self.name)  # type: ignore[no-any-return]


class BatchPredictionJob:
    """A Vertex AI batch prediction job, async. Get one with ``await BatchPredictionJob.retrieve(name)``,
    ``await BatchPredictionJob.create(...)`` or ``submit(...)``, or ``BatchPredictionJob.list(...)``;
    ``BatchPredictionJob(resource)`` wraps a ``bpj.types.BatchPredictionJob`` message already in hand."""

    # Seconds between polls in wait(): the first, and the cap it grows to (x1.5 a poll, with jitter).
    poll_interval = bpj_jobs.BatchPredictionJob.poll_interval
    max_poll_interval = bpj_jobs.BatchPredictionJob.max_poll_interval

    def __init__(self, resource: Any, *, credentials: Any = None) -> None:
        if isinstance(resource, str):
            raise errors.UsageError(
                "bpj.aio.BatchPredictionJob(name) cannot fetch the job: use "
                "`await BatchPredictionJob.retrieve(name)`"
            )
        self._credentials = credentials
        # The sync object holds the resource (no RPC): its properties are the ones shown here.
        self._job = bpj_jobs.BatchPredictionJob.from_resource(resource, credentials=credentials)

    @classmethod
    def from_resource(cls, resource: Any, *, credentials: Any = None) -> BatchPredictionJob:
        """A job object for a BatchPredictionJob message already in hand (no RPC); the same as
        ``BatchPredictionJob(resource)``."""
        return cls(resource, credentials=credentials)

    @classmethod
    async def retrieve(
        cls,
        batch_prediction_job_name: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
    ) -> BatchPredictionJob:
        """Fetch a job by resource name or ID (one Get): the async form of ``bpj.BatchPredictionJob(name)``."""
        s = config.settings(project=project, location=location, credentials=credentials)
        name = validation.job_name(batch_prediction_job_name, s.project, s.location)
        where = validation.JOB_NAME.match(name)
        assert where is not None  # job_name() returns a full resource name
        s = config.settings(project=where["project"], location=where["location"], credentials=credentials)
        request = bpj_jobs.messages().GetBatchPredictionJobRequest(name=name)
        resource = await _job_service(s).get_batch_prediction_job(request)
        return cls(resource, credentials=credentials)

    def _settings(self) -> config.Settings:
        return config.settings(project=self.project, location=self.location, credentials=self._credentials)

    def to_sync(self) -> bpj_jobs.BatchPredictionJob:
        """The sync :class:`bpj.jobs.BatchPredictionJob` for this job as last fetched (no RPC), e.g. for
        ``iter_outputs()`` or ``outputs()`` (blocking: run them in a thread)."""
        return bpj_jobs.BatchPredictionJob.from_resource(self.gca_resource, credentials=self._credentials)

    # -- create -------------------------------------------------------------------------------------
    @classmethod
    async def create(
        cls,
        job_display_name: str,
        model_name: Any = None,
        instances_format: str = "jsonl",
        predictions_format: str = "jsonl",
        gcs_source: Any = None,
        bigquery_source: str | None = None,
        gcs_destination_prefix: str | None = None,
        bigquery_destination_prefix: str | None = None,
        model_parameters: Any = None,
        machine_type: str | None = None,
        accelerator_type: str | None = None,
        accelerator_count: int | None = None,
        starting_replica_count: int | None = None,
        max_replica_count: int | None = None,
        generate_explanation: bool = False,
        explanation_metadata: Any = None,
        explanation_parameters: Any = None,
        labels: Mapping[str, str] | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        encryption_spec_key_name: str | None = None,
        sync: bool = True,
        create_request_timeout: float | None = None,
        batch_size: int | None = None,
        model_monitoring_objective_config: Any = None,
        model_monitoring_alert_config: Any = None,
        analysis_instance_schema_uri: str | None = None,
        service_account: str | None = None,
        *,
        instance_config: Any = None,
        unmanaged_container_model: Any = None,
        disable_container_logging: bool = False,
        request_id_label: bool = True,
        **fields: Any,
    ) -> BatchPredictionJob:
        """Create a job; with ``sync=True`` (the default) also ``await wait()``. The parameters, checks and
        the safe create (request-id label, lookup after an ambiguous failure) are
        :meth:`bpj.jobs.BatchPredictionJob.create`'s."""
        plan = plan_create(locals())
        created = await steps.run_async(
            steps.create_job(
                plan.request, create_request_timeout, plan.request_id, lookup_first=plan.lookup_first
            ),
            steps.one(_job_service(plan.settings)),
        )
        out = cls(created, credentials=credentials)
        log.info("created batch prediction job %s (%s)", out.resource_name, out.display_name)
        if sync:
            await out.wait()
        return out

    @classmethod
    async def submit(cls, *args: Any, **kwargs: Any) -> BatchPredictionJob:
        """``await create(..., sync=False)``: the same parameters; returns as soon as the job exists."""
        if "sync" in kwargs or len(args) > 22:
            raise validation.fail("sync", "submit() never waits: call create(sync=True) to wait")
        kwargs["sync"] = False
        return await cls.create(*args, **kwargs)

    # -- list ---------------------------------------------------------------------------------------
    @classmethod
    def list(
        cls,
        filter: str | None = None,
        order_by: str | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        page_size: int | None = None,
    ) -> AsyncIterator[BatchPredictionJob]:
        """Jobs of a project and location, an async iterator (``async for``) that fetches a page at a time.
        Arguments and ordering are :meth:`bpj.jobs.BatchPredictionJob.list`'s; they are checked now."""
        s = config.settings(project=project, location=location, credentials=credentials)
        keys = bpj_jobs.order_keys(order_by)
        if page_size is not None:
            rules.integer(page_size, "page_size")
        request = bpj_jobs.messages().ListBatchPredictionJobsRequest(
            parent=s.parent, filter=filter or "", page_size=page_size or 0
        )
        return cls._listed(s, request, keys, credentials)

    @classmethod
    async def _listed(
        cls, s: config.Settings, request: Any, keys: Any, credentials: Any
    ) -> AsyncIterator[BatchPredictionJob]:
        listed = steps.iterate_async(bpj_jobs.list_jobs(request), steps.one(_job_service(s)))
        found = (cls(r, credentials=credentials) async for r in listed)
        if keys is None:
            async for job in found:
                yield job
            return
        everything = [job async for job in found]
        for field, descending in reversed(keys):
            key = bpj_jobs.sort_key(field)
            everything.sort(key=lambda j: key(j._job), reverse=descending)  # noqa: B023 (used at once)
        for job in everything:
            yield job

    # -- properties: the resource as last fetched, never an RPC (the sync object's, but for state) -----
    gca_resource = _Held[Any]("The ``bpj.types.BatchPredictionJob`` message as last fetched.")
    resource_name = _Held[str]()
    name = _Held[str]("The job id (the last part of the resource name), as the official class has it.")
    project = _Held[str]()
    location = _Held[str]()
    display_name = _Held[str]()
    output_info = _Held[Any]()
    completion_stats = _Held[Any]()
    partial_failures = _Held[builtins.list[Any]]()
    error = _Held[Any]("The google.rpc.Status of a failed job (empty otherwise).")
    create_time = _Held[datetime | None]()
    start_time = _Held[datetime | None]()
    end_time = _Held[datetime | None]()
    update_time = _Held[datetime | None]()
    labels = _Held[dict[str, str]]()
    encryption_spec = _Held[Any]()

    @property
    def state(self) -> int:
        """The state as last fetched, a :class:`bpj.states.JobState`. Unlike the sync ``state`` it never
        refreshes (a property cannot await): ``await job.refresh()`` first for the current one."""
        return states.as_enum(self.gca_resource.state)

    def done(self) -> bool:
        """Whether the job was in a terminal state when last fetched (no RPC)."""
        return states.is_terminal(self.gca_resource.state)

    def to_dict(self) -> dict[str, Any]:
        """The resource as proto3 JSON (camelCase keys), as the official ``to_dict``."""
        return self._job.to_dict()

    def __repr__(self) -> str:
        return f"<bpj.aio.BatchPredictionJob {self.resource_name} {states.name(self.gca_resource.state)}>"

    async def refresh(self, resource: Any = None) -> BatchPredictionJob:
        """Fetch the job again (one Get); or adopt ``resource``, a newer message of this job (no RPC)."""
        if resource is None:
            request = bpj_jobs.messages().GetBatchPredictionJobRequest(name=self.resource_name)
            resource = await _job_service(self._settings()).get_batch_prediction_job(request)
        self._job.refresh(resource)
        return self

    # -- waiting ------------------------------------------------------------------------------------
    async def wait(self, timeout: float | None = None) -> BatchPredictionJob:
        """Poll (with ``asyncio.sleep`` between Gets) until the job is terminal; return it when it SUCCEEDED
        or PARTIALLY_SUCCEEDED. Raises what the sync ``wait()`` raises: :class:`JobFailed`,
        :class:`JobCancelled`, :class:`JobExpired` (``.job`` is this object) or :class:`WaitTimeout`."""
        if not await steps.run_async(bpj_jobs.wait_steps(self._job, self, timeout), self._client_for):
            raise WaitTimeout(self, timeout or 0.0)
        return bpj_jobs.settle(self._job, self)  # type: ignore[no-any-return]

    wait_for_completion = wait

    def _client_for(self, where: Any) -> AsyncJobServiceClient:
        return _job_service(self._settings())

    # -- cancel, delete -----------------------------------------------------------------------------
    async def cancel(self, wait: bool = False) -> BatchPredictionJob:
        """Ask the service to cancel the job; with ``wait=True`` poll until it is terminal and return
        without raising for that state."""
        request = bpj_jobs.messages().CancelBatchPredictionJobRequest(name=self.resource_name)
        await _job_service(self._settings()).cancel_batch_prediction_job(request)
        log.info("%s: cancel requested", self.resource_name)
        if wait:
            await steps.run_async(bpj_jobs.wait_steps(self._job, self, None), self._client_for)
        return self

    async def delete(self, timeout: float | None = None) -> None:
        """Delete the job and wait for the deletion's long-running operation to finish."""
        s = self._settings()
        request = bpj_jobs.messages().DeleteBatchPredictionJobRequest(name=self.resource_name)
        op = await _job_service(s).delete_batch_prediction_job(request)
        await wait_operation(op, _operations(s), timeout, what="JobService.DeleteBatchPredictionJob")
        log.info("%s: deleted", self.resource_name)


async def wait_operation(op: Any, operations: Any, timeout: float | None = None, what: str = "") -> Any:
    """Poll a google.longrunning Operation until done (``asyncio.sleep`` between Gets); raise its error as an
    ApiError, or TimeoutError after ``timeout`` seconds: :func:`bpj.lro.wait_operation`, awaited."""
    return await steps.run_async(steps.wait_operation(op, timeout, what), steps.one(operations))


# -- many jobs --------------------------------------------------------------------------------------------


class _Watch:
    """:class:`bpj.many.Watch` over the sync objects that hold these jobs' resources, with an async poll:
    List calls (per parent, per filter, per page), then a Get for each pending job no List returned."""

    def __init__(
        self, watched: Iterable[BatchPredictionJob], by: str, page_size: int, credentials: Any
    ) -> None:
        self.jobs: builtins.list[BatchPredictionJob] = []
        for job in watched:
            if not isinstance(job, BatchPredictionJob):
                raise validation.fail(
                    "jobs", f"must hold bpj.aio BatchPredictionJob objects, got {type(job).__name__}"
                )
            self.jobs.append(job)
        self.watch = many.Watch(
            [j._job for j in self.jobs], by=by, page_size=page_size, credentials=credentials
        )
        self._view = {id(j._job): j for j in self.jobs}

    def views(self, held: Iterable[bpj_jobs.BatchPredictionJob]) -> builtins.list[BatchPredictionJob]:
        return [self._view[id(j)] for j in held]

    def client_for(self, where: Any) -> AsyncJobServiceClient:
        """The async clients of the watch's calls: a job's own for a Get, the watch's for a List."""
        if isinstance(where, bpj_jobs.BatchPredictionJob):
            return self._view[id(where)]._client_for(None)
        project, location, credentials = where
        return _job_service(config.settings(project=project, location=location, credentials=credentials))


def as_completed(
    jobs: Iterable[BatchPredictionJob],
    *,
    timeout: float | None = None,
    poll: float = 2.0,
    max_poll: float = 30.0,
    by: str = "auto",
    page_size: int = many.PAGE_SIZE,
    credentials: Any = None,
) -> AsyncIterator[BatchPredictionJob]:
    """``async for job in as_completed(jobs)``: each job as it reaches a terminal state, those terminal
    already first; one List call per page of results a poll, as :func:`bpj.many.as_completed` (same
    arguments; ``by`` as there). Raises :class:`bpj.many.NotDone` when ``timeout`` passes first."""
    watch = _Watch(jobs, by, page_size, credentials)
    return _completed(watch, steps.Pacer(poll, max_poll, timeout))


async def _completed(watch: _Watch, pacer: steps.Pacer) -> AsyncIterator[BatchPredictionJob]:
    try:
        async for job in steps.iterate_async(many.completed(watch.watch, pacer), watch.client_for):
            yield watch.views([job])[0]
    except many.NotDone as e:
        raise many.NotDone(
            cast(Any, watch.views(e.done)), cast(Any, watch.views(e.not_done)), e.timeout
        ) from None


async def wait_all(
    jobs: Iterable[BatchPredictionJob],
    *,
    timeout: float | None = None,
    poll: float = 2.0,
    max_poll: float = 30.0,
    raise_on_failure: bool = True,
    by: str = "auto",
    page_size: int = many.PAGE_SIZE,
    credentials: Any = None,
) -> builtins.list[BatchPredictionJob]:
    """Wait until every job is terminal; return them in the order given. The rules of
    :func:`bpj.many.wait_all`: :class:`bpj.many.JobsFailed` when some did not succeed (unless
    ``raise_on_failure=False``), :class:`bpj.many.NotDone` when ``timeout`` passes first."""
    watch = _Watch(jobs, by, page_size, credentials)
    async for _ in _completed(watch, steps.Pacer(poll, max_poll, timeout)):
        pass
    failed = many.failures(watch.jobs)
    if failed and raise_on_failure:
        raise many.JobsFailed(cast(Any, watch.jobs), failed)
    return watch.jobs
