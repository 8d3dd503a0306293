"""``bpj.aio``: batch prediction jobs with async/await, over ``grpc.aio`` or an async REST transport.

    import bpj
    from bpj import aio

    bpj.init(project="my-project", location="us-central1")
    job = await aio.BatchPredictionJob.submit(job_display_name="nightly", model_name="123",
                                              gcs_source="gs://in/*.jsonl", gcs_destination_prefix="gs://out/")
    await job.wait(timeout=3600)                 # JobFailed / JobCancelled / JobExpired / WaitTimeout
    job = await aio.BatchPredictionJob("456")    # one Get, as bpj.BatchPredictionJob("456")
    table = await (await job.outputs()).to_arrow()
    async for job in aio.BatchPredictionJob.list(filter='labels.team="vision"'): ...
    await aio.wait_all(jobs)                     # one List per poll, whatever the number of jobs

The job class has every public member of :class:`bpj.jobs.BatchPredictionJob`, with its arguments, checks,
errors and rules (safe create with the ``bpj_request_id`` label, ``wait`` on every terminal state, one List
per poll in :func:`wait_all` and :func:`as_completed`, as :mod:`bpj.many`); what does I/O is a coroutine.
The control loops are the step machines of :mod:`bpj.steps`, run by ``steps.run_async``. The differences:

- ``BatchPredictionJob(name_or_id, project, location, credentials)`` checks the name and holds it without
  I/O (``__init__`` cannot await). ``await`` the object to fetch it: ``job = await BatchPredictionJob(name)``
  is one Get (``retrieve(name)`` is the same). Before a fetch, ``resource_name``, ``name``, ``project`` and
  ``location`` are known, and ``refresh()``, ``wait()``, ``cancel()``, ``delete()`` and ``outputs()`` work;
  a property that needs the resource raises ``bpj.errors.UsageError`` saying to await the job first.
  ``BatchPredictionJob(resource)`` wraps a ``bpj.types.BatchPredictionJob`` message in hand; awaiting an
  object that holds a resource does no I/O.
- No property does I/O, ``state`` included: every property reads the resource as of the last create,
  fetch, List, ``refresh()``, ``wait()`` or ``cancel(wait=True)``. Call ``await job.refresh()`` for news.
- ``list()`` is an async iterator (``async for``) that fetches a page at a time.
- ``await job.outputs(**kwargs)`` gives an async reader (:mod:`bpj.outputs.aio`): ``await
  reader.to_arrow()``, ``async for batch in reader.iter_batches()``, ``async for row in reader``, fed by the
  sync reader from worker threads; ``await job.iter_outputs()`` gives what the sync ``iter_outputs`` gives
  (Blobs or BigQuery rows) as an async iterator, its pages fetched in a worker thread. Both fetch the job
  first unless it is terminal, as the sync methods do.
- Transports come from the same settings (``bpj.init``, ``BPJ_*``): :func:`async_transport_for` keeps one
  async transport per event loop and endpoint, since a grpc.aio channel serves only the loop that opened it.
  ``await close_transports()`` closes those of the running loop (do it before the loop ends).
  :func:`register_transport` serves an endpoint with a transport of yours (``AsyncInMemoryTransport`` over
  ``FakeVertex().servicers`` in tests), as ``bpj.config.register_transport`` does for the sync API.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from bpj import clients, config, errors, many, rules, states, steps, validation
from bpj import jobs as bpj_jobs
from bpj._log import logger
from bpj.jobs import JobCancelled, JobExpired, JobFailed, WaitTimeout, plan_create
from bpj.transport.base import AsyncTransport, Metadata, Method

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from bpj import types
    from bpj._gen.services.job_service import AsyncJobServiceClient
    from bpj._gen.services.operations import AsyncOperationsClient
    from bpj.outputs import aio as outputs_aio
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

log = logger()
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
    key = (kind, endpoint, s.tls_root_cert, id(s.credentials), s.metadata)
    with _lock:
        mine = _by_loop.setdefault(loop, {})
        t = mine.get(key)
        if t is None:
            t = _open(kind, endpoint, s)
            if s.metadata:  # the token and bpj.init(request_metadata=)
                t = AsyncWithMetadata(t, s.metadata)
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
    resource it holds, never an RPC. ``needs_resource=False``: known from the name alone (no fetch needed)."""

    def __init__(self, doc: str | None = None, *, needs_resource: bool = True) -> None:
        self.__doc__ = doc
        self.needs_resource = needs_resource

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, job: BatchPredictionJob | None, owner: type | None = None) -> T:
        if job is None:  # on the class: the descriptor (its docstring)
            return self  # type: ignore[return-value]
        if self.needs_resource:
            job._require_fetched(self.name)
        return getattr(job._job, self.name)  # type: ignore[no-any-return]


