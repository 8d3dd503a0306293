"""Prediction and error writers in Vertex AI's output layout (BatchPredictionJob.OutputConfig).

Cloud Storage (``GcsSink``)::

    <output_uri_prefix>/prediction-<model-display-name>-<YYYY-MM-DDThh:mm:ss.sssZ>/
        predictions_0001.jsonl ...   {"instance": <instance>, "prediction": <prediction>} per line
        errors_0001.jsonl ...        {"instance": <instance>, "error": {"status": "<CODE>", "message": "..."}}

With a key_field, ``"key": <key>`` replaces ``"instance"``. For ``csv`` the files are ``.csv`` with a header of
the instance columns (or ``key``) plus ``prediction`` (``error`` in the errors files); cells that are not
strings or numbers hold JSON. Files appear only when they have rows; the directory always gets a marker
object (``<directory>/``) so that output_info points at something.

BigQuery (``BigQuerySink``): dataset ``prediction_<model_display_name>_<YYYY_MM_DDThh_mm_ss_sssZ>`` (or the
given one) with tables ``predictions`` (instance columns, or ``key``, then ``prediction``) and ``errors``
(instance columns, or ``key``, then ``errors`` STRUCT<code INT64, message STRING>). ``prediction`` (and
``explanation``) are of BigQuery's JSON type: Vertex AI gives a model's output columns the types of its
prediction schema, and a model without one (every model the local stack runs) gets its output as JSON, as
Vertex AI's Gemini and Model Garden batch outputs do (``response`` JSON). The Storage Read API sends JSON as
Arrow strings marked ``google:sqlType:json``, which bpj's reader parses, so a model's predictions have the
same Arrow types from either destination.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bpj import bq_uri, errors
from bpj.gcs import split_uri
from bpj.local.explain import Explained
from bpj.local.inputs import Instance
from bpj.outputs.json_columns import JSON_FIELD_METADATA

if TYPE_CHECKING:
    import pyarrow as pa

    from bpj.gcs import Gcs, GcsWriter
    from bpj.local.bigquery.store import TableStore

__all__ = ["BigQuerySink", "GcsSink", "dataset_name", "directory_name"]

Prediction = tuple[Instance, Any]
Failure = tuple[Instance, str, str]


def _default(value: Any) -> Any:
    """JSON for what models and BigQuery rows hold besides JSON types: numpy values, datetimes, bytes."""
    import base64
    import decimal

    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False, default=_default).encode


def _fast_encoder() -> Any:
    """The C encoder built once (json.dumps builds one per call, a third of its time on small lines), or
    the plain encode where this Python's C encoder differs."""
    from json import encoder as E

    try:
        make = E.c_make_encoder  # type: ignore[attr-defined]
        chunks = make(None, _default, E.encode_basestring, None, ": ", ", ", False, False, False)
        probe = {"a": [1, 2.5, "é", None, True], "b": {"c": "\n"}}
        if "".join(chunks(probe, 0)) == _encode(probe):
            return lambda value: "".join(chunks(value, 0))
    except (AttributeError, TypeError, ValueError):
        pass
    return _encode


_encode_fast = _fast_encoder()


def _dumps(value: Any) -> str:
    try:
        return _encode_fast(value)  # type: ignore[no-any-return]
    except ValueError:  # NaN or infinity: not JSON; write null as JSON readers expect
        return _encode(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return value


def _utc(t: datetime.datetime) -> datetime.datetime:
    if t.tzinfo is None:
        return t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc)


def directory_name(model_display_name: str, create_time: datetime.datetime) -> str:
    """``prediction-<model-display-name>-<YYYY-MM-DDThh:mm:ss.sssZ>``."""
    t = _utc(create_time)
    return f"prediction-{model_display_name}-{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def dataset_name(model_display_name: str, create_time: datetime.datetime) -> str:
    """``prediction_<model_display_name>_<YYYY_MM_DDThh_mm_ss_sssZ>``, BigQuery-safe."""
    t = _utc(create_time)
    safe = re.sub(r"[^A-Za-z0-9_]", "_", model_display_name)
    return f"prediction_{safe}_{t:%Y_%m_%dT%H_%M_%S}_{t.microsecond // 1000:03d}Z"


