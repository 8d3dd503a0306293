"""Batch jobs on publisher models (Gemini, text embeddings) on the local stack: inputs in, outputs out.

The job runs as a custom-model job does (:mod:`bpj.local.executor`: a predictor process of its own, so cancel
stops it at once; batches a few messages ahead; completion_stats saved as it goes), with the answers coming
from :mod:`bpj.local.publisher` and Vertex AI's publisher-model formats in and out. Sources:
https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-cloud-storage,
https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-bigquery,
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/batch-prediction-api,
https://cloud.google.com/vertex-ai/generative-ai/docs/embeddings/batch-prediction-genai-embeddings, and the
``OutputInfo`` reference (``bigquery_output_table`` "in predictions_<timestamp> format"); the Cloud Storage
object name as users report it (https://github.com/googleapis/python-genai/issues/486).

Layout written (what the readers in ``bpj/outputs/`` meet)
-----------------------------------------------------------

Inputs: ``instances_format`` ``jsonl`` (``gcs_source``) or ``bigquery`` (``bigquery_source``); nothing else.

Cloud Storage output: one object per job::

    <output_uri_prefix>/prediction-model-<YYYY-MM-DDThh:mm:ss.ffffffZ>/predictions.jsonl

(``output_info.gcs_output_directory`` is the directory; a ``<directory>/`` marker object is written too; there
is no ``errors_*`` file: failed rows are lines of ``predictions.jsonl`` with a non-empty ``status``.) Lines, in
input order:

- Gemini (generate) jobs: the input line's other keys first, as they were, then
  ``"status"`` (string: ``""`` on success, else the error text), ``"processed_time"`` (string,
  ``YYYY-MM-DDThh:mm:ss.sss+00:00``), ``"request"`` (the request as the line had it; absent when the line was
  not a JSON object) and, on success only, ``"response"`` (a GenerateContentResponse object: ``candidates``,
  ``usageMetadata``, ``modelVersion``, ``responseId``).
- Embedding jobs: ``{"instance": <the input line>, "predictions": [{"embeddings": {"statistics":
  {"token_count": int, "truncated": bool}, "values": [float, ...]}}], "status": ""}``; a failed row has
  ``"status"`` set and no ``"predictions"`` (and no ``"instance"`` if the line was not JSON).

BigQuery output: one table per job, holding successes and failures alike (no ``errors`` table):

- ``output_uri`` ``bq://p.d.t``: table ``t`` (dataset ``d`` created if missing; the job fails if ``t`` exists);
  ``bq://p.d``: table ``predictions_<YYYY_MM_DDThh_mm_ss_sssZ>`` in ``d``; ``bq://p``: dataset
  ``prediction_model_<YYYY_MM_DDThh_mm_ss_sssZ>`` with table ``predictions_<same>``.
  ``output_info.bigquery_output_dataset`` is ``bq://p.d``, ``output_info.bigquery_output_table`` the table id.
- Columns: the input table's columns, types kept (``request`` too, JSON text in a STRING column as the local
  table store keeps BigQuery's JSON type); for JSONL input, the lines' top-level keys (``request`` as JSON
  text, others typed from their values, JSON text where mixed). Then, Gemini jobs: ``status`` STRING,
  ``processed_time`` TIMESTAMP, ``response`` STRING (JSON text; NULL for a failed row). Embedding jobs:
  ``predictions`` STRING (JSON text of the predictions array above; NULL for a failed row), ``status`` STRING.

Job: completion_stats count rows with an empty status as successful and the others as failed; up to
ten partial_failures carry the first errors (INVALID_ARGUMENT for malformed requests); the job SUCCEEDED
unless every row failed (then FAILED with the first error), as custom-model jobs on this stack.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bpj import bq_uri, errors, types
from bpj.gcs import split_uri
from bpj.local.publisher import PLUGIN_ENV, bad_request, internal_error, parse_model

if TYPE_CHECKING:
    import pyarrow as pa

    from bpj.gcs import Gcs, GcsWriter
    from bpj.local.bigquery.store import TableStore
    from bpj.local.inputs import Instance

__all__ = ["PublisherBigQuerySink", "PublisherGcsSink", "PublisherSteps", "is_publisher_job"]

OBJECT = "predictions.jsonl"
_ROWS_PER_APPEND = 10_000


def is_publisher_job(job: Any) -> bool:
    return bool(job.model) and parse_model(job.model) is not None


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _processed_text(t: datetime.datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}+00:00"


def _stamp(t: datetime.datetime) -> str:
    return f"{t:%Y_%m_%dT%H_%M_%S}_{t.microsecond // 1000:03d}Z"


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or an infinity, which Python's JSON parser takes from a JSONL line: null
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return _dumps(json.loads(text, parse_constant=lambda _: None))


# -- names -----------------------------------------------------------------------------------------------


def gcs_directory(output_uri_prefix: str, create_time: datetime.datetime) -> str:
    """``<prefix>/prediction-model-<YYYY-MM-DDThh:mm:ss.ffffffZ>``."""
    bucket, prefix = split_uri(output_uri_prefix, object_required=False)
    prefix = prefix.strip("/")
    base = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    t = create_time.astimezone(datetime.timezone.utc)
    return f"{base}/prediction-model-{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}Z"


def bigquery_names(uri: str, project: str, create_time: datetime.datetime) -> tuple[str, str, str, bool]:
    """(project, dataset, table, whether the URI named the table) of a job's output table."""
    names = bq_uri.parse(f"bq://{project}" if uri == "bq://" else uri)
    if names is None:
        raise errors.InvalidArgument(
            f"bigquery_destination.output_uri {uri!r} is not bq://project, bq://project.dataset "
            "or bq://project.dataset.table"
        )
    stamp = _stamp(create_time.astimezone(datetime.timezone.utc))
    dataset = names.dataset or f"prediction_model_{stamp}"
    return names.project, dataset, names.table or f"predictions_{stamp}", names.table is not None