class BatchPredictionJob:
    """A Vertex AI batch prediction job, async.

    ``job = await BatchPredictionJob(name_or_id)`` fetches a job (one Get), as ``BatchPredictionJob(name)``
    does in the sync API; ``BatchPredictionJob(name_or_id)`` without ``await`` checks the name and holds it
    without any I/O (see :meth:`__await__`). ``await BatchPredictionJob.create(...)``, ``submit(...)``,
    ``retrieve(name)`` and ``BatchPredictionJob.list(...)`` give jobs already fetched, and
    ``BatchPredictionJob(resource)`` wraps a ``bpj.types.BatchPredictionJob`` message already in hand."""

    # Seconds between polls in wait(): the first, and the cap it grows to (x1.5 a poll, with jitter).
    poll_interval = bpj_jobs.BatchPredictionJob.poll_interval
    max_poll_interval = bpj_jobs.BatchPredictionJob.max_poll_interval

    def __init__(
        self,
        batch_prediction_job_name: Any,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
    ) -> None:
        """``batch_prediction_job_name``: a resource name, or a job ID with ``project`` and ``location``
        (defaults: ``bpj.init``), checked now; or a ``bpj.types.BatchPredictionJob`` message to wrap (its
        name says the project and location). No I/O: ``await`` the object to fetch a named job."""
        self._credentials = credentials
        self._placeholder: Any = None
        if isinstance(batch_prediction_job_name, str):
            s = config.settings(project=project, location=location, credentials=credentials)
            name = validation.job_name(batch_prediction_job_name, s.project, s.location)
            # Until the first fetch the sync object holds a message with the name alone (state
            # JOB_STATE_UNSPECIFIED: not terminal, so wait() begins with a Get).
            self._placeholder = resource = steps.messages().BatchPredictionJob(name=name)
        else:
            for given, value in (("project", project), ("location", location)):
                if value is not None:
                    raise validation.fail(given, "comes from the resource's name when a message is given")
            resource = batch_prediction_job_name
        # The sync object holds the resource (no RPC): its properties are the ones shown here.
        self._job = bpj_jobs.BatchPredictionJob.from_resource(resource, credentials=credentials)

    def __await__(self) -> Generator[Any, None, BatchPredictionJob]:
        """``await job``: fetch the job (one Get) if this object has not fetched it yet, and return it. An
        object that holds a resource (from a fetch, a create, a List or a message) returns at once, without
        I/O: ``await job.refresh()`` fetches again."""
        return self._fetched().__await__()

    async def _fetched(self) -> BatchPredictionJob:
        if not self._has_resource():
            await self.refresh()
        return self

    def _has_resource(self) -> bool:
        return self._placeholder is None or self._job.gca_resource is not self._placeholder

    def _require_fetched(self, what: str) -> None:
        if not self._has_resource():
            raise errors.UsageError(
                f"{what} needs the job, which this object has not fetched: "
                f"`job = await bpj.aio.BatchPredictionJob({self.resource_name!r})` (or `await job.refresh()`) "
                "first"
            )

    @classmethod
    def from_resource(cls, resource: Any, *, credentials: Any = None) -> BatchPredictionJob:
        """A job object for a BatchPredictionJob message already in hand (no RPC); the same as
        ``BatchPredictionJob(resource)``."""
        if isinstance(resource, str):
            raise validation.fail("resource", "must be a BatchPredictionJob message, not a name")
        return cls(resource, credentials=credentials)

    @classmethod
    async def retrieve(
        cls,
        batch_prediction_job_name: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
    ) -> BatchPredictionJob:
        """Fetch a job by resource name or ID (one Get): ``await BatchPredictionJob(name, ...)``."""
        return await cls(batch_prediction_job_name, project, location, credentials)

    def _settings(self) -> config.Settings:
        return config.settings(project=self.project, location=self.location, credentials=self._credentials)

    def to_sync(self) -> bpj_jobs.BatchPredictionJob:
        """The sync :class:`bpj.jobs.BatchPredictionJob` for this job as last fetched (no RPC)."""
        self._require_fetched("to_sync()")
        return bpj_jobs.BatchPredictionJob.from_resource(self.gca_resource, credentials=self._credentials)

    # -- create -------------------------------------------------------------------------------------
    @classmethod
    async def create(
        cls,
        job_display_name: str | None,
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
        """``await create(..., sync=False)``: the same parameters; returns as soon as the job exists.
        ``job_display_name`` may be left out, as in the sync ``submit``."""
        if "sync" in kwargs or len(args) > 22:
            raise validation.fail("sync", "submit() never waits: call create(sync=True) to wait")
        if not args:
            kwargs.setdefault("job_display_name", None)
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
        *,
        lazy: bool = False,
    ) -> AsyncIterator[BatchPredictionJob]:
        """Jobs of a project and location, always an async iterator (``async for``) that fetches a page at a
        time, whatever ``lazy`` says (the sync ``list`` returns a list unless ``lazy=True``; collect one
        with ``[job async for job in BatchPredictionJob.list()]``). Arguments and ordering are
        :meth:`bpj.jobs.BatchPredictionJob.list`'s; they are checked now."""
        s = config.settings(project=project, location=location, credentials=credentials)
        keys = bpj_jobs.order_keys(order_by)
        if page_size is not None:
            rules.integer(page_size, "page_size")
        rules.flag(lazy, "lazy")
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
    gca_resource: _Held[types.BatchPredictionJob] = _Held(
        "The ``bpj.types.BatchPredictionJob`` message as last fetched."
    )
    credentials = _Held[Any](
        "The credentials this job's calls use: the ones given, else ``bpj.init``'s.", needs_resource=False
    )
    preview = _Held[Any](
        "The official SDK's v1beta1 face: bpj speaks v1 only (NotImplementedError).", needs_resource=False
    )
    resource_name = _Held[str](needs_resource=False)
    name = _Held[str](
        "The job id (the last part of the resource name), as the official class has it.", needs_resource=False
    )
    project = _Held[str](needs_resource=False)
    location = _Held[str](needs_resource=False)
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
    def api_client(self) -> AsyncJobServiceClient:
        """bpj's async JobService client for this job's project and location, on the running loop's
        transport (the sync ``api_client`` is the blocking one)."""
        return _job_service(self._settings())

    @property
    def state(self) -> states.JobState:
        """The state as last fetched, a :class:`bpj.states.JobState`. Unlike the sync ``state`` it never
        refreshes (a property cannot await): ``await job.refresh()`` first for the current one."""
        self._require_fetched("state")
        return states.as_enum(self._job.gca_resource.state)

    def done(self) -> bool:
        """Whether the job was in a terminal state when last fetched (no RPC)."""
        self._require_fetched("done()")
        return states.is_terminal(self._job.gca_resource.state)

    def to_dict(self) -> dict[str, Any]:
        """The resource as proto3 JSON (camelCase keys), as the official ``to_dict``."""
        self._require_fetched("to_dict()")
        return self._job.to_dict()

    def __repr__(self) -> str:
        if not self._has_resource():
            return f"<bpj.aio.BatchPredictionJob {self.resource_name} (not fetched)>"
        return (
            f"<bpj.aio.BatchPredictionJob {self.resource_name} {states.name(self._job.gca_resource.state)}>"
        )

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

    async def wait_for_resource_creation(self) -> None:
        """Return once the job exists on the server: at once for a job this object holds (created, listed,
        fetched); for one held by name only, one Get (``bpj.errors.NotFound`` when there is none)."""
        await self

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

    async def delete(self, sync: bool = True, timeout: float | None = None) -> None:
        """Delete the job; with ``sync=True`` (the default) wait for the deletion's long-running operation to
        finish (``timeout`` seconds at most), with ``sync=False`` return once the service accepted it."""
        rules.flag(sync, "sync")
        rules.timeout(timeout, "timeout")
        s = self._settings()
        request = bpj_jobs.messages().DeleteBatchPredictionJobRequest(name=self.resource_name)
        op = await _job_service(s).delete_batch_prediction_job(request)
        if not sync:
            log.info("%s: deletion started (%s)", self.resource_name, op.name)
            return
        await wait_operation(op, _operations(s), timeout, what="JobService.DeleteBatchPredictionJob")
        log.info("%s: deleted", self.resource_name)

    # -- outputs ------------------------------------------------------------------------------------
    async def outputs(self, **kwargs: Any) -> outputs_aio.AsyncReader:
        """The predictions through bpj's fast readers, as an async reader (:mod:`bpj.outputs.aio`): the
        sync ``outputs(**kwargs)`` reader (``read_gcs`` or ``read_bigquery``, same options), made in a
        thread and wrapped; ``queue_size`` (async only): the items a stream holds for you (default 2).
        Like the sync method it fetches the job first (one Get) unless it is terminal already, and raises
        RuntimeError unless it succeeded."""
        from bpj.outputs import aio as outputs_aio

        queue_size = kwargs.pop("queue_size", outputs_aio.QUEUE_SIZE)
        await self._require_outputs()
        reader = await asyncio.to_thread(lambda: self._job.outputs(**kwargs))
        return outputs_aio.wrap(reader, queue_size=queue_size)

    async def iter_outputs(self, bq_max_results: int | None = 100) -> AsyncGenerator[Any, None]:
        """What the sync ``iter_outputs`` gives (the google-cloud-storage Blobs of the output directory, or
        at most ``bq_max_results`` rows of the BigQuery predictions table), as an async iterator:
        ``async for blob in await job.iter_outputs()``. The clients are made in a thread and every page is
        fetched in a worker thread. A Blob's own methods block (google-cloud-storage is sync): call them
        with ``asyncio.to_thread``. Fetches the job first unless it is terminal, as :meth:`outputs`."""
        await self._require_outputs()
        from bpj.outputs import aio as outputs_aio

        listed = await asyncio.to_thread(self._job.iter_outputs, bq_max_results)
        return outputs_aio.each(outputs_aio.in_thread(lambda: _pages(listed), name="bpj-aio-iter-outputs"))

    async def _require_outputs(self) -> None:
        if not self._has_resource() or not states.is_terminal(self._job.gca_resource.state):
            await self.refresh()
        state = self._job.gca_resource.state
        if not states.is_success(state):
            raise RuntimeError(
                f"cannot read the outputs of {self.resource_name} before it succeeds; it is {states.name(state)}"
            )


def _pages(listed: Any) -> Iterator[builtins.list[Any]]:
    """The items of a google.api_core page iterator a page at a time (one item at a time for any other
    iterable)."""
    pages = getattr(listed, "pages", None)
    if pages is None:
        yield from ([item] for item in listed)
        return
    for page in pages:
        yield builtins.list(page)


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
