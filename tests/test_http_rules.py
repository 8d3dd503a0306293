"""google.api.http transcoding: every generated method's requests survive to_http -> from_http, templates
parse and match back, and bad names fail before the network with a message that says what to change."""

from __future__ import annotations

import importlib
import pkgutil
import types as pytypes
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bpj._gen.services
from bpj import errors, types
from bpj._gen.services import job_service, operations
from bpj.transport.base import HttpRule, Method
from bpj.transport.http_rules import compile_rule, from_http, get_field, set_field, to_http


def _all_methods() -> list[Method]:
    methods = []
    for info in pkgutil.iter_modules(bpj._gen.services.__path__):
        module = importlib.import_module(f"bpj._gen.services.{info.name}")
        methods.extend(module.SERVICE.methods)
    return methods


METHODS = [m for m in _all_methods() if m.http]

# -- strategies, built from descriptors -------------------------------------------------------------------

segment_text = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8)
plain_id = st.from_regex(r"[a-z0-9][a-z0-9-]{0,9}", fullmatch=True)
segment = st.one_of(plain_id, segment_text)


def path_value(segments: tuple[str, ...]) -> st.SearchStrategy[str]:
    if segments == ("*",):
        return st.one_of(plain_id, st.text(st.characters(codec="utf-8"), min_size=1, max_size=12))
    parts = []
    for s in segments:
        if s == "*":
            parts.append(segment)
        elif s == "**":
            parts.append(st.lists(segment, min_size=1, max_size=3).map("/".join))
        else:
            parts.append(st.just(s))
    return st.tuples(*parts).map("/".join)


INTS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(fd: Any) -> st.SearchStrategy[Any]:
    if fd.type == F.TYPE_STRING:
        return st.text(max_size=12)
    if fd.type == F.TYPE_BYTES:
        return st.binary(max_size=12)
    if fd.type == F.TYPE_BOOL:
        return st.booleans()
    if fd.type == F.TYPE_DOUBLE:
        return st.floats(allow_nan=False)
    if fd.type == F.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=False)
    if fd.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values])
    lo, hi = INTS[fd.type]
    return st.integers(lo, hi)


def is_repeated(fd: Any) -> bool:
    repeated = getattr(fd, "is_repeated", None)
    return bool(repeated) if repeated is not None else fd.label == fd.LABEL_REPEATED


def is_scalar(fd: Any) -> bool:
    return fd.message_type is None


field_mask_path = st.from_regex(r"[a-z]{1,5}(_[a-z]{1,5}){0,2}", fullmatch=True)


@st.composite
def fill_message(draw: st.DrawFn, message: Any, skip: frozenset[str], in_query: bool) -> None:
    """Set a random subset of the scalar fields of ``message``, plus well-known types.

    A message that travels in the query string only gets non-default values: an empty but present
    submessage has no query form (as with Google's own transcoding).
    """
    for fd in message.DESCRIPTOR.fields:
        if fd.name in skip or not draw(st.booleans()):
            continue
        wkt = fd.message_type.full_name if fd.message_type is not None else ""
        if wkt == "google.protobuf.FieldMask" and not is_repeated(fd):
            getattr(message, fd.name).paths.extend(draw(st.lists(field_mask_path, max_size=3)))
            getattr(message, fd.name).SetInParent()
        elif wkt == "google.protobuf.Duration" and not is_repeated(fd):
            d = getattr(message, fd.name)
            d.seconds, d.nanos = draw(st.integers(0, 10**9)), draw(st.integers(0, 999_999_999))
            d.SetInParent()
        elif not is_scalar(fd):
            continue
        elif is_repeated(fd):
            getattr(message, fd.name).extend(draw(st.lists(scalar(fd), max_size=3)))
        else:
            value = draw(scalar(fd))
            if not (in_query and not value):
                setattr(message, fd.name, value)


@st.composite
def requests_for(draw: st.DrawFn, method: Method) -> Any:
    rule = draw(st.sampled_from(method.http))
    compiled = compile_rule(rule)
    request = method.request_class()
    path_fields = {v.field_path for v in compiled.variables}
    for var in compiled.variables:
        *parents, last = var.field_path.split(".")
        target = request
        for name in parents:
            target = getattr(target, name)
        setattr(target, last, draw(path_value(var.segments)))
    top_path = {p.split(".")[0] for p in path_fields}
    draw(fill_message(request, frozenset(top_path), in_query=rule.body != "*"))
    for fd in request.DESCRIPTOR.fields:
        if (
            fd.message_type is None
            or is_repeated(fd)
            or fd.message_type.full_name.startswith("google.protobuf.")
        ):
            continue
        if not draw(st.booleans()):
            continue
        nested_skip = frozenset(p.split(".", 1)[1] for p in path_fields if p.startswith(fd.name + "."))
        in_query = rule.body not in ("*", fd.name)
        draw(fill_message(getattr(request, fd.name), nested_skip, in_query=in_query))
    return request


