"""What the console shows, as plain JSON-ready dicts: jobs, one job, models.

Everything is read through the stack's own Vertex service (its servicer objects, called through the
in-memory transport, so the console sees what any client sees), the job's state history from the store
that service keeps, and a job's outputs through bpj's readers (:mod:`bpj.outputs`). Nothing here escapes
for HTML: the page builds its DOM with ``textContent``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from bpj import errors, states, types

S = types.JobState
PREVIEW_ROWS = 10
# A running job's progress bar needs its number of instances: counted once, from inputs up to this size.
MAX_COUNTED_BYTES = 64 << 20
MAX_JOBS = 1000
_CACHED_PREVIEWS = 64


def _time(stamp: Any) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def _rows(records: Iterator[dict[str, Any]], limit: int) -> list[str]:
    """The first ``limit`` rows as JSON text (values a reader gives that JSON lacks become strings)."""
    out = []
    for row in records:
        out.append(json.dumps(row, default=str, ensure_ascii=False))
        if len(out) >= limit:
            break
    return out


class Views:
    """The console's data. ``jobs``/``models``: the stack's JobService and ModelService servicers; ``store``:
    the store they keep (state history, model versions); ``token``: what the readers send the stack's GCS; ``gcs``: its :class:`~bpj.gcs.Gcs` client; ``tables``: its BigQuery table store (read through an in-process Storage Read server)."""

    def __init__(
        self,
        jobs: Any,
        models: Any,
        store: Any,
        *,
        parent: str,
        gcs: Any,
        token: str | None,
        tables: Any,
    ) -> None:
        from bpj._gen.services.job_service import JobServiceClient
        from bpj._gen.services.model_service import ModelServiceClient
        from bpj.transport.memory import InMemoryTransport

        transport = InMemoryTransport(jobs, models)
        self.job_service = JobServiceClient(transport)
        self.model_service = ModelServiceClient(transport)
        self.store = store
        self.parent = parent
        self.gcs = gcs
        self.token = token
        self.tables = tables
        self._bq_client: Any = None
        self._previews: dict[tuple[str, str], dict[str, Any]] = {}
        self._totals: dict[str, int | None] = {}
        self._model_names: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- jobs ------------------------------------------------------------------------------------------

    def all_jobs(self) -> list[Any]:
        jobs: list[Any] = []
        token = ""
        while len(jobs) < MAX_JOBS:
            response = self.job_service.list_batch_prediction_jobs(
                types.ListBatchPredictionJobsRequest(parent=self.parent, page_size=1000, page_token=token)
            )
            jobs.extend(response.batch_prediction_jobs)
            token = response.next_page_token
            if not token:
                break
        return jobs  # newest first, as the service lists them

    def jobs(self, state: str = "", label: str = "") -> dict[str, Any]:
        """Jobs newest first; ``state``: a JobState name; ``label``: ``key`` (any value) or ``key=value``."""
        if state and state not in list(S.keys()):
            raise errors.InvalidArgument(f"state {state!r} is not a JobState")
        key, has_value, value = label.partition("=")
        rows = []
        for job in self.all_jobs():
            if state and S.Name(job.state) != state:
                continue
            if key and (key not in job.labels or (has_value and job.labels[key] != value)):
                continue
            rows.append(self.summary(job))
        return {"parent": self.parent, "jobs": rows, "states": list(S.keys())}

    def job(self, name: str) -> dict[str, Any]:
        from google.protobuf import json_format

        job: Any = self.job_service.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))
        out = self.summary(job)
        out["config"] = json.dumps(
            json_format.MessageToDict(job, descriptor_pool=job.DESCRIPTOR.file.pool),
            indent=2,
            ensure_ascii=False,
        )
        out["history"] = [
            {"state": S.Name(state), "time": _stamp(ns)} for ns, state in self.store.state_history(job.name)
        ]
        out["partialFailures"] = [
            {"code": _code_name(f.code), "message": f.message} for f in job.partial_failures
        ]
        out["outputs"] = outputs(job)
        out.update(self.preview(job))
        return out

    def summary(self, job: Any) -> dict[str, Any]:
        out = summary(job)
        out["total"] = None if states.is_terminal(job.state) else self.total(job)
        out["modelDisplayName"] = self.model_display_name(job.model)
        return out

    def model_display_name(self, name: str) -> str:
        """The display name of a job's model ("" for a publisher model or one since deleted)."""
        from bpj.local.publisher import is_publisher

        if not name or is_publisher(name):
            return ""
        with self._lock:
            if name in self._model_names:
                return self._model_names[name]
        try:
            shown = self.model_service.get_model(types.GetModelRequest(name=name)).display_name
        except errors.NotFound:
            return ""
        with self._lock:  # display names never change (the service has no UpdateModel)
            self._model_names[name] = shown
            while len(self._model_names) > MAX_JOBS:
                del self._model_names[next(iter(self._model_names))]
        return shown

    def total(self, job: Any) -> int | None:
        """How many instances a job reads (lines of its jsonl, csv or file-list inputs), when they are small
        enough to count; None otherwise. Counted once per job."""
        with self._lock:
            if job.name in self._totals:
                return self._totals[job.name]
        ic = job.input_config
        total = None
        if ic.instances_format in ("jsonl", "csv", "file-list") and ic.gcs_source.uris:
            from bpj.local.inputs import resolve_uris

            try:
                uris = resolve_uris(self.gcs, list(ic.gcs_source.uris))
                if sum(self.gcs.size(u) for u in uris) <= MAX_COUNTED_BYTES:
                    total = 0
                    for uri in uris:
                        lines = sum(1 for line in self.gcs.read(uri).splitlines() if line.strip())
                        total += max(0, lines - 1) if ic.instances_format == "csv" else lines
            except (errors.BpjError, OSError):
                total = None
        with self._lock:
            self._totals[job.name] = total
            while len(self._totals) > MAX_JOBS:
                del self._totals[next(iter(self._totals))]
        return total

    def cancel(self, name: str) -> None:
        self.job_service.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=name))

    def delete(self, name: str) -> None:
        self.job_service.delete_batch_prediction_job(types.DeleteBatchPredictionJobRequest(name=name))
        with self._lock:
            for key in [k for k in self._previews if k[0] == name]:
                del self._previews[key]

    # -- outputs ---------------------------------------------------------------------------------------

    def preview(self, job: Any) -> dict[str, Any]:
        """The first predictions and errors of a job's outputs (kept once the job has ended)."""
        info = job.output_info
        if not (info.gcs_output_directory or info.bigquery_output_dataset):
            return {
                "predictions": [],
                "errors": [],
                "files": [],
                "previewNote": "no outputs are listed for this job",
            }
        key = (job.name, job.update_time.ToJsonString())
        with self._lock:
            cached = self._previews.get(key)
        if cached is not None:
            return cached
        try:
            predictions, errors_ = self._readers(info)
            found = {
                "predictions": _rows(predictions.records(), PREVIEW_ROWS),
                "errors": _rows(errors_.records(), PREVIEW_ROWS),
                "files": [
                    {"uri": o.uri, "size": o.size}
                    for reader in (predictions, errors_)
                    for o in getattr(reader, "objects", list)()
                ],
                "previewNote": "",
            }
        except (errors.BpjError, OSError) as e:
            note = f"the outputs could not be read: {e}"
            return {"predictions": [], "errors": [], "files": [], "previewNote": note}
        if states.is_terminal(job.state):
            with self._lock:
                self._previews[key] = found
                while len(self._previews) > _CACHED_PREVIEWS:
                    del self._previews[next(iter(self._previews))]
        return found

    def open_output(self, name: str, uri: str) -> tuple[Any, int]:
        """``(binary file, size)`` of one file of job ``name``'s GCS outputs; NotFound for any other URI."""
        job = self.job_service.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))
        for f in self.preview(job)["files"]:
            if f["uri"] == uri:
                return self.gcs.open(uri), f["size"]
        raise errors.NotFound(f"{uri} is not an output file of {name}")

    def _readers(self, info: Any) -> tuple[Any, Any]:
        from bpj.outputs.bigquery import BigQueryReader
        from bpj.outputs.gcs import GcsReader

        if info.gcs_output_directory:
            credentials = None
            if self.token:
                from google.oauth2.credentials import Credentials

                credentials = Credentials(self.token)
            reader = GcsReader(
                info.gcs_output_directory,
                max_workers=1,
                max_bytes_in_flight=8 << 20,
                ordered=True,
                progress=False,
                endpoint=self.gcs.endpoint,
                credentials=credentials,
            )
            return reader, reader.errors()
        table = info.bigquery_output_table or "predictions"
        predictions = BigQueryReader(
            f"{info.bigquery_output_dataset}.{table}",
            client=self._bigquery_client(),
            max_workers=1,
            ordered=True,
            progress=False,
            max_stream_count=1,
        )
        return predictions, predictions.errors()

    def _bigquery_client(self) -> Any:
        with self._lock:
            if self._bq_client is None:
                from bpj._gen.services.big_query_read import BigQueryReadClient
                from bpj.local.bigquery.read_server import StorageReadServicer
                from bpj.transport.memory import InMemoryTransport

                self._bq_client = BigQueryReadClient(InMemoryTransport(StorageReadServicer(self.tables)))
            return self._bq_client

    # -- models ----------------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """Models with their versions (artifact URI each) and the jobs that used them."""
        used: dict[str, list[dict[str, Any]]] = {}
        for job in self.all_jobs():
            if job.model:
                base = job.model.partition("@")[0]
                used.setdefault(base, []).append(
                    {
                        "name": job.name,
                        "displayName": job.display_name,
                        "state": S.Name(job.state),
                        "version": job.model_version_id,
                    }
                )
        rows = []
        token = ""
        while True:
            response = self.model_service.list_models(
                types.ListModelsRequest(parent=self.parent, page_size=1000, page_token=token)
            )
            for model in response.models:
                versions = [model, *self.store.children("model_version", model.name, types.Model)]
                versions.sort(key=lambda m: int(m.version_id or 0))
                rows.append(
                    {
                        "name": model.name,
                        "displayName": model.display_name,
                        "createTime": _time(model.create_time),
                        "versions": [
                            {
                                "versionId": v.version_id,
                                "aliases": list(v.version_aliases),
                                "artifactUri": v.artifact_uri,
                                "image": v.container_spec.image_uri,
                                "createTime": _time(v.version_create_time),
                            }
                            for v in versions
                        ],
                        "jobs": used.get(model.name, []),
                    }
                )
            token = response.next_page_token
            if not token:
                break
        return {"parent": self.parent, "models": rows}


