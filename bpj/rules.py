"""The argument rules every entry point shares: ``create``/``submit``, ``Model.upload``, ``init`` and the CLI.

One table, ``INTEGERS``, holds the range of every integer argument (the range of the proto field it fills,
narrowed where Vertex AI documents less), so that no value reaches protobuf to fail there with its own
error. The other rules are small functions over plain values: ids (matched whole, never with ``$``, which
lets a final newline through), project and location, finite positive timeouts, ``gs://`` URIs (by
:mod:`bpj.gcs_uri`'s Cloud Storage rules) and ``bq://`` URIs (shape by :mod:`bpj.bq_uri`, names by
BigQuery's naming rules).

Every refusal is a :class:`bpj.errors.UsageError` naming the argument, the value and what is allowed; a
value of the wrong type is a :class:`bpj.errors.UsageTypeError`, which is also a TypeError, as the official
SDK raises for one.

An argument is named as the caller knows it: its Python parameter name by default, or whatever
:func:`argument_names` says around the call (the CLI: ``labels`` is ``--labels``). The checks name
arguments (``fail("labels", ...)``, ``name_of("machine_type")``), never display text, so a message is
right when it is made and nothing rewrites it afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from bpj import bq_uri, errors, gcs_uri

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class IntRange(NamedTuple):
    low: int
    high: int
    field: str  # the proto field it fills


# Every integer argument: the values allowed, and the field it fills.
INTEGERS: dict[str, IntRange] = {
    "batch_size": IntRange(1, INT32_MAX, "manual_batch_tuning_parameters.batch_size (int32)"),
    "accelerator_count": IntRange(1, INT32_MAX, "machine_spec.accelerator_count (int32)"),
    "starting_replica_count": IntRange(1, INT32_MAX, "dedicated_resources.starting_replica_count (int32)"),
    "max_replica_count": IntRange(1, INT32_MAX, "dedicated_resources.max_replica_count (int32)"),
    "page_size": IntRange(1, INT32_MAX, "page_size (int32)"),
    "serving_container_ports": IntRange(1, 65535, "container_spec.ports.container_port (a TCP port)"),
    "serving_container_grpc_ports": IntRange(
        1, 65535, "container_spec.grpc_ports.container_port (a TCP port)"
    ),
    "serving_container_shared_memory_size_mb": IntRange(1, INT64_MAX, "container_spec.shared_memory_size_mb"),
}

ID = re.compile(r"[A-Za-z0-9_-]+")  # a job, model or version id (matched whole)
PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,62}")  # a project id or number, maybe domain-scoped
LOCATION = re.compile(r"[a-z]+(?:-[a-z0-9]+)*")
# A project id (or number) in a bq:// URI, maybe domain-scoped (example.com:my-project).
BQ_PROJECT = re.compile(r"(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+:)?(?:[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?|[0-9]{1,19})")
BQ_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
MAX_BQ_TABLE_BYTES = 1024


# -- how an argument is called ----------------------------------------------------------------------

_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "bpj_argument_names", default=MappingProxyType({})
)


@contextlib.contextmanager
def argument_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, errors call each argument of ``names`` by its value there, e.g. the flag that sets
    it: ``{"labels": "--labels", "instance_config.key_field": "--key-field"}``. Blocks nest; the innermost
    name wins. Context-local, so threads and tasks each keep their own."""
    token = _NAMES.set({**_NAMES.get(), **names})
    try:
        yield
    finally:
        _NAMES.reset(token)


def name_of(argument: str, *, call: bool = False) -> str:
    """How the caller calls ``argument`` (a parameter name, or a path into one: ``gcs_source[1]``,
    ``labels['k']``, ``instance_config.key_field``): its name under :func:`argument_names`, the longest
    named head of the path keeping the rest (``--gcs-source[1]``), else the argument itself. ``call`` is
    for advice ("pass ... too"): a Python name is written as a keyword, ``machine_type=``."""
    names = _NAMES.get()
    end = len(argument)
    while end > 0:
        head = argument[:end]
        if head in names:
            return names[head] + argument[end:]
        end = max(argument.rfind("[", 0, end), argument.rfind(".", 0, end))
    return argument + "=" if call else argument


def _named(field: str | tuple[str, ...]) -> str:
    if isinstance(field, tuple):
        return "/".join(name_of(f) for f in field)
    return name_of(field)


def fail(field: str | tuple[str, ...], what: str) -> errors.UsageError:
    """A UsageError about ``field`` (an argument or a path into one; a tuple: several, as ``a/b``)."""
    return errors.UsageError(f"{_named(field)}: {what}")


def wrong_type(field: str | tuple[str, ...], value: Any, expected: str) -> errors.UsageTypeError:
    return errors.UsageTypeError(
        f"{_named(field)}: must be {expected}, got {type(value).__name__} {errors.shown(value)}"
    )


def text(value: Any, field: str) -> str:
    """A str that a proto string field can hold (valid Unicode: no lone surrogate); the caller checks the
    rest of its content."""
    if not isinstance(value, str):
        raise wrong_type(field, value, "a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(
            field, f"must be valid Unicode text (no lone surrogates), got {errors.shown(value)}"
        ) from None
    return value