def over_the_wire(method: Method, request: Any) -> Any:
    parts = to_http(method, request)
    query = parse_qsl(urlencode(parts.query), keep_blank_values=True)
    return from_http(method, parts.verb, parts.path, query, parts.body)


# -- properties -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_request_survives_the_round_trip(method, data):
    request = data.draw(requests_for(method))
    back = over_the_wire(method, request)
    assert back == request, (request, back)


# The public BigQuery Storage protos give ReadRows and SplitReadStream the same GET template; the gateway
# tells them apart only by their query fields (offset vs fraction).
SAME_ROUTE = {"google.cloud.bigquery.storage.v1.BigQueryRead." + n for n in ("ReadRows", "SplitReadStream")}


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
def test_no_other_method_claims_a_methods_request(method):
    # The gateway routes by the first method whose rules match, so a request must not be claimed by another.
    request = method.request_class()
    for var in compile_rule(method.http[0]).variables:
        set_field(request, var.field_path, var.pattern.replace("**", "x").replace("*", "x"))
    parts = to_http(method, request)
    claimed = {
        m.full_name for m in METHODS if from_http(m, parts.verb, parts.path, [], parts.body) is not None
    }
    assert claimed == (SAME_ROUTE if method.full_name in SAME_ROUTE else {method.full_name})


ident = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
literal = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_.~-]{0,8}", fullmatch=True)


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[str, tuple[str, ...]]]:
    """A URI template and its variables; '**' only at the very end, where it is unambiguous."""
    names = draw(st.lists(ident, min_size=0, max_size=3, unique=True))
    kinds = draw(st.lists(st.one_of(st.none(), literal), min_size=len(names), max_size=len(names) + 3))
    parts, variables, pending = [], {}, list(names)
    for kind in kinds:
        if kind is None and pending:
            name = pending.pop()
            segs = tuple(draw(st.lists(st.one_of(literal, st.just("*")), min_size=1, max_size=3)))
            if not pending and draw(st.booleans()):
                segs += ("**",)
            variables[name] = segs
            parts.append(f"{{{name}}}" if segs == ("*",) else f"{{{name}={'/'.join(segs)}}}")
            if "**" in segs:
                break
        else:
            parts.append(kind or draw(literal))
    if not parts:
        parts.append(draw(literal))
    verb = draw(st.one_of(st.just(""), literal.map(lambda v: ":" + v)))
    return "/" + "/".join(parts) + verb, variables


@settings(max_examples=300, deadline=None)
@given(spec=templates(), data=st.data())
def test_template_parse_and_match_round_trip(spec, data):
    template, variables = spec
    compiled = compile_rule(HttpRule("get", template))
    assert compiled.render() == template
    assert {v.field_path: v.segments for v in compiled.variables} == variables
    values = {name: data.draw(path_value(segs), label=name) for name, segs in variables.items()}
    path = compiled.expand(pytypes.SimpleNamespace(**values))
    assert compiled.match(path) == values
    if "**" not in template:
        assert compiled.match(path + "/extra") is None


def test_percent_encoding_follows_google_rules():
    single = compile_rule(HttpRule("get", "/v1/{name}"))
    multi = compile_rule(HttpRule("get", "/v1/{name=projects/*/things/**}:run"))
    assert single.expand(pytypes.SimpleNamespace(name="a/b c~")) == "/v1/a%2Fb%20c~"
    assert (
        multi.expand(pytypes.SimpleNamespace(name="projects/p q/things/x/y"))
        == "/v1/projects/p%20q/things/x/y:run"
    )
    assert single.match("/v1/a%2Fb%20c~") == {"name": "a/b c~"}
    # In a multi-segment variable an escaped '/' stays escaped on the server side.
    assert multi.match("/v1/projects/p/things/x%2Fy:run") == {"name": "projects/p/things/x%2Fy"}
    assert multi.match("/v1/projects/p/things/x") is None


@pytest.mark.parametrize(
    "template", ["v1/x", "/v1/{name", "/v1/{na me}", "/v1/{name=a//b}", "/v1//x", "/v1/{name=a{b}"]
)
def test_malformed_templates_are_refused(template):
    with pytest.raises(errors.UsageError, match="URI template"):
        compile_rule(HttpRule("get", template))


# -- clear errors on bad names --------------------------------------------------------------------------


def test_bad_name_says_which_field_and_what_shape():
    request = types.GetBatchPredictionJobRequest(name="abc")
    with pytest.raises(errors.UsageError) as info:
        to_http(job_service.GET_BATCH_PREDICTION_JOB, request)
    assert str(info.value) == (
        "GetBatchPredictionJob: name must match projects/*/locations/*/batchPredictionJobs/*, got 'abc'"
    )
    with pytest.raises(errors.UsageError, match="GetBatchPredictionJob: name is empty"):
        to_http(job_service.GET_BATCH_PREDICTION_JOB, types.GetBatchPredictionJobRequest())


