"""What the local stack's GCS guard lets through to fake-gcs-server, and in which form.

fake-gcs-server's filesystem backend joins object names under its root as they come, so a name with ``..``
segments writes anywhere on the host. The guard (bpj/local/gcs_guard.py) therefore forwards only the Cloud
Storage JSON API routes listed below, and only after reading every bucket and object name the engine would
use from the request (path, ``name`` query parameter, JSON metadata, multipart metadata) and checking it
with :mod:`bpj.gcs_uri`'s rules. What it forwards is rebuilt from what it checked: the path from the
decoded names, each percent-encoded whole (a ``/`` in a name becomes ``%2F``, so the engine's router splits
it exactly as the guard did), the query from the decoded parameters (a repeated parameter is refused, as
the two parsers could pick different ones), JSON bodies re-serialized, multipart bodies re-assembled. Any
disagreement between this parser and the engine's ends in a refusal here, never in a different reading
there.

Served (``{b}`` a bucket, ``{o}`` an object name):

    GET POST            /storage/v1/b                                     list, create (body: name)
    GET PATCH DELETE    /storage/v1/b/{b}
    GET                 /storage/v1/b/{b}/o                               list objects
    GET HEAD PATCH PUT POST DELETE   /storage/v1/b/{b}/o/{o}              metadata, ``alt=media`` download
    POST                /storage/v1/b/{b}/o/{o}/copyTo|rewriteTo/b/{b}/o/{o}
    POST                /storage/v1/b/{b}/o/{o}/compose                   (body: sourceObjects[].name)
    GET HEAD            /download/storage/v1/b/{b}/o/{o}
    POST PUT DELETE     /upload/storage/v1/b/{b}/o                        media, multipart, resumable uploads
    PUT POST            /upload/resumable/{upload id}

Not served: the XML API, batch requests, ACL and notification routes, and the engine's ``/_internal/``
routes (reseed, delete_all, config).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass

from bpj import gcs_uri

__all__ = ["MAX_METADATA_BYTES", "MAX_MULTIPART_BYTES", "Refused", "Route", "canonical_body", "route"]

MAX_METADATA_BYTES = 1 << 20
MAX_MULTIPART_BYTES = 64 << 20

_SEG = r"[^/]+"
_ROUTES: tuple[tuple[str, re.Pattern[str], frozenset[str]], ...] = tuple(
    (name, re.compile(pattern), frozenset(methods.split()))
    for name, pattern, methods in (
        ("buckets", r"/storage/v1/b/?", "GET POST"),
        ("bucket", rf"/storage/v1/b/(?P<b>{_SEG})", "GET PATCH DELETE"),
        ("objects", rf"/storage/v1/b/(?P<b>{_SEG})/o/?", "GET"),
        (
            "copy",
            rf"/storage/v1/b/(?P<b>{_SEG})/o/(?P<o>.+)/(?P<verb>rewriteTo|copyTo)/b/(?P<b2>{_SEG})/o/(?P<o2>.+)",
            "POST",
        ),
        ("compose", rf"/storage/v1/b/(?P<b>{_SEG})/o/(?P<o>.+)/compose", "POST"),
        ("object", rf"/storage/v1/b/(?P<b>{_SEG})/o/(?P<o>.+)", "GET HEAD PATCH PUT POST DELETE"),
        ("download", rf"/download/storage/v1/b/(?P<b>{_SEG})/o/(?P<o>.+)", "GET HEAD"),
        ("upload", rf"/upload/storage/v1/b/(?P<b>{_SEG})/o/?", "POST PUT DELETE"),
        ("resumable", r"/upload/resumable/(?P<id>[A-Za-z0-9_-]{1,200})", "PUT POST"),
    )
)
# Keys a JSON body may name a bucket or an object with. Go's encoding/json matches keys case-insensitively,
# with Unicode folding ('ſ' is 's', 'K' is 'k'): compare casefolded.
_NAME_KEYS = {"name": "object", "bucket": "bucket"}


class Refused(Exception):
    """A request the guard does not forward: ``status`` and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Route:
    """A request the guard forwards: its kind, the rebuilt target (path and query), and what its body is.

    ``body``: ``"stream"`` (passed through as it comes), ``"json"`` (read whole, checked, re-serialized by
    :func:`canonical_body`), ``"multipart"`` (read whole, metadata checked, re-assembled), or ``"none"``.
    """

    kind: str
    target: str
    body: str
    names_are: str = "object"  # what a JSON body's "name" is on this route: "object" or "bucket"
    # (bucket, object, generation or "") of a plain download (GET, alt=media, no other parameter but
    # generation): the guard may serve it from the engine's files itself (bpj/local/gcs_media.py).
    media: tuple[str, str, str] | None = None


