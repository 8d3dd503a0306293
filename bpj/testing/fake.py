"""``FakeVertex``: the local Vertex emulator's services in memory, with jobs moved by the test, not by models.

    from bpj.testing.fake import FakeVertex

    with FakeVertex() as fake:
        fake.init()                                   # bpj.init(...) now reaches the fake, in memory
        job = bpj.jobs.BatchPredictionJob.submit(...) # PENDING until the test says otherwise
        fake.run(job.resource_name)                   # RUNNING
        fake.finish(job.resource_name, successful=10, failed=1)   # SUCCEEDED, with output_info
        assert fake.calls["GetBatchPredictionJob"] == 0

The servicers are the emulator's own (:mod:`bpj.local.vertex`: names, validation, List filters and pages,
operations as Vertex AI has them) over an in-memory store. ``calls`` counts RPCs by method name, so a test
can assert how many calls a poll costs. ``inject()`` makes chosen calls fail, before or after they take effect
(a reply lost on the way back). The same servicers serve over real gRPC and REST servers too
(``bpj.local.servers.serve.serve_grpc(*fake.servicers)``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bpj import bq_uri, errors, states, types
from bpj.local.store import Store
from bpj.local.vertex import Jobs, Models, Operations, Vertex, now
from bpj.transport.memory import InMemoryTransport

S = types.JobState
# The endpoint FakeVertex.init() gives bpj; nothing listens there, the transport is registered for it.
ENDPOINT = "bpj-fake-vertex.invalid:443"


@dataclass
class _Injection:
    error: errors.ApiError | None
    times: int
    after: bool
    delay: float


class _Counted:
    """A servicer whose RPCs are counted (and maybe made to fail) before they reach the real one."""

    def __init__(self, inner: Any, fake: FakeVertex) -> None:
        self._inner = inner
        self._fake = fake
        self.service = inner.service
        for method in inner.service.methods:
            setattr(self, method.name, self._wrap(method.name, getattr(inner, method.name)))

    def _wrap(self, rpc: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: Any) -> Any:
            injection = self._fake._take(rpc)
            if injection is not None and not injection.after:
                time.sleep(injection.delay)
                if injection.error is not None:
                    raise injection.error
            result = fn(request, context)
            if injection is not None and injection.after:
                time.sleep(injection.delay)
                if injection.error is not None:
                    raise injection.error
            return result

        call.__name__ = rpc
        return call


class FakeVertex:
    """JobService, ModelService and Operations in memory; jobs stay PENDING until the test moves them.

    ``auto``: a terminal state every new job goes to at once (e.g. ``S.JOB_STATE_SUCCEEDED``), for tests
    that only need jobs to end. ``cancel_immediately``: a cancelled job goes from CANCELLING to CANCELLED
    at once (the default), else it stays CANCELLING until ``finish(name, S.JOB_STATE_CANCELLED)``.
    """

    def __init__(
        self,
        project: str = "bpj-test",
        location: str = "us-central1",
        *,
        auto: int | None = None,
        cancel_immediately: bool = True,
    ) -> None:
        if auto is not None and not states.is_terminal(auto):
            raise errors.UsageError(f"auto must be a terminal JobState, got {states.name(auto)}")
        self.project = project
        self.location = location
        self.auto = auto
        self.cancel_immediately = cancel_immediately
        self.store = Store(None)
        self.vertex = Vertex(self.store, self._started, self._stopped)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._injections: dict[str, list[_Injection]] = {}
        self.servicers = tuple(
            _Counted(s, self) for s in (Jobs(self.vertex), Models(self.vertex), Operations(self.vertex))
        )
        self.transport = InMemoryTransport(*self.servicers)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    # -- pointing bpj at it -------------------------------------------------------------------------
    def init(self, **settings: Any) -> Any:
        """``bpj.init`` with this fake's project and location and its in-memory transport for the Vertex AI
        endpoint; other settings (``gcs_endpoint``...) pass through. Returns the settings."""
        from bpj import config

        s = config.init(
            project=self.project, location=self.location, api_endpoint=ENDPOINT, transport="grpc", **settings
        )
        config.register_transport(ENDPOINT, self.transport)
        return s

    # -- counting and failing calls -----------------------------------------------------------------
    def _take(self, rpc: str) -> _Injection | None:
        with self._lock:
            self.calls[rpc] += 1
            queue = self._injections.get(rpc)
            if not queue:
                return None
            injection = queue[0]
            injection.times -= 1
            if injection.times <= 0:
                queue.pop(0)
            return injection

    def inject(
        self,
        rpc: str,
        error: errors.ApiError | None = None,
        *,
        times: int = 1,
        after: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` calls of ``rpc`` (e.g. "CreateBatchPredictionJob") raise ``error`` after
        sleeping ``delay`` seconds. With ``after=True`` the call takes effect first, then fails: the server
        did the work and the reply was lost (with ``error=None`` and a ``delay`` past the client's deadline,
        the reply comes too late)."""
        names = {m.name for s in self.servicers for m in s.service.methods}
        if rpc not in names:
            raise errors.UsageError(f"no RPC {rpc!r}; known: {', '.join(sorted(names))}")
        with self._lock:
            self._injections.setdefault(rpc, []).append(_Injection(error, times, after, delay))

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- the stand-in executor ----------------------------------------------------------------------
    def _started(self, name: str) -> None:
        if self.auto is not None:
            self.finish(name, self.auto)

    def _stopped(self, name: str) -> None:
        if self.cancel_immediately:
            job = self.store.get("job", name, types.BatchPredictionJob)
            if job is not None and job.state == S.JOB_STATE_CANCELLING:
                self.finish(name, S.JOB_STATE_CANCELLED)

    def _name(self, name_or_id: str) -> str:
        return name_or_id if "/" in name_or_id else f"{self.parent}/batchPredictionJobs/{name_or_id}"

    def job(self, name: str) -> Any:
        """The stored job (a ``bpj.types.BatchPredictionJob``), by resource name or id."""
        return self.vertex.job(self._name(name))

    def jobs(self) -> list[Any]:
        """Every job of every parent, oldest first."""
        return sorted(
            self.store.all("job", types.BatchPredictionJob), key=lambda j: j.create_time.ToNanoseconds()
        )

    def set_state(self, name: str, state: int) -> Any:
        """Put a job in any state (PAUSED, UPDATING, QUEUED...), with no other change but update_time."""

        def change(job: Any) -> None:
            job.state = state
            job.update_time.CopyFrom(now())

        return self.store.update("job", self._name(name), types.BatchPredictionJob, change)

    def run(self, name: str, *, successful: int = 0, failed: int = 0, incomplete: int = 0) -> Any:
        """PENDING (or any non-terminal state) to RUNNING, with progress counts."""

        def change(job: Any) -> None:
            if states.is_terminal(job.state):
                raise errors.UsageError(f"{job.name} already ended {states.name(job.state)}")
            stamp = now()
            if job.state != S.JOB_STATE_RUNNING:
                job.start_time.CopyFrom(stamp)
            job.state = S.JOB_STATE_RUNNING
            job.update_time.CopyFrom(stamp)
            _counts(job, successful, failed, incomplete)

        return self.store.update("job", self._name(name), types.BatchPredictionJob, change)

    def finish(
        self,
        name: str,
        state: int = S.JOB_STATE_SUCCEEDED,
        *,
        successful: int = 0,
        failed: int = 0,
        incomplete: int = 0,
        error: Any = None,
        output_info: Any = None,
        partial_failures: Any = (),
    ) -> Any:
        """End a job in a terminal ``state``. ``error``: a message (code INTERNAL), a ``(code, message)``
        pair or a ``bpj.types.Status``; FAILED gets a generic one when none is given. ``output_info``
        (dict or message) defaults, for SUCCEEDED and PARTIALLY_SUCCEEDED, to where Vertex AI would write:
        ``<prefix>/prediction-<model>-<time>`` or ``bq://<project>.prediction_<model>_<time>``; for a publisher
        model (Gemini, embeddings) the layout of :mod:`bpj.local.publisher_job`."""
        if not states.is_terminal(state):
            raise errors.UsageError(
                f"finish() takes a terminal state, got {states.name(state)}; see set_state()"
            )
        status = _status(error)
        if status is None and state == S.JOB_STATE_FAILED:
            status = types.Status(code=int(errors.Code.INTERNAL), message="the job failed (FakeVertex)")

        def change(job: Any) -> None:
            stamp = now()
            if not job.HasField("start_time"):
                job.start_time.CopyFrom(stamp)
            job.state = state
            job.end_time.CopyFrom(stamp)
            job.update_time.CopyFrom(stamp)
            _counts(job, successful, failed, incomplete)
            if status is not None:
                job.error.CopyFrom(status)
            if output_info is not None:
                from bpj.validation import message

                job.output_info.CopyFrom(
                    message(types.BatchPredictionJob.OutputInfo, output_info, "output_info")
                )
            elif states.is_success(state):
                _default_output(job)
            for failure in partial_failures:
                job.partial_failures.append(_status(failure))

        return self.store.update("job", self._name(name), types.BatchPredictionJob, change)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FakeVertex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _counts(job: Any, successful: int, failed: int, incomplete: int) -> None:
    if successful or failed or incomplete:
        job.completion_stats.successful_count = successful
        job.completion_stats.failed_count = failed
        job.completion_stats.incomplete_count = incomplete