def test_additional_bindings_are_named_in_the_error_and_used_when_they_fit():
    with pytest.raises(
        errors.UsageError, match=r"operations/\* or projects/\*/locations/\*/models/\*/operations/\*"
    ):
        to_http(operations.GET_OPERATION, types.GetOperationRequest(name="operations/1"))
    parts = to_http(
        operations.GET_OPERATION,
        types.GetOperationRequest(name="projects/p/locations/l/models/m/operations/1"),
    )
    assert parts.path == "/v1/projects/p/locations/l/models/m/operations/1"


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=60))
def test_any_name_off_the_pattern_is_a_usage_error(name):
    compiled = compile_rule(job_service.GET_BATCH_PREDICTION_JOB.http[0])
    request = types.GetBatchPredictionJobRequest(name=name)
    if compiled.variables[0].regex.fullmatch(name):
        assert (
            from_http(job_service.GET_BATCH_PREDICTION_JOB, "GET", compiled.expand(request), [], None)
            == request
        )
    else:
        with pytest.raises(errors.UsageError, match="GetBatchPredictionJob: name "):
            to_http(job_service.GET_BATCH_PREDICTION_JOB, request)


# -- what the parts look like ---------------------------------------------------------------------------


def test_query_uses_json_names_and_json_forms():
    request = types.ListBatchPredictionJobsRequest(
        parent="projects/p/locations/l", filter='state="JOB_STATE_RUNNING"', page_size=5
    )
    request.read_mask.paths.extend(["display_name", "state"])
    parts = to_http(job_service.LIST_BATCH_PREDICTION_JOBS, request)
    assert parts == (
        "GET",
        "/v1/projects/p/locations/l/batchPredictionJobs",
        [("filter", 'state="JOB_STATE_RUNNING"'), ("pageSize", "5"), ("readMask", "displayName,state")],
        None,
    )


def test_body_field_and_nested_query_fields():
    create = types.CreateBatchPredictionJobRequest(
        parent="projects/p/locations/l", batch_prediction_job=types.BatchPredictionJob(display_name="n")
    )
    parts = to_http(job_service.CREATE_BATCH_PREDICTION_JOB, create)
    assert (parts.verb, parts.query, parts.body) == ("POST", [], b'{"displayName": "n"}')
    read = types.ReadRowsRequest(read_stream="projects/p/locations/l/sessions/s/streams/1", offset=7)
    read.arrow_serialization_options.buffer_compression = types.ArrowSerializationOptions.ZSTD
    assert (
        to_http(job_service.SERVICE.methods[0], create).path
        == "/v1/projects/p/locations/l/batchPredictionJobs"
    )
    from bpj._gen.services import big_query_read

    parts = to_http(big_query_read.READ_ROWS, read)
    assert parts.query == [("offset", "7"), ("arrowSerializationOptions.bufferCompression", "ZSTD")]


def test_query_keys_may_be_snake_case_and_unknown_keys_are_refused():
    method = job_service.LIST_BATCH_PREDICTION_JOBS
    path = "/v1/projects/p/locations/l/batchPredictionJobs"
    request = from_http(method, "get", path, [("page_size", "3"), ("read_mask", "a,b_c,dE")], None)
    assert request.page_size == 3 and list(request.read_mask.paths) == ["a", "b_c", "d_e"]
    with pytest.raises(errors.UsageError, match="no field 'pageSise'"):
        from_http(method, "GET", path, [("pageSise", "3")], None)
    with pytest.raises(errors.UsageError, match="page_size"):
        from_http(method, "GET", path, [("page_size", "three")], None)
    assert from_http(method, "POST", path, [], None) is None
    assert from_http(method, "GET", path + "/x", [], None) is None


def test_bad_json_body_is_a_usage_error():
    method = job_service.CREATE_BATCH_PREDICTION_JOB
    with pytest.raises(errors.UsageError, match="invalid JSON body"):
        from_http(method, "POST", "/v1/projects/p/locations/l/batchPredictionJobs", [], b"{nope")


def test_get_and_set_field_convert_url_text():
    request = types.CreateReadSessionRequest()
    set_field(request, "read_session.table", "projects/p/datasets/d/tables/t")
    set_field(request, "readSession.dataFormat", "ARROW")
    set_field(request, "max_stream_count", "4")
    assert get_field(request, "read_session.table") == "projects/p/datasets/d/tables/t"
    assert request.read_session.data_format == types.DataFormat.ARROW and request.max_stream_count == 4
    wait = types.WaitOperationRequest()
    set_field(wait, "timeout", "1.5s")
    assert (wait.timeout.seconds, wait.timeout.nanos) == (1, 500_000_000)
    ops = types.ListOperationsRequest()
    set_field(ops, "returnPartialSuccess", "true")
    assert ops.return_partial_success is True
    for path, text in [("returnPartialSuccess", "yes"), ("page_size", "1.5"), ("page_size", str(2**40))]:
        with pytest.raises(errors.UsageError):
            set_field(ops, path, text)
