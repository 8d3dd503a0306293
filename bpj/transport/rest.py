"""The REST transport: proto3 JSON over HTTP/1.1, as Google's REST endpoints (and bpj's gateway) speak it.

Requests are transcoded by the method's ``google.api.http`` rules (:mod:`bpj.transport.http_rules`),
sent through one pooled ``requests`` session (google-auth's AuthorizedSession when credentials are
given), and errors come back from the google.rpc.Status JSON body as the same exceptions gRPC gives.
A server stream is one JSON array whose elements are parsed as they arrive.
"""

from __future__ import annotations

import codecs
import contextlib
import http.cookiejar
import json
import platform
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import requests

from bpj import errors
from bpj._version import __version__
from bpj.errors import Code
from bpj.transport import http_rules
from bpj.transport.base import Metadata, Method
from bpj.transport.endpoints import parse_endpoint
from bpj.transport.http_rules import ROUTING_KEY, HttpRequestParts, routing_params, to_http

if TYPE_CHECKING:
    from google.protobuf.message import Message

USER_AGENT = f"bpj/{__version__}"
_API_CLIENT = f"gl-python/{platform.python_version()} rest/{requests.__version__} bpj/{__version__}"
_DEADLINE_MESSAGE = "Deadline Exceeded"


class RestTransport:
    """Calls RPCs over HTTP/1.1 and JSON at ``endpoint``.

    ``endpoint`` is a URL (``https://us-central1-aiplatform.googleapis.com``, ``http://127.0.0.1:8080``)
    or a bare ``host[:port]``, which means https unless the host is a loopback address. ``credentials``
    (google-auth) sign every request; a ``session`` of your own is used as given and left open by
    :meth:`close`. ``root_certificates`` is a PEM file to trust instead of the system's roots (a local
    server's self-signed certificate). ``timeout_default`` (seconds) applies to calls made without a timeout. One connection
    pool serves every call, from any thread.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Any = None,
        session: requests.Session | None = None,
        timeout_default: float | None = None,
        user_agent: str = USER_AGENT,
        root_certificates: str | None = None,
    ) -> None:
        self.endpoint = base_url(endpoint)
        self.timeout_default = timeout_default
        self._owns_session = session is None
        if session is None:
            session = _new_session(credentials)
            if root_certificates is not None:
                session.verify = root_certificates
        self._session = session
        self._headers = {"user-agent": user_agent, "x-goog-api-client": _API_CLIENT}
        self.reached = False  # an HTTP response has come back from the endpoint (else: errors.Unreachable)

    def unary(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Message:
        parts = to_http(method, request)
        timeout = self.timeout_default if timeout is None else timeout
        deadline = _deadline(timeout)
        with self._errors_of(method, request, deadline):
            response = self._send(method, request, parts, timeout, metadata, stream=False)
            if not response.ok:
                raise _api_error(response.status_code, response.content, response.reason)
            message = method.response_class()
            _parse(response.content or b"{}", message, method)
            return message if method.decode is None else method.decode(message.SerializeToString())

    def server_stream(
        self, method: Method, request: Message, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> Iterator[Message]:
        parts = to_http(method, request)
        timeout = self.timeout_default if timeout is None else timeout
        return self._stream(method, request, parts, timeout, metadata)

    def _stream(
        self,
        method: Method,
        request: Message,
        parts: HttpRequestParts,
        timeout: float | None,
        metadata: Metadata,
    ) -> Iterator[Message]:
        deadline = _deadline(timeout)
        with self._errors_of(method, request, deadline):
            response = self._send(method, request, parts, timeout, metadata, stream=True)
            try:
                if not response.ok:
                    raise _api_error(response.status_code, response.content, response.reason)
                for element in json_array(response.iter_content(chunk_size=None)):
                    if deadline is not None and time.monotonic() > deadline:
                        raise errors.DeadlineExceeded(_DEADLINE_MESSAGE)
                    if isinstance(element, dict) and set(element) == {"error"}:
                        raise _status_error(element["error"], response.status_code)
                    message = method.response_class()
                    _parse(element, message, method)
                    yield message if method.decode is None else method.decode(message.SerializeToString())
            finally:
                response.close()

    def _send(
        self,
        method: Method,
        request: Message,
        parts: HttpRequestParts,
        timeout: float | None,
        metadata: Metadata,
        *,
        stream: bool,
    ) -> requests.Response:
        headers = dict(self._headers)
        for key, value in metadata:
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        params = routing_params(method, request)
        if params:
            headers[ROUTING_KEY] = params
        if parts.body is not None:
            headers["content-type"] = "application/json"
        if timeout is not None:
            if timeout <= 0:
                raise errors.DeadlineExceeded(_DEADLINE_MESSAGE)
            headers["x-server-timeout"] = f"{timeout:.3f}"
        response = self._session.request(
            parts.verb,
            self.endpoint + parts.path,
            params=parts.query,
            data=parts.body,
            headers=headers,
            timeout=timeout,
            stream=stream,
        )
        self.reached = True
        return response

    @contextlib.contextmanager
    def _errors_of(self, method: Method, request: Message, deadline: float | None) -> Iterator[None]:
        """Every failure of a call as an ApiError that names the RPC and the resource."""
        try:
            try:
                yield
            except requests.Timeout:
                raise errors.DeadlineExceeded(_DEADLINE_MESSAGE) from None
            except requests.ConnectionError as e:
                if (deadline is not None and time.monotonic() >= deadline) or "timed out" in str(e).lower():
                    raise errors.DeadlineExceeded(_DEADLINE_MESSAGE) from None
                err = errors.Unavailable(f"cannot reach {self.endpoint}: {_reason(e)}")
                raise (err if self.reached else errors.Unreachable.of(err, self.endpoint)) from None
            except requests.RequestException as e:
                raise errors.Unavailable(f"connection to {self.endpoint} broken: {_reason(e)}") from None
        except errors.ApiError as e:
            raise http_rules.with_context(e, method, request) from None

    def close(self) -> None:
        """Close the connection pool (unless the session was given by the caller)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> RestTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RestTransport({self.endpoint!r})"


