"""BigQuery's JSON encodings, as its REST API v2 sends and takes them: table schemas
(``[{"name", "type", "mode", "fields"}]``) to and from Arrow, tabledata.list rows out (every scalar a string,
records as ``{"f": [...]}``, repeated fields as ``[{"v": ...}]``) and insertAll rows in, with BigQuery's
per-field error messages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bpj import errors
from bpj.outputs.json_columns import JSON_FIELD_METADATA, is_json_field

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["encode_rows", "record_from_json", "schema_from_json", "schema_to_json"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# -- schemas ---------------------------------------------------------------------------------------------

_TYPE_NAMES = {
    "INT64": "INTEGER",
    "FLOAT64": "FLOAT",
    "BOOL": "BOOLEAN",
    "STRUCT": "RECORD",
    "DECIMAL": "NUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
}


_MAX_RECORD_DEPTH = 15  # BigQuery's limit on RECORDs nested in one another


def _arrow_type(name: str, subfields: list[dict[str, Any]], where: str, depth: int) -> pa.DataType:
    import pyarrow as pa

    name = _TYPE_NAMES.get(name.upper(), name.upper())
    simple = {
        "STRING": pa.string(),
        "INTEGER": pa.int64(),
        "FLOAT": pa.float64(),
        "BOOLEAN": pa.bool_(),
        "BYTES": pa.binary(),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
        "DATE": pa.date32(),
        "DATETIME": pa.timestamp("us"),
        "TIME": pa.time64("us"),
        "NUMERIC": pa.decimal128(38, 9),
        "BIGNUMERIC": pa.decimal256(76, 38),
        "JSON": pa.string(),
        "GEOGRAPHY": pa.string(),
    }
    if name == "RECORD":
        if not subfields:
            raise errors.InvalidArgument(f"Field {where} is type RECORD but has no schema")
        if depth >= _MAX_RECORD_DEPTH:
            raise errors.InvalidArgument(
                f"Field {where[:200]} nests RECORDs deeper than {_MAX_RECORD_DEPTH} levels"
            )
        return pa.struct([_arrow_field(f, where, depth + 1) for f in subfields])
    if name not in simple:
        raise errors.InvalidArgument(f"Invalid value for type: {name} is not a valid value (field {where})")
    return simple[name]


def _arrow_field(field: dict[str, Any], parent: str = "", depth: int = 1) -> pa.Field:
    import pyarrow as pa

    name = field.get("name") or ""
    where = f"{parent}.{name}" if parent else name
    if not name:
        raise errors.InvalidArgument("Empty field name in the schema")
    mode = (field.get("mode") or "NULLABLE").upper()
    dtype = _arrow_type(field.get("type") or "", field.get("fields") or [], where, depth)
    metadata = {b"description": field["description"].encode()} if field.get("description") else {}
    if str(field.get("type") or "").upper() == "JSON":
        metadata.update(JSON_FIELD_METADATA)  # as the Storage Read API marks a JSON column
    if mode == "REPEATED":
        return pa.field(name, pa.list_(dtype), nullable=False, metadata=metadata or None)
    if mode not in ("NULLABLE", "REQUIRED"):
        raise errors.InvalidArgument(f"Invalid mode {mode} for field {where}")
    return pa.field(name, dtype, nullable=mode != "REQUIRED", metadata=metadata or None)


def schema_from_json(fields: list[dict[str, Any]]) -> pa.Schema:
    """The Arrow schema of BigQuery JSON schema fields (``[{"name", "type", "mode", "fields"}]``)."""
    import pyarrow as pa

    return pa.schema([_arrow_field(f) for f in fields])


def _bq_type(dtype: pa.DataType) -> tuple[str, list[dict[str, Any]]]:
    import pyarrow.types as pat

    if pat.is_boolean(dtype):
        return "BOOLEAN", []
    if pat.is_integer(dtype):
        return "INTEGER", []
    if pat.is_floating(dtype):
        return "FLOAT", []
    if pat.is_timestamp(dtype):
        return ("TIMESTAMP" if dtype.tz else "DATETIME"), []
    if pat.is_date(dtype):
        return "DATE", []
    if pat.is_time(dtype):
        return "TIME", []
    if pat.is_decimal(dtype):
        return ("NUMERIC" if dtype.precision <= 38 and dtype.scale <= 9 else "BIGNUMERIC"), []
    if pat.is_binary(dtype) or pat.is_large_binary(dtype) or pat.is_fixed_size_binary(dtype):
        return "BYTES", []
    if pat.is_struct(dtype):
        return "RECORD", [_bq_field(dtype.field(i)) for i in range(dtype.num_fields)]
    return "STRING", []


def _bq_field(field: pa.Field) -> dict[str, Any]:
    import pyarrow.types as pat

    dtype, mode = field.type, "NULLABLE" if field.nullable else "REQUIRED"
    if pat.is_list(dtype) or pat.is_large_list(dtype):
        dtype, mode = dtype.value_type, "REPEATED"
    name, sub = ("JSON", []) if is_json_field(field) else _bq_type(dtype)
    out: dict[str, Any] = {"name": field.name, "type": name, "mode": mode}
    if sub:
        out["fields"] = sub
    if field.metadata and b"description" in field.metadata:
        out["description"] = field.metadata[b"description"].decode()
    return out


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """BigQuery JSON schema fields for an Arrow schema."""
    return [_bq_field(f) for f in schema]


# -- values out (tabledata.list) ---------------------------------------------------------------------------


def _float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def _encoder(dtype: pa.DataType, timestamps: str) -> Callable[[Any], Any]:
    import pyarrow.types as pat

    def nullable(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda v: None if v is None else fn(v)

    if pat.is_list(dtype) or pat.is_large_list(dtype):
        item = _encoder(dtype.value_type, timestamps)
        return lambda v: [] if v is None else [{"v": item(x)} for x in v]
    if pat.is_struct(dtype):
        names = [dtype.field(i).name for i in range(dtype.num_fields)]
        subs = [_encoder(dtype.field(i).type, timestamps) for i in range(dtype.num_fields)]
        return nullable(lambda v: {"f": [{"v": e(v.get(n))} for n, e in zip(names, subs, strict=True)]})
    if pat.is_boolean(dtype):
        return nullable(lambda v: "true" if v else "false")
    if pat.is_integer(dtype):
        return nullable(str)
    if pat.is_floating(dtype):
        return nullable(_float)
    if pat.is_binary(dtype) or pat.is_large_binary(dtype) or pat.is_fixed_size_binary(dtype):
        return nullable(lambda v: base64.b64encode(v).decode())
    if pat.is_timestamp(dtype) and dtype.tz:
        if timestamps == "int64":
            return nullable(lambda v: str((v - _EPOCH) // dt.timedelta(microseconds=1)))
        if timestamps == "iso":
            return nullable(lambda v: v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        return nullable(lambda v: _float((v - _EPOCH) / dt.timedelta(seconds=1)))
    if pat.is_timestamp(dtype) or pat.is_date(dtype) or pat.is_time(dtype):
        return nullable(lambda v: v.isoformat())
    return nullable(str)


def encode_rows(rows: pa.Table, timestamps: str = "float") -> list[dict[str, Any]]:
    """tabledata.list rows (``[{"f": [{"v": ...}]}]``); ``timestamps`` is "float", "int64" or "iso"."""
    encoders = [_encoder(f.type, timestamps) for f in rows.schema]
    columns = [[e(v) for v in rows.column(i).to_pylist()] for i, e in enumerate(encoders)]
    return [{"f": [{"v": v} for v in values]} for values in zip(*columns, strict=True)]


# -- values in (insertAll) -----------------------------------------------------------------------------------


class _Bad(Exception):
    pass


def record_from_json(
    schema: Any, value: Any, where: str, ignore_unknown: bool, problems: list[dict[str, str]]
) -> dict[str, Any]:
    """An insertAll row (``{"json": value}``'s value) as a dict of Python values for ``schema`` (an Arrow
    schema or struct type); what does not fit is appended to ``problems`` as BigQuery's insertErrors."""
    if not isinstance(value, dict):
        problems.append(_problem(where, "This field is not a record."))
        return {}
    known = {f.name for f in schema}
    out: dict[str, Any] = {}
    for name in value:
        if name not in known and not ignore_unknown:
            problems.append(_problem(f"{where}.{name}" if where else name, f"no such field: {name}."))
    for field in schema:
        path = f"{where}.{field.name}" if where else field.name
        raw = value.get(field.name)
        if raw is None:
            if not field.nullable and not _is_list(field.type):
                problems.append(_problem(path, f"Missing required field: {path}."))
            out[field.name] = [] if _is_list(field.type) else None
            continue
        try:
            out[field.name] = _from_json(field.type, raw, path, ignore_unknown, problems)
        except _Bad as e:
            problems.append(_problem(path, str(e)))
    return out