def _created(job: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(job.create_time.ToNanoseconds() / 1e9, tz=datetime.timezone.utc)


def default_output_info(job: Any) -> Any:
    """The output_info a publisher-model job gets when it succeeds (FakeVertex uses it too)."""
    info = types.BatchPredictionJob.OutputInfo()
    oc = job.output_config
    if oc.HasField("gcs_destination"):
        info.gcs_output_directory = gcs_directory(oc.gcs_destination.output_uri_prefix, _created(job))
    elif oc.HasField("bigquery_destination"):
        project, dataset, table, _ = bigquery_names(
            oc.bigquery_destination.output_uri, job.name.split("/")[1], _created(job)
        )
        info.bigquery_output_dataset = f"bq://{project}.{dataset}"
        info.bigquery_output_table = table
    return info


# -- the rows ----------------------------------------------------------------------------------------------


def gcs_line(kind: str, inst: Instance, answer: dict[str, Any], processed: str) -> dict[str, Any]:
    """One line of ``predictions.jsonl`` (see the module docstring)."""
    status = answer.get("status", "")
    # The payload is the line as read, or a BigQuery row with its values in JSON form.
    source = inst.payload if inst.error is None else None
    if kind == "embed":
        line: dict[str, Any] = {}
        if inst.error is None:
            line["instance"] = source
        if "predictions" in answer:
            line["predictions"] = answer["predictions"]
        line["status"] = status
        return line
    raw = source if isinstance(source, dict) else {}
    line = {k: v for k, v in raw.items() if k not in ("status", "processed_time", "request", "response")}
    line["status"] = status
    line["processed_time"] = processed
    if "request" in raw:  # parsed when it was JSON text (a BigQuery column)
        line["request"] = answer.get("request", raw["request"])
    if "response" in answer:
        line["response"] = answer["response"]
    return line


def table_row(
    kind: str, inst: Instance, answer: dict[str, Any], processed: datetime.datetime
) -> dict[str, Any]:
    """One output table row: the input's columns as read, then the job kind's columns."""
    raw = inst.raw if isinstance(inst.raw, dict) else {}
    row = dict(raw)
    status = answer.get("status", "")
    if kind == "embed":
        row["predictions"] = _dumps(answer["predictions"]) if "predictions" in answer else None
        row["status"] = status
    else:
        row["status"] = status
        row["processed_time"] = processed
        row["response"] = _dumps(answer["response"]) if "response" in answer else None
    return row


def answer_for_bad_instance(inst: Instance) -> dict[str, Any]:
    return {"status": bad_request(inst.error or "unreadable"), "code": inst.error_code}


# -- Cloud Storage -----------------------------------------------------------------------------------------


class PublisherGcsSink:
    """Writes ``<prefix>/prediction-model-<time>/predictions.jsonl`` as the rows come."""

    def __init__(
        self, gcs: Gcs, output_uri_prefix: str, *, kind: str, create_time: datetime.datetime
    ) -> None:
        self.directory = gcs_directory(output_uri_prefix, create_time)
        self.kind = kind
        self.gcs = gcs
        gcs.write(self.directory + "/", b"", content_type="application/x-directory")
        self._writer: GcsWriter | None = gcs.writer(
            f"{self.directory}/{OBJECT}", content_type="application/jsonl"
        )

    def write(self, rows: list[tuple[Instance, dict[str, Any]]]) -> None:
        if self._writer is None:
            raise errors.FailedPrecondition(f"the output writer for {self.directory} is closed")
        processed = _processed_text(_utc_now())
        text = "".join(_dumps(gcs_line(self.kind, i, a, processed)) + "\n" for i, a in rows)
        self._writer.write(text.encode())

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def abort(self) -> None:
        with contextlib.suppress(errors.ApiError):
            self.close()


# -- BigQuery ----------------------------------------------------------------------------------------------


class PublisherBigQuerySink:
    """Writes the one output table (see the module docstring) in appends."""

    def __init__(
        self,
        tables: TableStore,
        destination_uri: str,
        *,
        kind: str,
        create_time: datetime.datetime,
        project: str,
        input_schema: pa.Schema | None,
    ) -> None:
        self.project, self.dataset_id, self.table_id, explicit = bigquery_names(
            destination_uri, project, create_time
        )
        self.tables = tables
        self.kind = kind
        tables.create_dataset(self.project, self.dataset_id, exists_ok=True)
        if tables.table_exists(self.project, self.dataset_id, self.table_id):
            if explicit:
                raise errors.AlreadyExists(
                    f"Already Exists: Table {self.project}:{self.dataset_id}.{self.table_id}"
                )
            tables.delete_table(self.project, self.dataset_id, self.table_id)  # this job, run again
        self._input_schema = input_schema
        self._schema: pa.Schema | None = None
        self._pending: list[dict[str, Any]] = []
        self._closed = False

    @property
    def dataset(self) -> str:
        return f"bq://{self.project}.{self.dataset_id}"

    def write(self, rows: list[tuple[Instance, dict[str, Any]]]) -> None:
        if self._closed:
            raise errors.FailedPrecondition(f"the output writer for {self.dataset} is closed")
        processed = _utc_now()
        self._pending.extend(table_row(self.kind, i, a, processed) for i, a in rows)
        if len(self._pending) >= _ROWS_PER_APPEND:
            self._flush()

    def close(self) -> None:
        if not self._closed:
            self._flush()
            self._ensure_schema()
            self._closed = True

    def abort(self) -> None:
        self._closed = True
        self._pending.clear()

    def _trailing(self) -> list[pa.Field]:
        import pyarrow as pa

        if self.kind == "embed":
            return [pa.field("predictions", pa.string()), pa.field("status", pa.string())]
        return [
            pa.field("status", pa.string()),
            pa.field("processed_time", pa.timestamp("us", tz="UTC")),
            pa.field("response", pa.string()),
        ]

    def _ensure_schema(self) -> pa.Schema:
        import pyarrow as pa

        if self._schema is not None:
            return self._schema
        trailing = self._trailing()
        taken = {f.name for f in trailing}
        if self._input_schema is not None:
            fields = [f for f in self._input_schema if f.name not in taken]
        else:
            fields = []
            names: list[str] = []
            for row in self._pending:
                names.extend(k for k in row if k not in taken and k not in names)
            for name in names:
                values = [r.get(name) for r in self._pending]
                try:
                    t = pa.array(values).type
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                    t = pa.string()
                if name == "request" or pa.types.is_null(t) or pa.types.is_struct(t) or pa.types.is_list(t):
                    t = pa.string()  # JSON text, as BigQuery's JSON type reaches the store
                fields.append(pa.field(name, t))
        self._schema = pa.schema([*fields, *trailing])
        self.tables.create_table(self.project, self.dataset_id, self.table_id, self._schema, exists_ok=True)
        return self._schema

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        schema = self._ensure_schema()
        columns = []
        for field in schema:
            values = [r.get(field.name) for r in self._pending]
            if pa.types.is_string(field.type):  # JSON text for what is not a string (objects, mixed values)
                values = [v if v is None or isinstance(v, str) else _dumps(v) for v in values]
            try:
                columns.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                where = f"{self.dataset}.{self.table_id}"
                raise errors.InvalidArgument(
                    f"column {field.name!r} of {where} is {field.type}: {e}"
                ) from None
        self.tables.append(
            self.project, self.dataset_id, self.table_id, pa.Table.from_arrays(columns, schema=schema)
        )
        self._pending.clear()


# -- the job -----------------------------------------------------------------------------------------------


class PublisherSteps:
    """What a publisher-model job does differently from a custom-model one: its model, rows and outputs. The
    executor runs it as ``class PublisherRun(PublisherSteps, Run)`` (this module does not import the executor,
    which imports it), so ``Run.execute`` drives the steps below."""

    job: Any
    ex: Any
    stats: Any
    partial_failures: list[Any]
    count: Callable[[int, list[tuple[Any, str, str]]], None]
    input_schema: Callable[[], Any]

    def __init__(self, executor: Any, job: Any, cancel: Any) -> None:
        job = type(job).FromString(job.SerializeToString())
        job.ClearField("instance_config")  # Vertex AI reads publisher-model inputs whole
        if job.input_config.HasField("bigquery_source"):
            job.instance_config.instance_type = "object"  # rows as {column: value}
        super().__init__(executor, job, cancel)  # type: ignore[call-arg]
        parsed = parse_model(job.model)
        assert parsed is not None
        self.kind = parsed.kind
        self.model_id = parsed.model

    def model(self) -> Any:
        import os

        plugin = getattr(self.ex, "publisher_model", None) or os.environ.get(PLUGIN_ENV, "")
        env = [types.EnvVar(name=PLUGIN_ENV, value=plugin)] if plugin else []
        return types.Model(
            name=self.job.model, display_name=self.model_id, container_spec=types.ModelContainerSpec(env=env)
        )

    def open_sink(self, model: Any) -> Any:
        job, oc = self.job, self.job.output_config
        created = _created(job)
        if oc.HasField("gcs_destination"):
            return PublisherGcsSink(
                self.ex.gcs, oc.gcs_destination.output_uri_prefix, kind=self.kind, create_time=created
            )
        return PublisherBigQuerySink(
            self.ex.tables,
            oc.bigquery_destination.output_uri,
            kind=self.kind,
            create_time=created,
            project=job.name.split("/")[1],
            input_schema=self.input_schema(),
        )

    def write(self, group: list[Any], results: list[list[Any]], sink: Any) -> None:
        rows: list[tuple[Any, dict[str, Any]]] = []
        for batch, batch_results in zip(group, results, strict=True):
            answers: Iterator[tuple[bool, Any]] = iter(batch_results)
            for inst in batch:
                if inst.error is not None:
                    rows.append((inst, answer_for_bad_instance(inst)))
                    continue
                ok, value = next(answers)
                if not ok:  # the predictor itself failed on this row
                    value = {"status": internal_error(value[1]), "code": value[0]}
                rows.append((inst, value))
        if rows:
            sink.write(rows)
        failures = [
            (inst, a.get("code", "INVALID_ARGUMENT"), a["status"]) for inst, a in rows if a.get("status")
        ]
        self.count(len(rows) - len(failures), failures)

    def succeed(self, sink: Any) -> None:
        job, ex = self.job, self.ex
        total = self.stats.successful_count + self.stats.failed_count
        if total and not self.stats.successful_count:
            first = self.partial_failures[0].message if self.partial_failures else ""
            ex.finish(
                job.name,
                types.JobState.JOB_STATE_FAILED,
                error=(
                    errors.Code.FAILED_PRECONDITION,
                    f"All {total} requests failed. The first error: {first}",
                ),
                stats=self.stats,
            )
            return
        info = types.BatchPredictionJob.OutputInfo()
        if isinstance(sink, PublisherGcsSink):
            info.gcs_output_directory = sink.directory
        else:
            info.bigquery_output_dataset = sink.dataset
            info.bigquery_output_table = sink.table_id
        ex.finish(
            job.name,
            types.JobState.JOB_STATE_SUCCEEDED,
            stats=self.stats,
            output_info=info,
            partial_failures=self.partial_failures,
        )
