"""Hypothesis strategies for bpj's messages and for valid Vertex AI / BigQuery resource names.

::

    from hypothesis import given
    import bpj
    from bpj.testing import strategies as bst

    @given(bst.messages(bpj.types.BatchPredictionJob, json_safe=True))
    def test_my_code_keeps_jobs(job): ...

    @given(bst.job_names(project="my-project", location="us-central1"))
    def test_my_code_parses_names(name): ...

:func:`messages` works from a message descriptor, so it serves any protobuf message class: bpj's, the
official libraries' raw protobuf classes (``Official.pb()``), or your own. NaN is never generated (a
message holding NaN is not equal to itself); infinities only when ``json_safe`` is False.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as e:  # pragma: no cover (the test venv has it; tests/test_packaging.py checks)
    raise ModuleNotFoundError(
        "bpj.testing.strategies needs hypothesis: pip install 'bpj[testing]'", name=e.name
    ) from None

from bpj.transport.http_rules import is_repeated

__all__ = [
    "batch_prediction_jobs",
    "job_names",
    "job_states",
    "locations",
    "messages",
    "model_names",
    "models",
    "project_ids",
    "read_session_names",
    "read_sessions",
    "read_stream_names",
    "table_names",
]

_MAX_ITEMS = 3  # repeated fields and maps
_MAX_TEXT = 16

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_FLT_MAX = float.fromhex("0x1.fffffep+127")
_RANGES = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
}

# Valid ranges of the well-known types (proto3 JSON rejects anything outside them).
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_DURATION_SECONDS = 315_576_000_000  # +-10,000 years
_NANOS = 999_999_999

# Well-known types that hold no messages, so they are generated whatever depth is left.
_LEAVES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Any",
        "google.protobuf.Empty",
        "google.protobuf.Value",  # scalar kinds only once depth runs out
    }
)


def messages(
    cls_or_descriptor: Any, *, max_depth: int = 3, json_safe: bool = False
) -> st.SearchStrategy[Any]:
    """A strategy for messages of a class, given the class, its descriptor or its full name.

    Every field kind is covered: scalars across their whole range, unicode strings, bytes, declared enum
    values, nested messages down to ``max_depth`` levels, repeated fields, maps, oneofs (at most one member
    set) and proto3 ``optional`` (set, possibly to its default, or not). Well-known types stay valid:
    Timestamp in 0001..9999, Duration within +-10,000 years with consistent signs, Value with finite numbers,
    FieldMask paths that survive the camelCase conversion, Any empty (or a packed Empty).

    With ``json_safe=True`` every message round-trips exactly through proto3 JSON: floats are finite (float32
    fields hold float32 values in either mode; in JSON mode never +-FLT_MAX, which protobuf's Python
    printer writes in a form its own parser rejects), Any is empty and google.rpc.Status has no details, since
    JSON cannot carry an Any without resolving its type. A full name (a str) is looked up in bpj's pool.
    """
    if isinstance(cls_or_descriptor, str):
        from bpj._gen.pool import pool

        descriptor = pool().FindMessageTypeByName(cls_or_descriptor)
    elif isinstance(cls_or_descriptor, Descriptor):
        descriptor = cls_or_descriptor
    else:
        descriptor = cls_or_descriptor.DESCRIPTOR
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, not {max_depth}")
    return _message(descriptor, max_depth, json_safe)


@functools.cache
def _message(descriptor: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    cls = message_factory.GetMessageClass(descriptor)
    special = _WELL_KNOWN.get(descriptor.full_name)
    if special is not None:
        return special(descriptor, cls, depth, json_safe)

    fields: dict[str, Any] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.containing_oneof is not None:
            continue
        if descriptor.full_name == "google.rpc.Status" and field.name == "details" and json_safe:
            continue
        strategy = _field(field, depth, json_safe)
        if strategy is not None:
            fields[field.name] = field
            optional[field.name] = strategy
    for oneof in descriptor.oneofs:
        members = []
        for field in oneof.fields:
            strategy = _single(field, depth, json_safe)
            if strategy is not None:
                members.append(st.tuples(st.just(field), strategy))
        if members:
            optional[oneof.name] = st.one_of(members)
    build = functools.partial(_build, cls, fields)
    return st.fixed_dictionaries({}, optional=optional).map(build)


def _build(cls: Any, fields: dict[str, Any], values: dict[str, Any]) -> Any:
    msg = cls()
    for key, value in values.items():
        field = fields.get(key)
        if field is None:  # a oneof: (member, value)
            field, value = value
        _assign(msg, field, value)
    return msg


def _assign(msg: Any, field: Any, value: Any) -> None:
    if _is_map(field):
        target = getattr(msg, field.name)
        if field.message_type.fields_by_name["value"].message_type is not None:
            for key, item in value.items():
                target[key].CopyFrom(item)
        else:
            target.update(value)
    elif is_repeated(field):
        getattr(msg, field.name).extend(value)
    elif field.message_type is not None:
        sub = getattr(msg, field.name)
        sub.SetInParent()
        sub.MergeFrom(value)
    else:
        setattr(msg, field.name, value)


def _is_map(field: Any) -> bool:
    return bool(
        is_repeated(field) and field.message_type is not None and field.message_type.GetOptions().map_entry
    )


def _field(field: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any] | None:
    """The strategy for a whole field's value (a list for repeated fields, a dict for maps), or None."""
    if _is_map(field):
        entry = field.message_type
        value = _single(entry.fields_by_name["value"], depth, json_safe)
        if value is None:
            return None
        key = _scalar(entry.fields_by_name["key"], json_safe)
        return st.dictionaries(key, value, max_size=_MAX_ITEMS)
    item = _single(field, depth, json_safe)
    if item is None:
        return None
    if is_repeated(field):
        return st.lists(item, max_size=_MAX_ITEMS)
    return item