def _stamp(ns: int) -> str:
    t = types.Timestamp()
    t.FromNanoseconds(ns)
    return t.ToJsonString()


def summary(job: Any) -> dict[str, Any]:
    """One row of the jobs list."""
    stats = job.completion_stats
    model = job.model or f"unmanaged: {job.unmanaged_container_model.artifact_uri}"
    return {
        "name": job.name,
        "id": job.name.rsplit("/", 1)[-1],
        "displayName": job.display_name,
        "state": S.Name(job.state),
        "terminal": states.is_terminal(job.state),
        "cancellable": states.is_cancellable(job.state),
        # The service deletes a job that has ended or has not started.
        "deletable": states.is_terminal(job.state) or job.state == S.JOB_STATE_PENDING,
        "model": model,
        "modelVersionId": job.model_version_id,
        "createTime": _time(job.create_time),
        "startTime": _time(job.start_time),
        "endTime": _time(job.end_time),
        "updateTime": _time(job.update_time),
        "successful": stats.successful_count,
        "failed": stats.failed_count,
        "incomplete": stats.incomplete_count,
        "labels": dict(sorted(job.labels.items())),
        "error": (
            {"code": _code_name(job.error.code), "message": job.error.message}
            if job.HasField("error")
            else None
        ),
    }


def _code_name(code: int) -> str:
    try:
        return errors.Code(code).name
    except ValueError:
        return str(code)


def outputs(job: Any) -> list[dict[str, str]]:
    """Where the job's inputs and outputs are (``gs://`` and ``bq://`` URIs of the stack's GCS and BigQuery)."""
    out = []
    ic, oc, info = job.input_config, job.output_config, job.output_info
    for uri in ic.gcs_source.uris:
        out.append({"what": "input", "uri": uri})
    if ic.bigquery_source.input_uri:
        out.append({"what": "input", "uri": ic.bigquery_source.input_uri})
    if oc.gcs_destination.output_uri_prefix:
        out.append({"what": "output prefix", "uri": oc.gcs_destination.output_uri_prefix})
    if oc.bigquery_destination.output_uri:
        out.append({"what": "output destination", "uri": oc.bigquery_destination.output_uri})
    if info.gcs_output_directory:
        out.append({"what": "predictions and errors", "uri": info.gcs_output_directory})
    if info.bigquery_output_dataset:
        table = info.bigquery_output_table or "predictions"
        out.append({"what": "predictions", "uri": f"{info.bigquery_output_dataset}.{table}"})
    return out
