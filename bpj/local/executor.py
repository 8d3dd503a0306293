"""Runs batch prediction jobs: a bounded pool of workers, each job read, predicted and written in batches.

A job goes PENDING -> RUNNING -> SUCCEEDED | FAILED, or through CANCELLING to CANCELLED, as Vertex AI
reports it; completion_stats are saved as the job goes, so Get shows progress. A malformed instance or a
model error on one instance goes to the errors output and does not fail the job; a missing model, an
unreadable input or a bad destination does, with an error that says which.

After a crash the store may hold jobs that were RUNNING: :meth:`Executor.recover` ends them FAILED with an
error that says so (their outputs are partial and are not presented in output_info), ends CANCELLING ones
CANCELLED, and starts PENDING ones again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bpj import errors, types
from bpj.local.store import Store

log = logging.getLogger("bpj.local")
S = types.JobState
DEFAULT_BATCH_SIZE = 64
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
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    # -- what the JobService calls ---------------------------------------------------------------------
    def start(self, name: str) -> None:
        with self._lock:
            event = self._cancel.setdefault(name, threading.Event())
        self._pool.submit(self._run, name, event)

    def stop(self, name: str) -> None:
        with self._lock:
            event = self._cancel.setdefault(name, threading.Event())
        event.set()

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
        """Stop taking work; running jobs end at their next batch (FAILED, as after a crash)."""
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- running one job ---------------------------------------------------------------------------------
    def _run(self, name: str, cancel: threading.Event) -> None:
        try:
            job = self.store.get("job", name, types.BatchPredictionJob)
            if job is None or job.state != S.JOB_STATE_PENDING:
                return  # deleted or settled while it waited
            if cancel.is_set():
                self.finish(name, S.JOB_STATE_CANCELLED)
                return
            if self.stopping.is_set():
                return  # stays PENDING: the next start of the stack runs it
            job = self.update(name, _running)
            Run(self, job, cancel).execute()
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
        from bpj.local.models import load_predictor, predict_isolating_errors

        job, ex = self.job, self.ex
        sink = None
        try:
            model = self.model()
            workdir = ex.workdir / job.name.rsplit("/", 1)[-1]
            workdir.mkdir(parents=True, exist_ok=True)
            predictor = load_predictor(model, fetch=ex.gcs.read, list_dir=ex.gcs.list, workdir=workdir)
            parameters = _python(job.model_parameters) if job.HasField("model_parameters") else None
            batch_size = job.manual_batch_tuning_parameters.batch_size or DEFAULT_BATCH_SIZE
            batches = read_instances(
                job.input_config, job.instance_config, gcs=ex.gcs, tables=ex.tables, batch_size=batch_size
            )
            sink = self.open_sink(model)
            for batch in batches:
                self.check_cancel()
                good = [i for i in batch if i.error is None]
                results = (
                    predict_isolating_errors(predictor, [i.payload for i in good], parameters) if good else []
                )
                predictions = [(inst, value) for inst, (ok, value) in zip(good, results, strict=True) if ok]
                failures = [(i, "INVALID_ARGUMENT", i.error) for i in batch if i.error is not None]
                failures += [
                    (inst, *value) for inst, (ok, value) in zip(good, results, strict=True) if not ok
                ]
                if predictions:
                    sink.write_predictions(predictions)
                if failures:
                    sink.write_errors(failures)
                self.count(len(predictions), failures)
            sink.close()
        except Cancelled:
            if sink is not None:
                sink.abort()
            if ex.stopping.is_set() and not self.cancel.is_set():
                ex.finish(
                    job.name, S.JOB_STATE_FAILED, error=(errors.Code.ABORTED, CRASHED), stats=self.stats
                )
            else:
                ex.finish(job.name, S.JOB_STATE_CANCELLED, stats=self.stats)
            return
        except errors.ApiError as e:
            if sink is not None:
                sink.abort()
            ex.finish(job.name, S.JOB_STATE_FAILED, error=(e.code, e.message), stats=self.stats)
            return
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
        base, _, version = job.model.partition("@")
        model = self.ex.store.get("model", base, types.Model)
        if model is None or version not in ("", model.version_id, *model.version_aliases):
            raise errors.NotFound(f'The Model "{job.model}" does not exist.')
        return model

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
        project, dataset, table = ic.bigquery_source.input_uri.removeprefix("bq://").split(".", 2)
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