def _unquote(raw: str, what: str) -> str:
    try:
        return urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, f"the {what} in the path is not percent-encoded UTF-8") from None


def _check_bucket(name: str) -> None:
    problem = gcs_uri.bucket_problem(name)
    if problem is not None:
        raise Refused(400, f"invalid bucket name {name!r}: {problem}")


def _check_object(name: str) -> None:
    problem = gcs_uri.object_problem(name)
    if problem is not None:
        raise Refused(400, f"invalid object name {name!r}: {problem}")


def _query(raw: str) -> list[tuple[str, str]]:
    if not raw:
        return []
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        try:
            key = urllib.parse.unquote_plus(key, errors="strict")
            value = urllib.parse.unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            raise Refused(400, "the query string is not percent-encoded UTF-8") from None
        if "\x00" in key or "\x00" in value:
            raise Refused(400, "the query string contains NUL")
        pairs.append((key, value))
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise Refused(400, f"query parameter {repeated[0]!r} is given more than once")
    if any(k.lower().startswith("x-goog-") for k in keys):
        raise Refused(400, "signed-URL query parameters (X-Goog-*) are not served by the local stack")
    return pairs


def route(method: str, raw_target: str, *, content_type: str = "") -> Route:
    """The route of ``method raw_target`` with its names checked, or :class:`Refused` saying why not.
    ``content_type`` (the request's) decides, as it does for the engine, whether an upload's body is read
    as metadata."""
    if not raw_target.startswith("/"):
        raise Refused(400, "the request target must be a path (origin form), not a URL")
    raw_path, _, raw_query = raw_target.partition("?")
    raw_path = raw_path.split("#", 1)[0]
    query = _query(raw_query)
    params = dict(query)
    for kind, pattern, methods in _ROUTES:
        m = pattern.fullmatch(raw_path)
        if m is None:
            continue
        if method not in methods:
            raise Refused(405, f"{method} is not served on {kind} routes (use {', '.join(sorted(methods))})")
        names = {k: _unquote(v, "name") for k, v in m.groupdict().items() if v is not None}
        for key in ("b", "b2"):
            if key in names:
                _check_bucket(names[key])
        for key in ("o", "o2"):
            if key in names:
                _check_object(names[key])
        if "name" in params:
            _check_object(params["name"])
        path = _rebuild(kind, names)
        target = path + ("?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote) if query else "")
        media = None
        plain_download = params.get("alt") == "media" and set(params) <= {"alt", "generation"}
        if method == "GET" and kind in ("object", "download") and plain_download:
            media = (names["b"], names["o"], params.get("generation", ""))
        names_are = "bucket" if kind == "buckets" else "object"
        return Route(kind, target, _body_kind(kind, method, params, content_type), names_are, media)
    raise Refused(
        404,
        f"the local stack's GCS does not serve {method} {raw_path[:200]}: it serves the Cloud Storage JSON "
        "API (/storage/v1, /upload/storage/v1, /download/storage/v1)",
    )


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


_TARGETS = {
    "buckets": "/storage/v1/b",
    "bucket": "/storage/v1/b/{b}",
    "objects": "/storage/v1/b/{b}/o",
    "copy": "/storage/v1/b/{b}/o/{o}/{verb}/b/{b2}/o/{o2}",
    "compose": "/storage/v1/b/{b}/o/{o}/compose",
    "object": "/storage/v1/b/{b}/o/{o}",
    "download": "/download/storage/v1/b/{b}/o/{o}",
    "upload": "/upload/storage/v1/b/{b}/o",
    "resumable": "/upload/resumable/{id}",
}


def _rebuild(kind: str, names: dict[str, str]) -> str:
    """The canonical path of a route: every name percent-encoded whole (a '/' in it becomes %2F)."""
    return _TARGETS[kind].format(**{k: _q(v) for k, v in names.items()})


def _body_kind(kind: str, method: str, params: dict[str, str], content_type: str) -> str:
    if method in ("GET", "HEAD", "DELETE"):
        return "none"
    if kind == "resumable" or (kind == "upload" and method == "PUT"):
        return "stream"  # a resumable session's bytes: the name was checked when the session began
    if kind != "upload":
        return "json"
    # A POST upload: the engine picks its handler by uploadType (never by upload_id), so the guard does too.
    upload_type = params.get("uploadType", "")
    if upload_type == "media":
        if "name" not in params:
            raise Refused(400, "a media upload needs the object's name in the 'name' query parameter")
        return "stream"
    if upload_type == "multipart":
        return "multipart"
    if upload_type == "resumable":
        # With upload_id and no JSON content type the engine takes the body as the session's bytes; under a
        # JSON content type it reads the body as metadata (a bucket and a name), whatever else is there.
        if "upload_id" in params and "json" not in content_type.lower():
            return "stream"
        return "json"
    raise Refused(400, f"uploadType must be media, multipart or resumable, not {upload_type!r}")


# -- bodies -----------------------------------------------------------------------------------------------


def _check_json_names(value: object, names_are: str, depth: int = 0) -> None:
    if depth > 32:
        raise Refused(400, "the JSON body is nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            role = _NAME_KEYS.get(key.casefold()) if isinstance(key, str) else None
            if role is not None:
                if not isinstance(item, str):
                    raise Refused(400, f"{key!r} in the JSON body must be a string")
                if role == "bucket" or names_are == "bucket":
                    _check_bucket(item)
                else:
                    _check_object(item)
            else:
                _check_json_names(item, "object", depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_names(item, names_are, depth + 1)


def _json_metadata(data: bytes, names_are: str) -> bytes:
    if not data.strip():
        return b""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(400, "the request body is not valid JSON") from None
    _check_json_names(value, names_are)
    return json.dumps(value, separators=(",", ":")).encode()


def canonical_body(route: Route, content_type: str, data: bytes) -> tuple[bytes, str]:
    """The body to forward for a ``json`` or ``multipart`` route, and its Content-Type; :class:`Refused`
    when a name in it breaks the rules or the body cannot be read the one way the engine must read it."""
    if route.body == "json":
        # Whatever the Content-Type says, a body here is read as JSON metadata (the engine reads some of
        # them as JSON under any type): a body that is not JSON is refused rather than passed on unread.
        body = _json_metadata(data, route.names_are)
        return body, "application/json; charset=UTF-8" if body else content_type
    if route.body == "multipart":
        return _multipart(content_type, data)
    raise AssertionError(route.body)


_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)


def _multipart(content_type: str, data: bytes) -> tuple[bytes, str]:
    if not content_type.lower().startswith("multipart/related"):
        raise Refused(400, "a multipart upload needs Content-Type multipart/related with a boundary")
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise Refused(400, "the multipart Content-Type has no boundary")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    chunks = data.split(delimiter)
    # chunks: preamble, part 1, part 2, "--" epilogue
    if len(chunks) != 4 or not chunks[3].startswith(b"--"):
        raise Refused(400, "a multipart upload must have exactly two parts: JSON metadata, then the data")
    parts = []
    for chunk in chunks[1:3]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise Refused(400, "multipart parts must be delimited by CRLF")
        part = chunk[2:-2]
        if part.startswith(b"\r\n"):  # no headers
            head, body = b"", part[2:]
        else:
            head, sep, body = part.partition(b"\r\n\r\n")
            if not sep:
                raise Refused(400, "a multipart part has no blank line after its headers")
        headers = {}
        for line in head.split(b"\r\n") if head else ():
            key, colon, value = line.partition(b":")
            if not colon:
                raise Refused(400, "a multipart part has a malformed header line")
            headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        parts.append((headers.get("content-type", ""), body))
    metadata = _json_metadata(parts[0][1], "object")
    boundary = "bpj-guard-boundary-7f0c2a"
    while boundary.encode() in parts[1][1] or boundary.encode() in metadata:
        boundary += "x"
    b = boundary.encode()
    out = b"".join(
        (
            b"--" + b + b"\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + metadata + b"\r\n",
            b"--" + b + b"\r\nContent-Type: " + (parts[1][0] or "application/octet-stream").encode("latin-1"),
            b"\r\n\r\n" + parts[1][1] + b"\r\n--" + b + b"--\r\n",
        )
    )
    return out, f"multipart/related; boundary={boundary}"