def _is_keyed(keyed: bool | None, inst: Instance) -> bool:
    return inst.key is not None if keyed is None else keyed


def _instance_columns(inst: Instance) -> list[str]:
    if isinstance(inst.raw, dict):
        return list(inst.raw)
    if isinstance(inst.raw, list) and inst.columns is not None and len(inst.columns) == len(inst.raw):
        return list(inst.columns)
    return ["instance"]


def _instance_values(inst: Instance, columns: Sequence[str]) -> list[Any]:
    raw = inst.raw
    if isinstance(raw, dict):
        return [raw.get(c) for c in columns]
    if isinstance(raw, list) and inst.columns is not None and list(inst.columns) == list(columns):
        return list(raw)
    if list(columns) == ["instance"]:
        return [raw]
    return [None] * len(columns)


# -- Cloud Storage ------------------------------------------------------------------------------------


class _Files:
    """One numbered series of files (predictions_0001.jsonl, ...), rotated by rows and bytes."""

    def __init__(self, sink: GcsSink, stem: str) -> None:
        self.sink = sink
        self.stem = stem
        self.number = 0
        self.rows = 0
        self.writer: GcsWriter | None = None
        self.header: list[str] | None = None
        self.uris: list[str] = []

    def add(self, lines: list[str], header: str = "") -> None:
        sink = self.sink
        start = 0
        while start < len(lines):
            if self.writer is None:
                self.number += 1
                uri = f"{sink.directory}/{self.stem}_{self.number:04d}.{sink.predictions_format}"
                content_type = "text/csv" if sink.predictions_format == "csv" else "application/jsonl"
                self.writer = sink.gcs.writer(uri, content_type=content_type)
                self.uris.append(uri)
                self.rows = 0
                if header:
                    self.writer.write(header.encode())
            take = min(len(lines) - start, sink.rows_per_file - self.rows)
            self.writer.write("".join(lines[start : start + take]).encode())
            self.rows += take
            start += take
            if self.rows >= sink.rows_per_file or self.writer.bytes_written >= sink.max_file_bytes:
                self.finish()

    def finish(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


class GcsSink:
    """Writes predictions and errors under ``<output_uri_prefix>/prediction-<model>-<time>/``.

    ``keyed``: write ``"key"`` instead of ``"instance"`` (None: for instances whose key is not None).
    Not thread-safe: one writer thread per sink.
    """

    def __init__(
        self,
        gcs: Gcs,
        output_uri_prefix: str,
        *,
        model_display_name: str,
        create_time: datetime.datetime,
        predictions_format: str = "jsonl",
        rows_per_file: int = 1_000_000,
        max_file_bytes: int = 1 << 30,
        keyed: bool | None = None,
    ) -> None:
        fmt = (predictions_format or "jsonl").lower()
        if fmt not in ("jsonl", "csv"):
            raise errors.InvalidArgument(
                f"output_config.predictions_format {predictions_format!r} is not 'jsonl' or 'csv'"
            )
        bucket, prefix = split_uri(output_uri_prefix, object_required=False)
        prefix = prefix.strip("/")
        base = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self.gcs = gcs
        self.predictions_format = fmt
        self.rows_per_file = max(1, rows_per_file)
        self.max_file_bytes = max_file_bytes
        self.keyed = keyed
        self.directory = f"{base}/{directory_name(model_display_name, create_time)}"
        self._predictions = _Files(self, "predictions")
        self._errors = _Files(self, "errors")
        self._columns: list[str] | None = None
        self._closed = False
        gcs.write(self.directory + "/", b"", content_type="application/x-directory")

    def write_predictions(self, rows: Sequence[Prediction]) -> None:
        """Append ``(instance, prediction)`` pairs."""
        self._check_open()
        if not rows:
            return
        if self.predictions_format == "jsonl":
            lines = []
            for inst, prediction in rows:
                if isinstance(prediction, Explained):
                    lines.append(_explained_line(self.keyed, inst, prediction))
                elif _is_keyed(self.keyed, inst):
                    lines.append(_dumps({"key": inst.key, "prediction": prediction}) + "\n")
                else:
                    lines.append(_dumps({"instance": inst.raw, "prediction": prediction}) + "\n")
            self._predictions.add(lines)
        elif isinstance(rows[0][1], Explained):
            explained = [(i, list(p) if isinstance(p, Explained) else [p, None]) for i, p in rows]
            self._predictions.add(*self._csv(rows[0][0], explained, ("prediction", "explanation")))
        else:
            self._predictions.add(*self._csv(rows[0][0], [(i, p) for i, p in rows], "prediction"))

    def write_errors(self, rows: Sequence[Failure]) -> None:
        """Append ``(instance, code_name, message)`` triples, e.g. ``(inst, "INVALID_ARGUMENT", "...")``."""
        self._check_open()
        if not rows:
            return
        if self.predictions_format == "jsonl":
            lines = []
            for inst, code, message in rows:
                error = {"status": code, "message": message}
                if _is_keyed(self.keyed, inst):
                    lines.append(_dumps({"key": inst.key, "error": error}) + "\n")
                else:
                    lines.append(_dumps({"instance": inst.raw, "error": error}) + "\n")
            self._errors.add(lines)
        else:
            cells = [(inst, {"status": code, "message": message}) for inst, code, message in rows]
            self._errors.add(*self._csv(rows[0][0], cells, "error"))

    def _csv(
        self, first: Instance, rows: list[tuple[Instance, Any]], last: str | tuple[str, ...]
    ) -> tuple[list[str], str]:
        if self._columns is None:
            self._columns = ["key"] if _is_keyed(self.keyed, first) else _instance_columns(first)
        columns = self._columns
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keyed = columns == ["key"]
        writer.writerows(
            [_cell(v) for v in ([inst.key] if keyed else _instance_values(inst, columns))]
            + _cells(value, last)
            for inst, value in rows
        )
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow([*columns, *_names(last)])
        lines = out.getvalue().splitlines(keepends=True) if len(rows) > 1 else [out.getvalue()]
        if len(lines) != len(rows):  # a cell held a newline: keep each record whole
            lines = _csv_records(rows, columns, keyed, last)
        return lines, header.getvalue()

    def close(self) -> list[str]:
        """Finish the open files; the URIs of every file written, predictions first."""
        if not self._closed:
            self._closed = True
            self._predictions.finish()
            self._errors.finish()
        return self._predictions.uris + self._errors.uris

    def abort(self) -> None:
        """Stop writing: files already handed rows are finished, nothing more is written."""
        if self._closed:
            return
        self._closed = True
        for files in (self._predictions, self._errors):
            with contextlib.suppress(errors.ApiError):
                files.finish()

    def _check_open(self) -> None:
        if self._closed:
            raise errors.FailedPrecondition(f"the output writer for {self.directory} is closed")

    def __enter__(self) -> GcsSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _names(last: str | tuple[str, ...]) -> list[str]:
    return [last] if isinstance(last, str) else list(last)


def _cells(value: Any, last: str | tuple[str, ...]) -> list[Any]:
    """The last cells of a CSV row: one value, or one per name in ``last`` (prediction, explanation)."""
    return [_cell(value)] if isinstance(last, str) else [_cell(v) for v in value]


def _explained_line(keyed: bool | None, inst: Instance, value: Explained) -> str:
    """A JSONL line with the explanation beside the prediction (bpj.local.explain)."""
    head = {"key": inst.key} if _is_keyed(keyed, inst) else {"instance": inst.raw}
    return _dumps({**head, "prediction": value.prediction, "explanation": value.explanation}) + "\n"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    return _dumps(value)


def _csv_records(
    rows: list[tuple[Instance, Any]], columns: list[str], keyed: bool, last: str | tuple[str, ...] = ""
) -> list[str]:
    out = []
    for inst, value in rows:
        buf = io.StringIO()
        values = [inst.key] if keyed else _instance_values(inst, columns)
        csv.writer(buf, lineterminator="\n").writerow([_cell(v) for v in values] + _cells(value, last))
        out.append(buf.getvalue())
    return out


# -- BigQuery -----------------------------------------------------------------------------------------


def _parse_destination(uri: str, project: str) -> tuple[str, str | None, str | None]:
    # A bare "bq://" means the job's own project.
    names = bq_uri.parse(f"bq://{project}" if uri == "bq://" and project else uri)
    if names is None:
        raise errors.InvalidArgument(
            f"bigquery_destination.output_uri {uri!r} is not bq://project, bq://project.dataset "
            "or bq://project.dataset.table"
        )
    return names


class BigQuerySink:
    """Writes predictions and errors into BigQuery tables of the local table store, in appends of up to
    ``rows_per_append`` rows.

    ``instance_schema`` gives the instance columns' types (the input table's schema for BigQuery input);
    without it they are inferred from the first rows written. ``keyed`` as for :class:`GcsSink`.
    """

    def __init__(
        self,
        tables: TableStore,
        destination_uri: str,
        *,
        model_display_name: str,
        create_time: datetime.datetime,
        project: str = "",
        instance_schema: pa.Schema | None = None,
        keyed: bool | None = None,
        rows_per_append: int = 50_000,
    ) -> None:
        proj, dataset, table = _parse_destination(destination_uri, project)
        self.tables = tables
        self.project = proj
        self.keyed = keyed
        self.rows_per_append = max(1, rows_per_append)
        self._instance_schema = instance_schema
        if dataset is None:
            dataset = dataset_name(model_display_name, create_time)
            fresh = True
        else:
            fresh = False
        self.dataset_id = dataset
        self.predictions_table = table or "predictions"
        self.errors_table = f"{table}_errors" if table else "errors"
        if fresh:
            tables.create_dataset(proj, dataset, exists_ok=True)
            # The same job run again (after a restart) starts its tables over, as its GCS files would.
            for name in (self.predictions_table, self.errors_table):
                if tables.table_exists(proj, dataset, name):
                    tables.delete_table(proj, dataset, name)
        else:
            if table is not None and not tables.dataset_exists(proj, dataset):
                raise errors.NotFound(f"Not found: Dataset {proj}:{dataset} (named by {destination_uri})")
            tables.create_dataset(proj, dataset, exists_ok=True)
            for name in (self.predictions_table, self.errors_table):
                if tables.table_exists(proj, dataset, name):
                    raise errors.AlreadyExists(f"Already Exists: Table {proj}:{dataset}.{name}")
        self._schemas: dict[str, pa.Schema] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {self.predictions_table: [], self.errors_table: []}
        self._closed = False
        self._explained = False  # an ``explanation`` column follows ``prediction`` (bpj.local.explain)

    @property
    def dataset(self) -> str:
        """``bq://project.dataset``, for output_info.bigquery_output_dataset."""
        return f"bq://{self.project}.{self.dataset_id}"

    def write_predictions(self, rows: Sequence[Prediction]) -> None:
        self._check_open()
        pending = self._pending[self.predictions_table]
        for inst, prediction in rows:
            row = self._instance_row(inst)
            if isinstance(prediction, Explained):
                self._explained = True
                row["explanation"] = _dumps(prediction.explanation)
                prediction = prediction.prediction
            row["prediction"] = _dumps(prediction)
            pending.append(row)
        if len(pending) >= self.rows_per_append:
            self._flush(self.predictions_table)

    def write_errors(self, rows: Sequence[Failure]) -> None:
        self._check_open()
        pending = self._pending[self.errors_table]
        for inst, code, message in rows:
            row = self._instance_row(inst)
            row["errors"] = {"code": _code_number(code), "message": message}
            pending.append(row)
        if len(pending) >= self.rows_per_append:
            self._flush(self.errors_table)

    def close(self) -> list[str]:
        """Append what is pending and make sure both tables exist; their ``bq://`` URIs."""
        if not self._closed:
            self._closed = True
            for name in (self.predictions_table, self.errors_table):
                self._flush(name)
                self._ensure_table(name, [])
        return [f"{self.dataset}.{name}" for name in (self.predictions_table, self.errors_table)]

    def abort(self) -> None:
        """Stop: rows already appended stay, pending ones are dropped."""
        self._closed = True
        for pending in self._pending.values():
            pending.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise errors.FailedPrecondition(f"the output writer for {self.dataset} is closed")

    def _instance_row(self, inst: Instance) -> dict[str, Any]:
        if _is_keyed(self.keyed, inst):
            return {"key": inst.key}
        raw = inst.raw
        if isinstance(raw, dict):
            return dict(raw)
        if isinstance(raw, list) and inst.columns is not None and len(inst.columns) == len(raw):
            return dict(zip(inst.columns, raw, strict=True))
        return {"instance": raw if isinstance(raw, str) else _dumps(raw)}

    def _flush(self, name: str) -> None:
        import pyarrow as pa

        rows = self._pending[name]
        if not rows:
            return
        schema = self._ensure_table(name, rows)
        columns = []
        for field in schema:
            values = [r.get(field.name) for r in rows]
            try:
                columns.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                if not pa.types.is_string(field.type):
                    raise errors.InvalidArgument(
                        f"column {field.name!r} of {self.dataset}.{name} is {field.type}, and a value written "
                        "to it is not"
                    ) from None
                columns.append(pa.array([None if v is None else _dumps(v) for v in values], pa.string()))
        self.tables.append(self.project, self.dataset_id, name, pa.Table.from_arrays(columns, schema=schema))
        rows.clear()

    def _ensure_table(self, name: str, rows: list[dict[str, Any]]) -> pa.Schema:
        import pyarrow as pa

        schema = self._schemas.get(name)
        if schema is not None:
            return schema
        last = (
            pa.field("prediction", pa.string(), metadata=JSON_FIELD_METADATA)
            if name == self.predictions_table
            else pa.field("errors", pa.struct([("code", pa.int64()), ("message", pa.string())]))
        )
        fields = self._instance_fields(rows)
        schema = pa.schema([*fields, last, *self._explanation_field(name)])
        self.tables.create_table(self.project, self.dataset_id, name, schema, exists_ok=True)
        # Both tables share the instance columns: the second one takes the first one's.
        other = self.errors_table if name == self.predictions_table else self.predictions_table
        if other not in self._schemas and fields:
            self._instance_schema = pa.schema(fields)
        self._schemas[name] = schema
        return schema

    def _explanation_field(self, name: str) -> list[pa.Field]:
        import pyarrow as pa

        explained = self._explained and name == self.predictions_table
        return [pa.field("explanation", pa.string(), metadata=JSON_FIELD_METADATA)] if explained else []

    def _instance_fields(self, rows: list[dict[str, Any]]) -> list[pa.Field]:
        import pyarrow as pa

        known = self._instance_schema
        names: list[str] = []
        for r in rows:
            for k in r:
                if k not in ("prediction", "errors", "explanation") and k not in names:
                    names.append(k)
        if known is not None:
            fields = [f for f in known if f.name in names or not rows]
            if names == ["key"] and "key" not in known.names:
                fields = []
            elif fields or not rows:
                return fields
        out = []
        for n in names:
            values = [r.get(n) for r in rows]
            try:
                t = pa.array(values).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                t = pa.string()  # mixed values: kept as JSON text
            out.append(pa.field(n, pa.string() if pa.types.is_null(t) else t))
        return out


def _code_number(code: str) -> int:
    try:
        return int(errors.Code[code])
    except KeyError:
        return int(errors.Code.UNKNOWN)