def _single(field: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any] | None:
    """The strategy for one value of a field (an element, for repeated fields)."""
    if field.message_type is None:
        return _scalar(field, json_safe)
    if depth > 0:
        return _message(field.message_type, depth - 1, json_safe)
    if field.message_type.full_name in _LEAVES:
        return _message(field.message_type, 0, json_safe)
    return None


def _scalar(field: Any, json_safe: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _RANGES:
        low, high = _RANGES[kind]
        return st.integers(low, high)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=False, allow_infinity=not json_safe)
    if kind == FieldDescriptor.TYPE_FLOAT:
        if json_safe:
            # protobuf's Python JSON printer writes +-FLT_MAX as +-3.4028235e+38 (shortest float32 form),
            # which its own parser then rejects as out of range; the values just inside are fine.
            return st.floats(-_FLT_MAX, _FLT_MAX, width=32, exclude_min=True, exclude_max=True)
        return st.floats(width=32, allow_nan=False)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=_MAX_TEXT)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=_MAX_TEXT)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise TypeError(f"no strategy for field {field.full_name} of type {kind}")


# --- well-known types ---------------------------------------------------------------------------


def _timestamp(descriptor: Any, cls: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    return st.builds(cls, seconds=st.integers(*_TIMESTAMP_SECONDS), nanos=st.integers(0, _NANOS))


def _duration(descriptor: Any, cls: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    def build(seconds: int, nanos: int) -> Any:
        # seconds and nanos carry the same sign; a zero second count allows either sign of nanos.
        if seconds < 0 or (seconds == 0 and nanos < 0):
            return cls(seconds=seconds, nanos=-abs(nanos))
        return cls(seconds=seconds, nanos=abs(nanos))

    seconds = st.integers(-_DURATION_SECONDS, _DURATION_SECONDS) | st.just(0)  # sub-second, either sign
    return st.builds(build, seconds, st.integers(-_NANOS, _NANOS))


_WORD = r"[a-z][a-z0-9]{0,6}"
_SNAKE = st.from_regex(rf"\A{_WORD}(_{_WORD}){{0,2}}\Z")


def _field_mask(descriptor: Any, cls: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    # Each segment is a snake_case identifier whose words start with a letter: "a_1" would come back
    # from camelCase ("a1") as "a1".
    path = st.lists(_SNAKE, min_size=1, max_size=3).map(".".join)
    return st.builds(lambda paths: cls(paths=paths), st.lists(path, max_size=_MAX_ITEMS))


def _any(descriptor: Any, cls: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    empty = st.builds(cls)
    if json_safe:
        return empty
    return empty | st.builds(cls, type_url=st.just("type.googleapis.com/google.protobuf.Empty"))


def _value(descriptor: Any, cls: Any, depth: int, json_safe: bool) -> st.SearchStrategy[Any]:
    fields = descriptor.fields_by_name
    kinds: list[st.SearchStrategy[Any]] = [
        st.just(cls(null_value=0)),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda v: cls(number_value=v)),
        st.text(max_size=_MAX_TEXT).map(lambda v: cls(string_value=v)),
        st.booleans().map(lambda v: cls(bool_value=v)),
    ]
    if depth > 0:
        for name in ("struct_value", "list_value"):
            nested = _message(fields[name].message_type, depth - 1, json_safe)
            kinds.append(nested.map(functools.partial(_wrap, cls, fields[name])))
    return st.one_of(kinds)


def _wrap(cls: Any, field: Any, value: Any) -> Any:
    msg = cls()
    _assign(msg, field, value)
    return msg


_WELL_KNOWN: dict[str, Callable[[Any, Any, int, bool], st.SearchStrategy[Any]]] = {
    "google.protobuf.Timestamp": _timestamp,
    "google.protobuf.Duration": _duration,
    "google.protobuf.FieldMask": _field_mask,
    "google.protobuf.Any": _any,
    "google.protobuf.Value": _value,
}

# --- resource names -----------------------------------------------------------------------------

_LOCATIONS = (
    "us-central1",
    "us-east1",
    "us-east4",
    "us-west1",
    "europe-west1",
    "europe-west4",
    "asia-east1",
    "asia-northeast1",
    "asia-southeast1",
    "australia-southeast1",
    "northamerica-northeast1",
    "southamerica-east1",
)


def _given(
    value: str | st.SearchStrategy[str] | None, default: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    if value is None:
        return default
    if isinstance(value, str):
        return st.just(value)
    return value


# A project ID; BigQuery names a table's project by its ID, never its number (the local stack refuses numbers).
_PROJECT_ID = st.from_regex(r"\A[a-z][a-z0-9-]{4,28}[a-z0-9]\Z")


def project_ids() -> st.SearchStrategy[str]:
    """Project IDs (6-30 characters: lowercase letters, digits, hyphens) and project numbers."""
    return _PROJECT_ID | st.integers(1, 10**12).map(str)


def locations() -> st.SearchStrategy[str]:
    """Vertex AI regions such as ``us-central1``."""
    return st.sampled_from(_LOCATIONS)


def _ids() -> st.SearchStrategy[str]:
    # Vertex AI gives jobs and models numeric IDs (int64).
    return st.integers(1, 2**63 - 1).map(str)


def job_names(
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[str]:
    """``projects/{project}/locations/{location}/batchPredictionJobs/{id}``; pass a str (or a strategy)
    to fix the project or location."""
    return st.builds(
        "projects/{}/locations/{}/batchPredictionJobs/{}".format,
        _given(project, project_ids()),
        _given(location, locations()),
        _ids(),
    )


def model_names(
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
    *,
    versions: bool = False,
) -> st.SearchStrategy[str]:
    """``projects/{project}/locations/{location}/models/{id}``; with ``versions=True`` some names end in
    ``@{version_id}`` or ``@{alias}``."""
    names = st.builds(
        "projects/{}/locations/{}/models/{}".format,
        _given(project, project_ids()),
        _given(location, locations()),
        _ids(),
    )
    if not versions:
        return names
    suffix = st.sampled_from(["", "@default"]) | st.integers(1, 10**6).map("@{}".format)
    return st.builds(str.__add__, names, suffix)


def table_names(project: str | st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """BigQuery tables: ``projects/{project}/datasets/{dataset}/tables/{table}``, the project an ID (BigQuery
    table names never hold a project number)."""
    ident = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,29}\Z")
    return st.builds("projects/{}/datasets/{}/tables/{}".format, _given(project, _PROJECT_ID), ident, ident)


_SESSION_ID = st.from_regex(r"\A[A-Za-z0-9]{8,32}\Z")


def read_session_names(
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[str]:
    """BigQuery Storage read sessions: ``projects/{project}/locations/{location}/sessions/{id}``."""
    return st.builds(
        "projects/{}/locations/{}/sessions/{}".format,
        _given(project, project_ids()),
        _given(location, st.sampled_from(("us", "eu", *_LOCATIONS))),
        _SESSION_ID,
    )


def read_stream_names(
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[str]:
    """``.../sessions/{session}/streams/{id}``."""
    return st.builds("{}/streams/{}".format, read_session_names(project, location), _SESSION_ID)


# --- named messages -----------------------------------------------------------------------------


def job_states() -> st.SearchStrategy[int]:
    """Every declared ``JobState`` value (ints, as protobuf enum fields hold them)."""
    from bpj import types

    return st.sampled_from([v.number for v in types.JobState.DESCRIPTOR.values])


def _named(
    cls: Any, max_depth: int, json_safe: bool, **overrides: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    def build(msg: Any, values: dict[str, Any]) -> Any:
        for name, value in values.items():
            setattr(msg, name, value)
        return msg

    return st.builds(
        build, messages(cls, max_depth=max_depth, json_safe=json_safe), st.fixed_dictionaries(overrides)
    )


def batch_prediction_jobs(
    *,
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
    max_depth: int = 3,
    json_safe: bool = False,
) -> st.SearchStrategy[Any]:
    """``bpj.types.BatchPredictionJob`` messages with a valid ``name``, ``model`` and ``state``; every
    other field as :func:`messages` makes it."""
    from bpj import types

    return _named(
        types.BatchPredictionJob,
        max_depth,
        json_safe,
        name=job_names(project, location),
        model=model_names(project, location, versions=True),
        state=job_states(),
    )


def models(
    *,
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
    max_depth: int = 3,
    json_safe: bool = False,
) -> st.SearchStrategy[Any]:
    """``bpj.types.Model`` messages with a valid ``name``; every other field as :func:`messages` makes it."""
    from bpj import types

    return _named(types.Model, max_depth, json_safe, name=model_names(project, location))


def read_sessions(
    *,
    project: str | st.SearchStrategy[str] | None = None,
    location: str | st.SearchStrategy[str] | None = None,
    max_depth: int = 3,
    json_safe: bool = False,
) -> st.SearchStrategy[Any]:
    """``bpj.types.ReadSession`` messages with a valid session ``name`` and ``table``, and streams named
    under the session."""
    from bpj import types

    @st.composite
    def sessions(draw: st.DrawFn) -> Any:
        session = draw(
            _named(
                types.ReadSession,
                max_depth,
                json_safe,
                name=read_session_names(project, location),
                table=table_names(project),
            )
        )
        for stream in session.streams:
            stream.name = f"{session.name}/streams/{draw(_SESSION_ID)}"
        return session

    return sessions()
