"""``google.api.http`` transcoding, both ways: a request message to an HTTP request and back.

One rule serves every RPC: the URI template of a :class:`~bpj.transport.base.HttpRule` names the fields
that go into the path, ``body`` names what goes into the JSON body ("*" for the whole message), and every
other field goes into the query string under its proto3 JSON name, nested messages flattened with dots.
The grammar (from google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Percent-encoding follows the same file: a variable of one segment (``{name}``, ``{name=*}``) is encoded
entirely except ``[-_.~0-9a-zA-Z]``, a variable of several segments keeps its ``/``; on the server side
the reverse, except that ``%2F`` inside a multi-segment variable stays as it is.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote, urlencode

from bpj import errors
from bpj.errors import UsageError
from bpj.transport.base import HttpRule, Method

if TYPE_CHECKING:
    from google.protobuf.message import Message

_IDENT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[^/{}=:*]+")
_SEGMENT_RE = {"*": "[^/]+", "**": "[^/]+(?:/[^/]+)*"}
_WKT_STRINGS = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
_WRAPPERS = {
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}


@dataclass(frozen=True)
class PathVariable:
    """``{field_path=pattern}`` in a URI template; ``segments`` are literals, ``*`` or ``**``."""

    field_path: str
    segments: tuple[str, ...] = ("*",)

    @property
    def pattern(self) -> str:
        return "/".join(self.segments)

    @property
    def multi_segment(self) -> bool:
        return len(self.segments) > 1 or self.segments[0] == "**"

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        # A single-segment variable may hold anything: its '/' are percent-encoded in the path.
        if not self.multi_segment and self.segments[0] == "*":
            return re.compile(r".+", re.DOTALL)
        return re.compile(_segments_regex(self.segments), re.DOTALL)

    def render(self) -> str:
        return (
            f"{{{self.field_path}}}" if self.segments == ("*",) else f"{{{self.field_path}={self.pattern}}}"
        )


@dataclass(frozen=True)
class CompiledRule:
    """A parsed :class:`HttpRule`: expands a request into a path and matches a path back into values."""

    rule: HttpRule
    parts: tuple[str | PathVariable, ...]
    verb: str
    regex: re.Pattern[str]

    @property
    def variables(self) -> tuple[PathVariable, ...]:
        return tuple(p for p in self.parts if isinstance(p, PathVariable))

    def render(self) -> str:
        """The URI template, written back from its parsed form."""
        text = "".join("/" + (p.render() if isinstance(p, PathVariable) else p) for p in self.parts)
        return text + (f":{self.verb}" if self.verb else "")

    def misfit(self, request: Any) -> tuple[PathVariable, str] | None:
        """The first variable that ``request`` leaves empty or fills with a value off its pattern."""
        for var in self.variables:
            value = get_field(request, var.field_path)
            text = "" if value is None else str(value)
            if not text or not var.regex.fullmatch(text):
                return var, text
        return None

    def expand(self, request: Any) -> str:
        """The URL path for ``request``; :class:`UsageError` when a path field is empty or malformed."""
        misfit = self.misfit(request)
        if misfit is not None:
            raise UsageError(_misfit_message(misfit[0].field_path, [misfit[0].pattern], misfit[1]))
        out = []
        for part in self.parts:
            if isinstance(part, PathVariable):
                value = str(get_field(request, part.field_path))
                out.append(quote(value, safe="/" if part.multi_segment else ""))
            elif part in _SEGMENT_RE:
                raise UsageError(f"{self.rule.template}: an unnamed wildcard cannot be expanded")
            else:
                out.append(part)
        return "/" + "/".join(out) + (f":{self.verb}" if self.verb else "")

    def match(self, path: str) -> dict[str, str] | None:
        """The decoded value of each variable (by field path) when the raw URL ``path`` fits, else None."""
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        values = {}
        for i, var in enumerate(self.variables):
            raw = m.group(f"v{i}")
            values[var.field_path] = _decode_multi(raw) if var.multi_segment else unquote(raw)
        return values


@functools.lru_cache(maxsize=512)
def compile_rule(rule: HttpRule) -> CompiledRule:
    """Parse the URI template of ``rule``; :class:`UsageError` when it does not follow the grammar."""
    template = rule.template
    m = re.fullmatch(r"(/.*?)(?::([^/{}:]+))?", template, re.DOTALL)
    if m is None:
        raise UsageError(f"URI template {template!r} must start with '/'")
    body, verb = m.group(1), m.group(2) or ""
    parts: list[str | PathVariable] = []
    pos = 0
    while pos < len(body):
        if body[pos] != "/":
            raise UsageError(f"URI template {template!r}: expected '/' at {pos}")
        pos += 1
        if body.startswith("{", pos):
            end = body.find("}", pos)
            if end < 0:
                raise UsageError(f"URI template {template!r}: unclosed '{{'")
            parts.append(_parse_variable(template, body[pos + 1 : end]))
            pos = end + 1
        else:
            end = body.find("/", pos)
            end = len(body) if end < 0 else end
            parts.append(_parse_segment(template, body[pos:end]))
            pos = end
    if not parts:
        raise UsageError(f"URI template {template!r} has no segment")
    regex, n = "", 0
    for part in parts:
        if isinstance(part, PathVariable):
            regex += f"/(?P<v{n}>{_segments_regex(part.segments)})"
            n += 1
        else:
            regex += "/" + _segments_regex((part,))
    regex += re.escape(f":{verb}") if verb else ""
    return CompiledRule(rule, tuple(parts), verb, re.compile(regex, re.DOTALL))


def _parse_variable(template: str, text: str) -> PathVariable:
    field_path, eq, pattern = text.partition("=")
    if not _IDENT_PATH.fullmatch(field_path):
        raise UsageError(f"URI template {template!r}: {field_path!r} is not a field path")
    if not eq:
        return PathVariable(field_path)
    segments = tuple(_parse_segment(template, s) for s in pattern.split("/"))
    return PathVariable(field_path, segments)


def _parse_segment(template: str, text: str) -> str:
    if text in _SEGMENT_RE or _LITERAL.fullmatch(text):
        return text
    raise UsageError(f"URI template {template!r}: bad segment {text!r}")


def _segments_regex(segments: tuple[str, ...]) -> str:
    return "/".join(_SEGMENT_RE.get(s) or re.escape(s) for s in segments)


def _decode_multi(raw: str) -> str:
    pieces = re.split(r"(%2[fF])", raw)
    return "".join(p if i % 2 else unquote(p) for i, p in enumerate(pieces))


# -- fields by dotted path ----------------------------------------------------------------------------


def get_field(message: Any, dotted_path: str) -> Any:
    """The value at ``dotted_path`` (proto field names, e.g. ``read_session.table``)."""
    value = message
    for name in dotted_path.split("."):
        value = getattr(value, name)
    return value


def set_field(message: Any, dotted_path: str, value: str) -> None:
    """Set the field at ``dotted_path`` (proto or JSON names) from its URL text; repeated fields append.

    Text converts to the field's type as in proto3 JSON: numbers, ``true``/``false``, enum names or
    numbers, base64 for bytes, and the string forms of Timestamp, Duration, FieldMask and the wrappers.
    """
    *parents, last = dotted_path.split(".")
    target = message
    for name in parents:
        fd = _field(target.DESCRIPTOR, name, dotted_path)
        if fd.message_type is None or is_repeated(fd):
            raise UsageError(f"{dotted_path}: {name} is not a singular message field")
        target = getattr(target, fd.name)
    fd = _field(target.DESCRIPTOR, last, dotted_path)
    if fd.message_type is not None:
        if fd.message_type.GetOptions().map_entry:
            raise UsageError(f"{dotted_path}: a map field cannot be set from a URL")
        sub = getattr(target, fd.name).add() if is_repeated(fd) else getattr(target, fd.name)
        _set_wkt(sub, value, dotted_path)
        return
    converted = _scalar(fd, value, dotted_path)
    try:
        if is_repeated(fd):
            getattr(target, fd.name).append(converted)
        else:
            setattr(target, fd.name, converted)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{dotted_path}: {value!r} does not fit: {e}") from None


def _field(descriptor: Any, name: str, dotted_path: str) -> Any:
    fd = descriptor.fields_by_name.get(name) or _json_names(descriptor).get(name)
    if fd is None:
        raise UsageError(f"{descriptor.full_name} has no field {name!r} (in {dotted_path!r})")
    return fd


@functools.lru_cache(maxsize=1024)
def _json_names(descriptor: Any) -> dict[str, Any]:
    return {f.json_name: f for f in descriptor.fields}


def is_repeated(fd: Any) -> bool:
    """Whether a field is repeated, on protobuf 5, 6 and 7."""
    repeated = getattr(fd, "is_repeated", None)  # protobuf >= 6; `label` is gone in 7
    return bool(repeated) if repeated is not None else fd.label == fd.LABEL_REPEATED


def _set_wkt(sub: Any, value: str, dotted_path: str) -> None:
    from google.protobuf import json_format

    name = sub.DESCRIPTOR.full_name
    if name in _WRAPPERS:
        inner = sub.DESCRIPTOR.fields_by_name["value"]
        sub.value = _scalar(inner, value, dotted_path)
    elif name == "google.protobuf.FieldMask":
        # JSON spells paths in camelCase; snake_case paths are accepted too, as Google's endpoints do.
        sub.paths.extend(_snake_case(p) for p in value.split(",") if p)
    elif name in _WKT_STRINGS:
        try:
            json_format.Parse(json.dumps(value), sub)
        except json_format.ParseError as e:
            raise UsageError(f"{dotted_path}: {value!r} is not a valid {name}: {e}") from None
    else:
        raise UsageError(f"{dotted_path}: a {name} cannot be set from a URL; name one of its fields")
    sub.SetInParent()


def _snake_case(path: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), path)


def _scalar(fd: Any, text: str, dotted_path: str) -> Any:
    from google.protobuf.descriptor import FieldDescriptor as F

    try:
        if fd.type == F.TYPE_STRING:
            return text
        if fd.type == F.TYPE_BYTES:
            padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
            return base64.b64decode(padded, validate=True)
        if fd.type == F.TYPE_BOOL:
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError("expected true or false")
        if fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
            return float(text)
        if fd.type == F.TYPE_ENUM:
            number = fd.enum_type.values_by_name.get(text)
            return number.number if number is not None else int(text)
        return int(text)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{dotted_path}: cannot read {text!r} as a {_type_name(fd)} ({e})") from None


def _type_name(fd: Any) -> str:
    if fd.enum_type is not None:
        return f"{fd.enum_type.full_name} name"
    from google.protobuf.descriptor import FieldDescriptor as F

    names = {v: k.removeprefix("TYPE_").lower() for k, v in vars(F).items() if k.startswith("TYPE_")}
    return names.get(fd.type, "value")


# -- transcoding ---------------------------------------------------------------------------------------


class HttpRequestParts(NamedTuple):
    """An HTTP request, before it meets an endpoint: ``verb`` in capitals, ``path`` percent-encoded."""

    verb: str
    path: str
    query: list[tuple[str, str]]
    body: bytes | None


def to_http(method: Method, request: Any) -> HttpRequestParts:
    """Transcode ``request`` with the first binding of ``method`` whose path fields it fills.

    Raises :class:`UsageError` naming the field when no binding fits, before anything is sent.
    """
    if not method.http:
        raise UsageError(f"{method.name} has no HTTP binding; call it over gRPC")
    misfits: dict[tuple[str, str], list[str]] = {}
    for rule in method.http:
        compiled = compile_rule(rule)
        misfit = compiled.misfit(request)
        if misfit is None:
            return _transcode(compiled, request)
        var, value = misfit
        misfits.setdefault((var.field_path, value), []).append(var.pattern)
    text = "; or ".join(_misfit_message(f, patterns, value) for (f, value), patterns in misfits.items())
    raise UsageError(f"{method.name}: {text}")


def _misfit_message(field_path: str, patterns: list[str], value: str) -> str:
    expected = " or ".join(dict.fromkeys(patterns))
    if not value:
        return f"{field_path} is empty; it must match {expected}"
    return f"{field_path} must match {expected}, got {value!r}"


def _transcode(compiled: CompiledRule, request: Any) -> HttpRequestParts:
    from google.protobuf import json_format

    rule = compiled.rule
    path = compiled.expand(request)
    data = json_format.MessageToDict(
        request, preserving_proto_field_name=False, descriptor_pool=request.DESCRIPTOR.file.pool
    )
    for var in compiled.variables:
        _pop_path(data, _json_path(request.DESCRIPTOR, var.field_path))
    body: bytes | None = None
    if rule.body == "*":
        return HttpRequestParts(rule.verb.upper(), path, [], json.dumps(data).encode())
    if rule.body:
        key = _field(request.DESCRIPTOR, rule.body, rule.body).json_name
        if key in data:
            body = json.dumps(data.pop(key)).encode()
    query: list[tuple[str, str]] = []
    _flatten(data, "", query)
    return HttpRequestParts(rule.verb.upper(), path, query, body)


def _json_path(descriptor: Any, dotted_path: str) -> list[str]:
    keys = []
    for name in dotted_path.split("."):
        fd = _field(descriptor, name, dotted_path)
        keys.append(fd.json_name)
        descriptor = fd.message_type
    return keys


def _pop_path(data: dict[str, Any], keys: list[str]) -> None:
    for key in keys[:-1]:
        data = data.get(key, {})
        if not isinstance(data, dict):
            return
    data.pop(keys[-1], None)


def _flatten(value: Any, key: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{key}.{k}" if key else k, out)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)):
                raise UsageError(f"{key} holds messages, which a URL query string cannot carry")
            _flatten(v, key, out)
    elif isinstance(value, bool):
        out.append((key, "true" if value else "false"))
    else:
        out.append((key, str(value)))


def from_http(
    method: Method, verb: str, path: str, query: list[tuple[str, str]], body: bytes | None
) -> Any | None:
    """The request an HTTP request carries for ``method``, or None when no binding of it matches.

    ``path`` is the raw (still percent-encoded) URL path; ``query`` holds decoded pairs whose keys may
    be JSON (camelCase) or proto (snake_case) names. Bad JSON or values raise :class:`UsageError`.
    """
    for rule in method.http:
        if rule.verb.lower() != verb.lower():
            continue
        compiled = compile_rule(rule)
        values = compiled.match(path)
        if values is not None:
            return _request(method, compiled, values, query, body)
    return None


def _request(
    method: Method,
    compiled: CompiledRule,
    values: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes | None,
) -> Any:
    from google.protobuf import json_format

    request = method.request_class()
    pool: Any = request.DESCRIPTOR.file.pool
    target = compiled.rule.body
    try:
        text = (body or b"").decode("utf-8")
        if target and text.strip():
            if target == "*":
                json_format.Parse(text, request, descriptor_pool=pool)
            else:
                key = _field(request.DESCRIPTOR, target, target).json_name
                json_format.ParseDict({key: json.loads(text)}, request, descriptor_pool=pool)
    except (UnicodeDecodeError, json.JSONDecodeError, json_format.ParseError) as e:
        raise UsageError(f"{method.name}: invalid JSON body: {e}") from None
    for field_path, value in values.items():
        set_field(request, field_path, value)
    for key, value in query:
        set_field(request, key, value)
    return request


ROUTING_KEY = "x-goog-request-params"  # the metadata key / HTTP header that carries routing_params


def routing_params(method: Method, request: Any) -> str:
    """The ``x-goog-request-params`` value Google's front ends route on: the path fields of the first
    binding the request fits, url-encoded (``name=projects/p/locations/l/batchPredictionJobs/1``)."""
    for rule in method.http:
        compiled = compile_rule(rule)
        if compiled.misfit(request) is None:
            pairs = [(v.field_path, str(get_field(request, v.field_path))) for v in compiled.variables]
            return urlencode(pairs, safe="/")  # as google-api-core encodes it
    return ""


# -- naming the resource of a failed call ------------------------------------------------------------


def resource_of(method: Method, request: Message) -> str:
    """The resource a request is about: the value of the first variable of its primary HTTP rule."""
    if not method.http:
        return ""
    for var in compile_rule(method.http[0]).variables:
        value = get_field(request, var.field_path)
        if value:
            return str(value)
    return ""


def with_context(err: errors.ApiError, method: Method, request: Message) -> errors.ApiError:
    """Fill in the RPC and resource of an error raised without them (e.g. by an in-process servicer)."""
    if not err.rpc:
        err.rpc = method.rpc_name
    if not err.resource:
        err.resource = resource_of(method, request)
    return err
