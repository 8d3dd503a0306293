"""Runs batch prediction jobs: a bounded pool of workers, each job read, predicted and written in batches.

A job goes PENDING -> RUNNING -> SUCCEEDED | FAILED, or through CANCELLING to CANCELLED, as Vertex AI
reports it; completion_stats are saved as the job goes, so Get shows progress. A malformed instance or a
model error on one instance goes to the errors output and does not fail the job; a missing model, an
unreadable input or a bad destination does, with an error that says which.

The model is loaded and run in a process of its own (:mod:`bpj.local.predictor_process`), one per running
job; this stack process reads the inputs, writes the outputs and keeps the store. Batches are sent a few at a
time, so reading and writing overlap with predicting. Cancel stops that process (SIGTERM, then SIGKILL), so a
predictor that never returns from ``load`` or ``predict`` cannot keep its job running: the job ends CANCELLED
with the completion_stats of the batches written so far. A predictor process that dies on its own (crash,
signal, ``os._exit``) fails the job with INTERNAL and its exit code or signal.

Partial outputs: a job that does not succeed leaves the files (or table rows) it wrote, as Vertex AI does, and
does not list them in output_info.

After a crash the store may hold jobs that were RUNNING: :meth:`Executor.recover` ends them FAILED with an
error that says so (their outputs are partial and are not presented in output_info), ends CANCELLING ones
CANCELLED, and starts PENDING ones again. :meth:`Executor.shutdown` stops the predictor processes at once and
ends the jobs that were running the same way.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpj import bq_uri, errors, types
from bpj.local.store import Store
from bpj.local.vertex import find_model

if TYPE_CHECKING:
    from bpj.local.predictor_process import PredictorProcess

log = logging.getLogger("bpj.local")
S = types.JobState
DEFAULT_BATCH_SIZE = 64
# Batches go to the predictor process in messages of up to this many instances (or batches), with up to
# IN_FLIGHT messages sent and not yet answered (measured with benchmarks/bench_executor.py).
MESSAGE_INSTANCES = 1024
MESSAGE_BATCHES = 64
IN_FLIGHT = 2
MAX_PARTIAL_FAILURES = 10
CRASHED = (
    "The local stack stopped while this job was running (crash or kill). Its outputs are partial and are "
    "not listed in output_info; create the job again."
)


class Cancelled(Exception):
    """The job was cancelled, or the stack is stopping, between two batches."""


class Executor:
    def __init__(
        self,
        store: Store,
        gcs: Any,
        tables: Any,
        workdir: Path,
        *,
        workers: int = 2,
        progress_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.gcs = gcs
        self.tables = tables
        self.workdir = workdir
        self.progress_interval = progress_interval
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bpj-job")
        self._cancel: dict[str, threading.Event] = {}
        self._children: dict[str, PredictorProcess] = {}
        # Predictor processes are started from this one thread: they die with the thread that started them.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bpj-predictor-spawn")
        self._spare: Future[PredictorProcess] | None = self._spawner.submit(_new_process)
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        # ``module:Class`` answering publisher-model jobs (bpj.local.publisher); None: BPJ_PUBLISHER_MODEL or
        # the stand-in.
        self.publisher_model: str | None = None

    # -- what the JobService calls ---------------------------------------------------------------------
    def start(self, name: str) -> None:
        with self._lock:
            event = self._cancel.setdefault(name, threading.Event())
        self._pool.submit(self._run, name, event)

    def stop(self, name: str) -> None:
        with self._lock:
            event = self._cancel.setdefault(name, threading.Event())
            event.set()
            child = self._children.get(name)
        if child is not None:
            child.stop()

    def recover(self) -> None:
        """Settle jobs a previous run of the stack left unfinished (see the module docstring)."""
        for job in self.store.all("job", types.BatchPredictionJob):
            if job.state == S.JOB_STATE_RUNNING:
                self.finish(job.name, S.JOB_STATE_FAILED, error=(errors.Code.ABORTED, CRASHED))
            elif job.state == S.JOB_STATE_CANCELLING:
                self.finish(job.name, S.JOB_STATE_CANCELLED)
            elif job.state in (S.JOB_STATE_PENDING, S.JOB_STATE_QUEUED):
                self.start(job.name)

    def shutdown(self) -> None:
        """Stop taking work and stop every predictor process; running jobs end FAILED, as after a crash."""
        with self._lock:
            self.stopping.set()
            children = list(self._children.values())
        for child in children:
            child.stop()
        self._pool.shutdown(wait=True, cancel_futures=False)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.exception() is None:
            spare.result().stop()
            spare.result().close()
        self._spawner.shutdown(wait=True)

    def spawn(self, name: str, what: str, cancel: threading.Event) -> PredictorProcess:
        """The predictor process of job ``name`` (the spare one if it is ready), unless it is cancelled."""
        with self._lock:
            if cancel.is_set() or self.stopping.is_set():
                raise Cancelled
            spare, self._spare = self._spare, None
        # Starting a process takes milliseconds (the spare's imports run in the spare), so wait for it.
        child = spare.result() if spare is not None and spare.exception() is None else None
        if child is None or not child.alive():
            if child is not None:
                child.close()  # it died (e.g. the thread that started the stack ended): reap it
            child = self._spawner.submit(_new_process).result()
        child.what = what
        with self._lock:
            self._children[name] = child
            if cancel.is_set() or self.stopping.is_set():
                child.stop()  # cancelled meanwhile: loading then ends with PredictorDied
        return child

    def release(self, name: str, child: PredictorProcess) -> None:
        """Forget and end the predictor process of job ``name``; start a spare for the next job."""
        with self._lock:
            if self._children.get(name) is child:
                del self._children[name]
        child.close()
        with self._lock:
            if self._spare is None and not self.stopping.is_set():
                self._spare = self._spawner.submit(_new_process)

    # -- running one job ---------------------------------------------------------------------------------
    def _run(self, name: str, cancel: threading.Event) -> None:
        try:
            job = self.store.get("job", name, types.BatchPredictionJob)
            if job is None or job.state not in (S.JOB_STATE_PENDING, S.JOB_STATE_CANCELLING):
                return  # deleted or settled while it waited
            if (
                cancel.is_set() or job.state == S.JOB_STATE_CANCELLING
            ):  # cancelled while it waited for a worker
                self.finish(name, S.JOB_STATE_CANCELLED)
                return
            if self.stopping.is_set():
                return  # stays PENDING: the next start of the stack runs it
            job = self.update(name, _running)
            _run_class(job)(self, job, cancel).execute()
        except Exception:  # never let a worker die silently
            log.exception("job %s: unexpected failure", name)
            self.finish(name, S.JOB_STATE_FAILED, error=(errors.Code.INTERNAL, "the local executor failed"))
        finally:
            with self._lock:
                self._cancel.pop(name, None)

    def update(self, name: str, change: Any) -> Any:
        return self.store.update("job", name, types.BatchPredictionJob, change)

    def finish(
        self,
        name: str,
        state: int,
        *,
        error: tuple[errors.Code, str] | None = None,
        stats: Any = None,
        output_info: Any = None,
        partial_failures: list[Any] | None = None,
    ) -> None:
        def change(job: Any) -> None:
            job.state = state
            stamp = _now()
            job.update_time.CopyFrom(stamp)
            job.end_time.CopyFrom(stamp)
            if error is not None:
                job.error.CopyFrom(types.Status(code=int(error[0]), message=error[1]))
            if stats is not None:
                job.completion_stats.CopyFrom(stats)
            if output_info is not None:
                job.output_info.CopyFrom(output_info)
            if partial_failures:
                del job.partial_failures[:]
                job.partial_failures.extend(partial_failures)

        with contextlib.suppress(errors.NotFound):  # deleted meanwhile
            self.update(name, change)


class Run:
    """One execution of one job."""

    def __init__(self, executor: Executor, job: Any, cancel: threading.Event) -> None:
        self.ex = executor
        self.job = job
        self.cancel = cancel
        self.stats = types.CompletionStats()
        self.partial_failures: list[Any] = []
        self.last_saved = time.monotonic()

    def execute(self) -> None:
        from bpj.local.inputs import read_instances
        from bpj.local.predictor_process import PredictorDied

        job, ex = self.job, self.ex
        sink = child = None
        try:
            model = self.model()
            workdir = ex.workdir / job.name.rsplit("/", 1)[-1]
            workdir.mkdir(parents=True, exist_ok=True)
            child = ex.spawn(job.name, _describe(job, model), self.cancel)
            child.load(model, workdir, fetch=ex.gcs.read, list_dir=ex.gcs.list)
            self.prepare_explanations(child, model)
            parameters = _python(job.model_parameters) if job.HasField("model_parameters") else None
            batch_size = job.manual_batch_tuning_parameters.batch_size or DEFAULT_BATCH_SIZE
            batches = read_instances(
                job.input_config, job.instance_config, gcs=ex.gcs, tables=ex.tables, batch_size=batch_size
            )
            sink = self.open_sink(model)
            self.predict(child, batches, parameters, sink)
            sink.close()
        except (Cancelled, PredictorDied) as e:
            if sink is not None:
                sink.abort()
            if self.cancel.is_set():
                ex.finish(job.name, S.JOB_STATE_CANCELLED, stats=self.stats)
            elif ex.stopping.is_set():
                ex.finish(
                    job.name, S.JOB_STATE_FAILED, error=(errors.Code.ABORTED, CRASHED), stats=self.stats
                )
            else:
                ex.finish(
                    job.name, S.JOB_STATE_FAILED, error=(errors.Code.INTERNAL, str(e)), stats=self.stats
                )
            return
        except errors.ApiError as e:
            if sink is not None:
                sink.abort()
            ex.finish(job.name, S.JOB_STATE_FAILED, error=(e.code, e.message), stats=self.stats)
            return
        finally:
            if child is not None:
                ex.release(job.name, child)
        self.succeed(sink)

    def prepare_explanations(self, child: PredictorProcess, model: Any) -> None:
        """With generate_explanation, send the child the spec (the job's over the model's; bpj.local.explain)."""
        if not self.job.generate_explanation:
            return
        from bpj.local.explain import check_spec, effective_spec, no_spec_message

        spec = effective_spec(self.job, model)
        if spec is None:
            raise errors.InvalidArgument(no_spec_message(self.job))
        check_spec(spec)
        child.explain(spec)

    def predict(self, child: PredictorProcess, batches: Any, parameters: Any, sink: Any) -> None:
        """Send batches to the predictor process a few messages ahead, and write each answer as it comes."""
        in_flight: collections.deque[list[Any]] = collections.deque()
        group: list[Any] = []
        size = 0
        for batch in batches:
            self.check_cancel()
            group.append(batch)
            size += len(batch)
            if size >= MESSAGE_INSTANCES or len(group) >= MESSAGE_BATCHES:
                child.send_batches(parameters, [[i.payload for i in b if i.error is None] for b in group])
                in_flight.append(group)
                group, size = [], 0
                while len(in_flight) >= IN_FLIGHT:
                    self.write(in_flight.popleft(), child.results(), sink)
        if group:
            child.send_batches(parameters, [[i.payload for i in b if i.error is None] for b in group])
            in_flight.append(group)
        while in_flight:
            self.check_cancel()
            self.write(in_flight.popleft(), child.results(), sink)

    def write(self, group: list[Any], results: list[list[Any]], sink: Any) -> None:
        for batch, batch_results in zip(group, results, strict=True):
            good = [i for i in batch if i.error is None]
            pairs = list(zip(good, batch_results, strict=True))
            predictions = [(inst, value) for inst, (ok, value) in pairs if ok]
            failures = [
                (i, getattr(i, "error_code", "INVALID_ARGUMENT"), i.error)
                for i in batch
                if i.error is not None
            ]
            failures += [(inst, *value) for inst, (ok, value) in pairs if not ok]
            if predictions:
                sink.write_predictions(predictions)
            if failures:
                sink.write_errors(failures)
            self.count(len(predictions), failures)

    def succeed(self, sink: Any) -> None:
        job, ex = self.job, self.ex
        total = self.stats.successful_count + self.stats.failed_count
        if total and not self.stats.successful_count:
            first = self.partial_failures[0].message if self.partial_failures else ""
            message = f"All {total} instances failed to be predicted. The first error: {first}"
            ex.finish(
                job.name,
                S.JOB_STATE_FAILED,
                error=(errors.Code.FAILED_PRECONDITION, message),
                stats=self.stats,
            )
            return
        info = types.BatchPredictionJob.OutputInfo()
        if job.output_config.HasField("gcs_destination"):
            info.gcs_output_directory = sink.directory
        else:
            info.bigquery_output_dataset = sink.dataset
            info.bigquery_output_table = "predictions"
        ex.finish(
            job.name,
            S.JOB_STATE_SUCCEEDED,
            stats=self.stats,
            output_info=info,
            partial_failures=self.partial_failures,
        )

    def model(self) -> Any:
        job = self.job
        if job.HasField("unmanaged_container_model"):
            u = job.unmanaged_container_model
            return types.Model(
                display_name="unmanaged", artifact_uri=u.artifact_uri, container_spec=u.container_spec
            )
        return find_model(self.ex.store, job.model)

    def open_sink(self, model: Any) -> Any:
        from bpj.local.sinks import BigQuerySink, GcsSink

        job, oc = self.job, self.job.output_config
        created = datetime.fromtimestamp(job.create_time.ToNanoseconds() / 1e9, tz=timezone.utc)
        keyed = bool(job.instance_config.key_field)
        if oc.HasField("gcs_destination"):
            return GcsSink(
                self.ex.gcs,
                oc.gcs_destination.output_uri_prefix,
                model_display_name=model.display_name,
                create_time=created,
                predictions_format=oc.predictions_format,
                keyed=keyed,
            )
        return BigQuerySink(
            self.ex.tables,
            oc.bigquery_destination.output_uri,
            model_display_name=model.display_name,
            create_time=created,
            project=job.name.split("/")[1],
            instance_schema=self.input_schema(),
            keyed=keyed,
        )

    def input_schema(self) -> Any:
        """The source table's schema for a BigQuery input, so output columns keep their types."""
        ic = self.job.input_config
        if not ic.HasField("bigquery_source"):
            return None
        project, dataset, table = bq_uri.split_table(
            ic.bigquery_source.input_uri, field="bigquery_source.input_uri", error=errors.InvalidArgument
        )
        return self.ex.tables.schema(project, dataset, table)

    def check_cancel(self) -> None:
        if self.cancel.is_set() or self.ex.stopping.is_set():
            raise Cancelled

    def count(self, successes: int, failures: list[tuple[Any, str, str]]) -> None:
        self.stats.successful_count += successes
        self.stats.failed_count += len(failures)
        for _, code, message in failures:
            if len(self.partial_failures) >= MAX_PARTIAL_FAILURES:
                break
            self.partial_failures.append(types.Status(code=int(errors.Code[code]), message=message))
        if time.monotonic() - self.last_saved >= self.ex.progress_interval:
            self.last_saved = time.monotonic()
            stats = self.stats

            def progress(job: Any) -> None:
                job.completion_stats.CopyFrom(stats)
                job.update_time.CopyFrom(_now())

            self.ex.update(self.job.name, progress)


def _run_class(job: Any) -> type[Run]:
    """Run, or for a publisher model (Gemini, embeddings) Run with bpj.local.publisher_job's steps."""
    from bpj.local.publisher_job import PublisherSteps, is_publisher_job

    if not is_publisher_job(job):
        return Run
    return type("PublisherRun", (PublisherSteps, Run), {})


def _new_process() -> PredictorProcess:
    from bpj.local.predictor_process import PredictorProcess

    return PredictorProcess()


def _describe(job: Any, model: Any) -> str:
    """How messages name the model: ``model "iris" (projects/.../models/1)``."""
    if job.HasField("unmanaged_container_model"):
        return f"the unmanaged model at {model.artifact_uri}"
    return f'model "{model.display_name}" ({job.model})'


def _running(job: Any) -> None:
    job.state = S.JOB_STATE_RUNNING
    stamp = _now()
    job.start_time.CopyFrom(stamp)
    job.update_time.CopyFrom(stamp)


def _now() -> Any:
    t = types.Timestamp()
    t.FromNanoseconds(time.time_ns())
    return t


def _python(value: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(value)