def integer(value: Any, field: str, rule: str | None = None) -> int:
    """An int in the range ``INTEGERS[rule or field]`` says (bool is not an int here)."""
    low, high, proto = INTEGERS[rule or field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(field, value, f"an int from {low} to {high}")
    if not low <= value <= high:
        raise fail(
            field, f"must be an int from {low} to {high} (it fills {proto}), got {errors.shown(value)}"
        )
    return value


def timeout(value: Any, field: str) -> float | None:
    """None, or a finite number of seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(field, value, "seconds (a finite number > 0) or None")
    if not math.isfinite(value) or value <= 0:
        raise fail(field, f"must be a finite number of seconds > 0 (or None for the default), got {value!r}")
    return value


def flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise wrong_type(field, value, "True or False")
    return value


def identifier(value: Any, field: str, what: str = "an id") -> str:
    """A resource id: letters, digits, ``_`` and ``-`` (the whole value)."""
    text(value, field)
    if not ID.fullmatch(value):
        raise fail(field, f"must be {what} of letters, digits, _ and -, got {errors.shown(value)}")
    return value


def project(value: Any, field: str = "project") -> str:
    text(value, field)
    if not PROJECT.fullmatch(value):
        raise fail(
            field, f"must be a project ID or number (a-z, 0-9, '-', at most 63), got {errors.shown(value)}"
        )
    return value


# The regions Vertex AI serves, as https://cloud.google.com/vertex-ai/docs/general/locations and the
# generative-AI locations page list them (checked against google-cloud-aiplatform's own list by a test).
# Used only where bpj derives an endpoint from the location: a region newer than this list goes through
# BPJ_EXTRA_LOCATIONS (comma-separated) or an explicit api_endpoint.
REGIONS = frozenset(
    [
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west12",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "global",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-east7",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
        "us-west8",
    ]
)


def known_region(value: str, extra: str = "", field: str = "location") -> str:
    """``value`` when Vertex AI serves it (or ``extra``, a comma-separated list, names it); else a
    UsageError with the nearest known names."""
    if value in REGIONS or value in {x.strip() for x in extra.split(",")}:
        return value
    import difflib

    near = difflib.get_close_matches(value, sorted(REGIONS), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise fail(
        field,
        f"{errors.shown(value)} is not a Vertex AI region{hint} (a region newer than bpj's list: set "
        "BPJ_EXTRA_LOCATIONS=name, or give api_endpoint)",
    )


def location(value: Any, field: str = "location") -> str:
    text(value, field)
    if not LOCATION.fullmatch(value):
        raise fail(
            field, f"must look like 'us-central1' (a lowercase region name), got {errors.shown(value)}"
        )
    return value


# -- URIs --------------------------------------------------------------------------------------------


def gcs(value: Any, field: str, *, what: str = "gs://bucket/path") -> str:
    """A ``gs://`` URI by Cloud Storage's naming rules (:func:`bpj.gcs_uri.split`)."""
    text(value, field)
    try:
        gcs_uri.split(value)
    except errors.UsageError as e:
        raise fail(field, f"must be {what} (a Cloud Storage URI): {e}") from None
    return value


def bq_problem(uri: str, *, table: bool) -> str | None:
    """What is wrong with a ``bq://`` URI, or None: ``bq://project.dataset.table`` when ``table``, else
    ``bq://project`` or ``bq://project.dataset``; names by BigQuery's naming rules."""
    shape = bq_uri.TABLE_SHAPE if table else bq_uri.DATASET_SHAPE
    names = bq_uri.parse(uri)
    if names is None or (names.table is not None) != table:
        return f"must be {shape}"
    if not BQ_PROJECT.fullmatch(names.project):
        return (
            f"must be {shape}; the project {names.project!r} is not a project id (a lowercase letter, then "
            "at most 29 of a-z, 0-9 and '-', maybe after a domain and ':')"
        )
    if names.dataset is not None and not BQ_DATASET.fullmatch(names.dataset):
        return f"must be {shape}; the dataset {names.dataset!r} is not 1-1024 of A-Z, a-z, 0-9 and _"
    if names.table is not None:
        problem = bq_table_problem(names.table)
        if problem:
            return f"must be {shape}; {problem}"
    return None


def bq_table_problem(table: str) -> str | None:
    """BigQuery's table id rules: 1-1024 bytes of UTF-8 of letters, marks, numbers, connectors (``_``),
    dashes and spaces."""
    if not table:
        return "a table id cannot be empty"
    bad = [
        c for c in table if unicodedata.category(c)[0] not in "LMN" and unicodedata.category(c) not in _TABLE
    ]
    if bad:
        return f"the table id {table!r} has {''.join(dict.fromkeys(bad))!r}: letters, digits, _, - and spaces only"
    try:
        size = len(table.encode())
    except UnicodeEncodeError:
        return f"the table id {table!r} is not valid UTF-8"
    if size > MAX_BQ_TABLE_BYTES:
        return f"a table id is at most {MAX_BQ_TABLE_BYTES} bytes of UTF-8, got {size}"
    return None


_TABLE = ("Pc", "Pd", "Zs")


def bq(value: Any, field: str, *, table: bool) -> str:
    text(value, field)
    problem = bq_problem(value, table=table)
    if problem:
        raise fail(field, f"{problem}, got {errors.shown(value)}")
    return value
