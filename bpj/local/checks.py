"""What the Vertex emulator checks in a request before it stores anything, so that no URI a client sends can
reach outside the data dir and everything stored can be served back over REST.

Both walks go over the request message by its descriptors, so a field added to the protos is covered:

- ``check_uris``: every string field named ``*_uri``, ``*_uris`` or ``*_uri_prefix`` (the container image
  excepted) must be a ``gs://`` URI with a valid bucket and object name, or a ``bq://`` URI of valid BigQuery
  names, as the field allows (``URI_RULES``; any other URI field is a ``gs://`` object).
- ``check_values``: no NaN or infinity in any ``google.protobuf.Value`` (protobuf's JSON printer refuses them,
  so one stored value would break every REST answer that holds it), and Durations and Timestamps in their
  JSON range. ``check_servable`` then prints the message as the REST gateway would, as the last word.

The ``gs://`` rules are ``bpj.gcs_uri``'s plus, defence in depth for servers that decode once more, no ``.``
or ``..`` segment once percent-escapes are decoded, ``\\`` is read as a separator and NFKC is applied.
"""

from __future__ import annotations

import math
import re
import unicodedata
import urllib.parse
from typing import Any

from bpj import bq_uri, errors, gcs_uri
from bpj.local.bigquery.store import dataset_problem, project_problem, table_problem
from bpj.transport.http_rules import is_repeated

__all__ = [
    "PUBLISHER_URI_RULES",
    "URI_RULES",
    "FieldErrors",
    "bq_problem",
    "check_servable",
    "check_uris",
    "check_values",
    "gcs_problem",
]

_V1 = "google.cloud.aiplatform.v1."
# (message, field) -> how the field is read: "object" (a gs:// object or wildcard pattern), "prefix" (a gs://
# directory: the bucket alone will do), "bq-table", "bq-dataset" (bq://project or bq://project.dataset), None (not a storage
# URI). Any other URI field is a "schema": a gs:// object, which Google's public schema bucket may hold.
URI_RULES: dict[tuple[str, str], str | None] = {
    (_V1 + "GcsSource", "uris"): "object",
    (_V1 + "GcsDestination", "output_uri_prefix"): "prefix",
    (_V1 + "BigQuerySource", "input_uri"): "bq-table",
    (_V1 + "BigQueryDestination", "output_uri"): "bq-dataset",
    (_V1 + "Model", "artifact_uri"): "prefix",
    (_V1 + "UnmanagedContainerModel", "artifact_uri"): "prefix",
    (_V1 + "ModelContainerSpec", "image_uri"): None,
}
# A job on a publisher model (Gemini, embeddings) may name its output table too (bpj.local.publisher_job).
PUBLISHER_URI_RULES = {**URI_RULES, (_V1 + "BigQueryDestination", "output_uri"): "bq-dataset-or-table"}
_URI_FIELD = re.compile(r"(?:^|_)uri(?:s|_prefix)?$")
# Where Vertex AI's own schemata live (gs://google-cloud-aiplatform/schema/...): a name Cloud Storage keeps
# for Google, so bucket_problem refuses it, but a schema URI may point there.
_GOOGLE_SCHEMA_BUCKETS = frozenset({"google-cloud-aiplatform"})
_JSON_TYPES = frozenset({"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"})
_MAX_DURATION_SECONDS = 315_576_000_000
_MIN_TIMESTAMP, _MAX_TIMESTAMP = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31


class FieldErrors:
    """Collects validation problems and raises them the way Vertex AI words them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_if_any(self) -> None:
        if self.items:
            listed = "".join(f"{i}.Field: {f}; Message: {m}\t" for i, (f, m) in enumerate(self.items, 1))
            raise errors.InvalidArgument(f"List of found errors:\t{listed}")


# -- URIs --------------------------------------------------------------------------------------------------


def gcs_problem(uri: str, *, kind: str = "object") -> str | None:
    """What is wrong with ``uri`` as a ``gs://`` URI of ``kind`` (see ``URI_RULES``), or None."""
    if not uri.startswith("gs://"):
        return f"Must be a gs:// URI (the local stack reads and writes only its own Cloud Storage), got {errors.shown(uri)}."
    bucket, _, name = uri[5:].partition("/")
    problem = gcs_uri.bucket_problem(bucket)
    if problem is not None and not (kind == "schema" and bucket in _GOOGLE_SCHEMA_BUCKETS):
        return f"{errors.shown(uri)} does not name a valid bucket ({errors.shown(bucket)}): {problem}."
    name = name.rstrip("/") if kind == "prefix" else name
    if not name:  # gs://bucket/ reaches nothing outside the bucket; as a source it fails the job when it runs
        return None
    problem = gcs_uri.object_problem(name) or _decoded_problem(name)
    return None if problem is None else f"{errors.shown(uri)} does not name a valid object: {problem}."