def _status(error: Any) -> Any:
    if error is None:
        return None
    if isinstance(error, types.Status):
        return error
    if isinstance(error, str):
        return types.Status(code=int(errors.Code.INTERNAL), message=error)
    code, message = error
    return types.Status(code=int(errors.Code.of(code)), message=message)


def _default_output(job: Any) -> None:
    from bpj.local.publisher_job import default_output_info, is_publisher_job

    if is_publisher_job(job):  # Gemini and embeddings jobs: their own layout (bpj.local.publisher_job)
        job.output_info.CopyFrom(default_output_info(job))
        return
    model = (job.model.rsplit("/", 1)[-1] or "model").split("@")[0]
    when = datetime.fromtimestamp(job.create_time.seconds, tz=timezone.utc)
    oc = job.output_config
    if oc.WhichOneof("destination") == "gcs_destination":
        stamp = when.strftime("%Y_%m_%dT%H_%M_%S_000Z")
        prefix = oc.gcs_destination.output_uri_prefix.rstrip("/")
        job.output_info.gcs_output_directory = f"{prefix}/prediction-{model}-{stamp}"
    elif oc.WhichOneof("destination") == "bigquery_destination":
        stamp = when.strftime("%Y_%m_%dT%H_%M_%S_000Z")
        names = bq_uri.parse(oc.bigquery_destination.output_uri)
        project = names.project if names is not None else job.name.split("/")[1]
        job.output_info.bigquery_output_dataset = bq_uri.format_uri(project, f"prediction_{model}_{stamp}")
        job.output_info.bigquery_output_table = "predictions"