def base_url(endpoint: str) -> str:
    """``scheme://host[:port]`` for an endpoint; a bare host is https unless it is a loopback address."""
    scheme, sep, _ = endpoint.strip().partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise errors.UsageError(f"REST endpoint {endpoint!r} must be http:// or https://")
    parsed = parse_endpoint(endpoint)
    scheme = "https" if parsed.tls() else "http"
    return f"{scheme}://{parsed.target()}"


def json_array(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The elements of one JSON array read from ``chunks`` of bytes, each as soon as it is complete."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, state, waiting = "", "start", False
    for chunk in chunks:
        new = utf8.decode(chunk)
        buf += new
        # An element is an object: it cannot be complete before a '}' arrives.
        if waiting and "}" not in new and "]" not in new:
            continue
        pos, waiting = 0, False
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos == len(buf):
                break
            c = buf[pos]
            if state == "start":
                if c != "[":
                    raise errors.Internal(f"a stream must be a JSON array, got {buf[pos : pos + 40]!r}")
                pos, state = pos + 1, "first"
            elif c == "]" and state != "done":
                pos, state = pos + 1, "done"
            elif state == "done":
                raise errors.Internal(f"unexpected data after the stream's end: {buf[pos : pos + 40]!r}")
            elif state == "next":
                if c != ",":
                    raise errors.Internal(
                        f"expected ',' between stream messages, got {buf[pos : pos + 40]!r}"
                    )
                pos, state = pos + 1, "item"
            else:
                try:
                    element, pos = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    waiting = True
                    break
                state = "next"
                yield element
        buf = buf[pos:]
    if state != "done":
        raise errors.Unavailable("the stream ended before its last message")


def _new_session(credentials: Any) -> requests.Session:
    from requests.adapters import HTTPAdapter

    if credentials is not None:
        from google.auth.transport.requests import AuthorizedSession

        session: requests.Session = AuthorizedSession(credentials)
    else:
        session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Calls share the session from many threads; a cookie jar would be shared state nobody needs.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _parse(data: bytes | dict[str, Any], message: Any, method: Method) -> None:
    from google.protobuf import json_format

    pool = message.DESCRIPTOR.file.pool
    try:
        if isinstance(data, dict):
            json_format.ParseDict(data, message, ignore_unknown_fields=True, descriptor_pool=pool)
        else:
            json_format.Parse(data, message, ignore_unknown_fields=True, descriptor_pool=pool)
    except (json_format.ParseError, ValueError) as e:
        raise errors.Internal(f"cannot read the {method.response_type} in the response: {e}") from None


def _api_error(http_status: int, body: bytes, reason: str | None) -> errors.ApiError:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return _status_error(payload["error"], http_status)
    text = body.decode("utf-8", "replace").strip()[:1000] or reason or f"HTTP {http_status}"
    return errors.from_status(Code.from_http(http_status), text)


def _status_error(error: dict[str, Any], http_status: int) -> errors.ApiError:
    name, number = error.get("status"), error.get("code")
    if isinstance(name, str) and name in Code.__members__:
        code = Code[name]
    elif isinstance(number, int) and not 200 <= http_status < 300:
        code = Code.from_http(http_status)
    elif isinstance(number, int):
        code = Code.from_http(number)
    else:
        code = Code.from_http(http_status)
    details = error.get("details")
    details = [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    return errors.from_status(code, str(error.get("message", "")), details)


def _reason(e: Exception) -> str:
    text = str(e)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    for known in (
        "Connection refused",
        "Connection reset by peer",
        "Connection aborted",
        "Remote end closed",
    ):
        if known.lower() in text.lower():
            return known
    return text[:300]