def _decoded_problem(name: str) -> str | None:
    decoded = unicodedata.normalize("NFKC", urllib.parse.unquote(name))
    if decoded != name and gcs_uri.object_problem(decoded.rstrip("/")) is not None:
        return "decoded (percent-escapes, NFKC) it has '.' or '..' segments or control characters"
    if any(part in (".", "..") for part in re.split(r"[/\\]", decoded)):
        return "it has '.' or '..' segments (reading '\\' as '/')"
    return None


def bq_problem(uri: str, *, table: bool | None) -> str | None:
    """What is wrong with ``uri`` as ``bq://project.dataset.table`` (``table``) or ``bq://project[.dataset]``
    (not ``table``), or either (``table`` None)."""
    names = bq_uri.parse(uri)
    if names is None or (table is not None and (names.table is not None) != table):
        shape = bq_uri.TABLE_SHAPE if table else bq_uri.DATASET_SHAPE
        if table is None:
            shape = f"{bq_uri.DATASET_SHAPE} or {bq_uri.TABLE_SHAPE}"
        return f"Must be {shape}, got {errors.shown(uri)}."
    problem = project_problem(names.project)
    if problem is None and names.dataset is not None:
        problem = dataset_problem(names.dataset)
    if problem is None and names.table is not None:
        problem = table_problem(names.table)
    return None if problem is None else f"{errors.shown(uri)}: {problem}"


def check_uris(
    message: Any, path: str, problems: FieldErrors, rules: dict[Any, str | None] = URI_RULES
) -> None:
    """Add a problem for every URI field under ``message`` that its rule (in ``rules``) refuses."""
    for fd, value in message.ListFields():
        here = f"{path}.{fd.name}"
        if fd.message_type is not None:
            if fd.message_type.full_name in _JSON_TYPES:
                continue
            for where, item in _items(fd, value, here):
                if hasattr(item, "ListFields"):
                    check_uris(item, where, problems, rules)
            continue
        if fd.type != fd.TYPE_STRING:
            continue
        key = (message.DESCRIPTOR.full_name, fd.name)
        kind = rules[key] if key in rules else ("schema" if _URI_FIELD.search(fd.name) else None)
        if kind is None:
            continue
        for where, uri in _items(fd, value, here):
            if kind == "bq-dataset-or-table":
                problem = bq_problem(uri, table=None)
            elif kind == "bq-table" or kind == "bq-dataset":
                problem = bq_problem(uri, table=kind == "bq-table")
            else:
                problem = gcs_problem(uri, kind=kind)
            if problem is not None:
                problems.add(where, problem)


def _items(fd: Any, value: Any, path: str) -> list[tuple[str, Any]]:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return [(f"{path}[{k!r}]", v) for k, v in value.items()]
    if is_repeated(fd):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return [(path, value)]


# -- values that JSON cannot carry ---------------------------------------------------------------------------


def check_values(message: Any, path: str, problems: FieldErrors) -> None:
    """Add a problem for every non-finite number in a Value, Struct or ListValue under ``message``, and every
    Duration or Timestamp out of the range its JSON form has."""
    kind = message.DESCRIPTOR.full_name
    if kind in _JSON_TYPES:
        _check_json(message, path, problems)
        return
    if kind == "google.protobuf.Duration":
        s, n = message.seconds, message.nanos
        if abs(s) > _MAX_DURATION_SECONDS or abs(n) > 999_999_999 or (s > 0 > n) or (s < 0 < n):
            problems.add(path, "A Duration must be within ±315576000000 s, with nanos of the seconds' sign.")
        return
    if kind == "google.protobuf.Timestamp":
        if not _MIN_TIMESTAMP <= message.seconds <= _MAX_TIMESTAMP or not 0 <= message.nanos <= 999_999_999:
            problems.add(path, "A Timestamp must be within 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.")
        return
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        for where, item in _items(fd, value, f"{path}.{fd.name}"):
            if hasattr(item, "ListFields"):
                check_values(item, where, problems)


def _check_json(message: Any, path: str, problems: FieldErrors) -> None:
    kind = message.DESCRIPTOR.full_name
    if kind == "google.protobuf.Struct":
        for key, item in message.fields.items():
            _check_json(item, f"{path}[{key!r}]", problems)
    elif kind == "google.protobuf.ListValue":
        for i, item in enumerate(message.values):
            _check_json(item, f"{path}[{i}]", problems)
    else:
        which = message.WhichOneof("kind")
        if which == "number_value" and not math.isfinite(message.number_value):
            problems.add(
                path,
                f"{message.number_value} is not a JSON number: use a finite number, or a string or null.",
            )
        elif which == "struct_value":
            _check_json(message.struct_value, path, problems)
        elif which == "list_value":
            _check_json(message.list_value, path, problems)


def check_servable(message: Any, path: str, problems: FieldErrors) -> None:
    """Add a problem when ``message`` cannot be printed as JSON, as the REST gateway prints what it serves."""
    from google.protobuf import json_format

    try:
        json_format.MessageToDict(message, descriptor_pool=message.DESCRIPTOR.file.pool)
    except Exception as e:  # SerializeToJsonError, or a TypeError of an Any the pool does not know
        problems.add(path, f"Cannot be served as JSON: {e}")