def _is_list(dtype: pa.DataType) -> bool:
    import pyarrow.types as pat

    return bool(pat.is_list(dtype) or pat.is_large_list(dtype))


def _from_json(
    dtype: pa.DataType, v: Any, where: str, ignore_unknown: bool, problems: list[dict[str, str]]
) -> Any:
    import pyarrow.types as pat

    if _is_list(dtype):
        if not isinstance(v, list):
            raise _Bad(f"Field {where} is repeated: give a JSON array.")
        if any(x is None for x in v):
            raise _Bad(f"Array specified for field {where} has a null element.")
        return [_from_json(dtype.value_type, x, where, ignore_unknown, problems) for x in v]
    if pat.is_struct(dtype):
        return record_from_json(dtype, v, where, ignore_unknown, problems)
    if isinstance(v, (list, dict)):
        what = "a record" if isinstance(v, dict) else "an array"
        raise _Bad(f"Field {where} is not repeated or a record, and {what} was given.")
    try:
        if pat.is_boolean(dtype):
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            raise ValueError
        if pat.is_integer(dtype):
            if isinstance(v, bool):
                raise ValueError
            if isinstance(v, float):
                if not v.is_integer():
                    raise ValueError
                return int(v)
            return int(v) if isinstance(v, int) else int(str(v).strip())
        if pat.is_floating(dtype):
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        if pat.is_binary(dtype) or pat.is_large_binary(dtype):
            return base64.b64decode(str(v), validate=True)
        if pat.is_timestamp(dtype):
            return _timestamp(v, utc=bool(dtype.tz))
        if pat.is_date(dtype):
            return dt.date.fromisoformat(str(v))
        if pat.is_time(dtype):
            return dt.time.fromisoformat(str(v))
        if pat.is_decimal(dtype):
            return decimal.Decimal(str(v))
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    except (ValueError, TypeError, ArithmeticError, binascii.Error):
        raise _Bad(f"Cannot convert value to {_bq_type(dtype)[0].lower()} (bad value): {v}") from None


def _timestamp(v: Any, utc: bool) -> dt.datetime:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        stamp = _EPOCH + dt.timedelta(seconds=v)
        return stamp if utc else stamp.replace(tzinfo=None)
    text = str(v).strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if not utc:
        return parsed.replace(tzinfo=None)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _problem(location: str, message: str) -> dict[str, str]:
    return {"reason": "invalid", "location": location, "debugInfo": "", "message": message}
