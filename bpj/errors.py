"""One exception tree for every transport.

    BpjError                                                    also google.api_core.exceptions.*
    ├── UsageError (also ValueError)   bad input, raised before any network call; says what to change
    │   └── UsageTypeError (also TypeError)  a value of the wrong type
    └── ApiError                       the server, or the path to it, answered with a google.rpc.Status
        ├── Cancelled                  CANCELLED            HTTP 499    Cancelled
        ├── Unknown                    UNKNOWN              HTTP 500    Unknown
        ├── InvalidArgument            INVALID_ARGUMENT     HTTP 400    InvalidArgument
        ├── DeadlineExceeded           DEADLINE_EXCEEDED    HTTP 504    DeadlineExceeded
        ├── NotFound                   NOT_FOUND            HTTP 404    NotFound
        ├── AlreadyExists              ALREADY_EXISTS       HTTP 409    AlreadyExists
        ├── PermissionDenied           PERMISSION_DENIED    HTTP 403    PermissionDenied
        ├── ResourceExhausted          RESOURCE_EXHAUSTED   HTTP 429    ResourceExhausted
        ├── FailedPrecondition         FAILED_PRECONDITION  HTTP 400    FailedPrecondition
        ├── Aborted                    ABORTED              HTTP 409    Aborted
        ├── OutOfRange                 OUT_OF_RANGE         HTTP 400    OutOfRange
        ├── Unimplemented              UNIMPLEMENTED        HTTP 501    MethodNotImplemented
        ├── Internal                   INTERNAL             HTTP 500    InternalServerError
        ├── Unavailable                UNAVAILABLE          HTTP 503    ServiceUnavailable
        │   └── Unreachable            no connection to an endpoint this client never reached
        ├── DataLoss                   DATA_LOSS            HTTP 500    DataLoss
        │   └── DataCorruption         bytes that fail their crc32c (downloaded, or stored by an upload)
        └── Unauthenticated            UNAUTHENTICATED      HTTP 401    Unauthenticated

The same server error gives the same class and the same message over gRPC, REST and in-memory. Every
ApiError names the RPC, the resource the request was about, and the server's message.

Code written for the official SDK catches ``google.api_core.exceptions.NotFound`` (etc.); those catch bpj's
errors too. ``except`` matches by the classes' real MRO, and code that names an api_core class has imported
``google.api_core.exceptions`` first. So bpj never imports it: whenever an ApiError is created (and when this
module loads) bpj looks whether that module is in ``sys.modules``, and the first time it is, each class of the
table above gets the api_core class of its code as a second base (``NotFound.__bases__`` becomes
``(ApiError, google.api_core.exceptions.NotFound)``; subclasses follow). The classes stay the same objects:
``type(err) is bpj.errors.NotFound``, pickling and ``except bpj.errors.X`` are unchanged, and api_core's own
tables (``from_http_status``...) are not touched. Before api_core is imported nobody can catch by its
classes, so nothing is loaded.

Where both families have an attribute, bpj's meaning stays, whichever was imported first:

- ``code`` is the gRPC code as a :class:`Code` (``err.code == Code.NOT_FOUND``, equal to 5), not api_core's
  HTTP status: read ``http_status`` (404) for that, and ``grpc_status_code`` for a ``grpc.StatusCode``.
- ``message`` is the server's words; ``str(err)`` is bpj's ``NOT_FOUND from RPC on resource: message``.
- ``details`` are the status details in proto3 JSON form (dicts with ``@type``), as the official REST
  transport gives them (its gRPC transport gives protobuf messages).
- ``reason``, ``domain`` and ``metadata`` come from a google.rpc.ErrorInfo detail (None without one), as in
  api_core; ``errors`` is empty and ``response`` None (bpj keeps no raw HTTP response or gRPC call).
"""

from __future__ import annotations

import base64
import enum
import sys
from collections.abc import Sequence
from typing import Any, cast


class Code(enum.IntEnum):
    """The canonical status codes of google.rpc.Code (numbers equal gRPC's)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_OF_CODE[self]

    @classmethod
    def of(cls, value: object) -> Code:
        """A Code from an int, a name, a Code or a ``grpc.StatusCode`` (whose value is ``(int, str)``)."""
        if isinstance(value, Code):
            return value
        if isinstance(value, str):
            return cls[value]
        if isinstance(value, int):
            return cls(value)
        inner = getattr(value, "value", None)
        if isinstance(inner, tuple) and inner and isinstance(inner[0], int):
            return cls(inner[0])
        raise TypeError(f"not a status code: {value!r}")

    @classmethod
    def from_http(cls, status: int) -> Code:
        """The code for an HTTP status when the body carries none (google.rpc.Code's mapping)."""
        if status in _CODE_OF_HTTP:
            return _CODE_OF_HTTP[status]
        if 200 <= status < 300:
            return cls.OK
        if 400 <= status < 500:
            return cls.FAILED_PRECONDITION
        return cls.UNKNOWN


_HTTP_OF_CODE = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
_CODE_OF_HTTP = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    416: Code.OUT_OF_RANGE,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


class BpjError(Exception):
    """Base of every error bpj raises on purpose."""


class UsageError(BpjError, ValueError):
    """Bad input, found before any network call. The message says which field and what to change."""


class UsageTypeError(UsageError, TypeError):
    """An argument of the wrong type (a TypeError too, as the official SDK raises for one)."""


class ApiError(BpjError):
    """A call ended with a non-OK google.rpc.Status.

    Attributes: ``code`` (:class:`Code`), ``message`` (the server's words), ``rpc`` (e.g.
    ``JobService.GetBatchPredictionJob``), ``resource`` (the name or parent the request was about),
    ``details`` (the status details in proto3 JSON form, each with an ``@type``), ``retry_delay``
    (seconds, from a google.rpc.RetryInfo detail, or None) and ``http_status``; and api_core's
    ``grpc_status_code``, ``reason``, ``domain``, ``metadata``, ``errors`` and ``response`` (see the module
    docstring). ``ApiError(message, code=c)`` gives an instance of the class for ``c``.
    """

    code: Code = Code.UNKNOWN
    _status_details: list[dict[str, Any]]

    def __new__(cls, *args: Any, code: Code | None = None, **kwargs: Any) -> ApiError:
        _follow_api_core()
        target = error_class(Code.UNKNOWN if code is None else code) if cls is ApiError else cls
        return cast(ApiError, super().__new__(target, *args[:1]))

    def __init__(
        self,
        message: str,
        *,
        rpc: str = "",
        resource: str = "",
        details: Sequence[dict[str, Any]] = (),
        code: Code | None = None,
    ) -> None:
        # First: with api_core's class as a base, its __init__ runs in this chain and sets ``message`` too.
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.rpc = rpc
        self.resource = resource
        self.details = list(details)

    # A property, not an instance attribute: api_core's ``details`` is a read-only property further along
    # the MRO, and would otherwise refuse the assignment.
    @property
    def details(self) -> list[dict[str, Any]]:
        return self._status_details

    @details.setter
    def details(self, value: list[dict[str, Any]]) -> None:
        self._status_details = value

    @property
    def http_status(self) -> int:
        return self.code.http_status

    @property
    def retry_delay(self) -> float | None:
        d = self._detail("google.rpc.RetryInfo")
        return None if d is None else _duration_seconds(d.get("retryDelay", "0s"))

    @property
    def grpc_status_code(self) -> Any:
        """``grpc.StatusCode`` of ``code`` (api_core's attribute), or None without grpcio."""
        try:
            import grpc
        except ImportError:
            return None
        return next(s for s in grpc.StatusCode if s.value[0] == self.code)

    @property
    def reason(self) -> str | None:
        info = self._detail("google.rpc.ErrorInfo")
        return None if info is None else info.get("reason")

    @property
    def domain(self) -> str | None:
        info = self._detail("google.rpc.ErrorInfo")
        return None if info is None else info.get("domain")

    @property
    def metadata(self) -> dict[str, str] | None:
        info = self._detail("google.rpc.ErrorInfo")
        return None if info is None else info.get("metadata", {})

    @property
    def errors(self) -> list[Any]:
        return []

    @property
    def response(self) -> None:
        return None

    def _detail(self, type_name: str) -> dict[str, Any] | None:
        return next((d for d in self.details if d.get("@type", "").endswith("/" + type_name)), None)

    def __str__(self) -> str:
        where = f" from {self.rpc}" if self.rpc else ""
        about = f" on {self.resource}" if self.resource else ""
        return f"{self.code.name}{where}{about}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.rpc, self.resource, self.details, self.code))


def _rebuild(
    cls: type[ApiError], message: str, rpc: str, resource: str, details: list, code: Code
) -> ApiError:
    return cls(message, rpc=rpc, resource=resource, details=details, code=code)


class Cancelled(ApiError):
    code = Code.CANCELLED


class Unknown(ApiError):
    code = Code.UNKNOWN


class InvalidArgument(ApiError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceeded(ApiError):
    code = Code.DEADLINE_EXCEEDED


class NotFound(ApiError):
    code = Code.NOT_FOUND


class AlreadyExists(ApiError):
    code = Code.ALREADY_EXISTS


class PermissionDenied(ApiError):
    code = Code.PERMISSION_DENIED


class ResourceExhausted(ApiError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPrecondition(ApiError):
    code = Code.FAILED_PRECONDITION


class Aborted(ApiError):
    code = Code.ABORTED


class OutOfRange(ApiError):
    code = Code.OUT_OF_RANGE


class Unimplemented(ApiError):
    code = Code.UNIMPLEMENTED


class Internal(ApiError):
    code = Code.INTERNAL


class Unavailable(ApiError):
    code = Code.UNAVAILABLE


class Unreachable(Unavailable):
    """Nothing accepted a connection at an endpoint that this client has never reached: most likely a
    wrong endpoint, or a server that is not running. Retried only for ``RetryPolicy.unreachable_deadline``
    seconds (a server still starting), not the policy's whole deadline."""

    @classmethod
    def of(cls, err: Unavailable, endpoint: str) -> Unreachable:
        hint = f"nothing accepts connections at {endpoint}: is the endpoint right, and the server running?"
        return cls(f"{err.message}; {hint}", rpc=err.rpc, resource=err.resource, details=err.details)


class DataLoss(ApiError):
    code = Code.DATA_LOSS


class DataCorruption(DataLoss):
    """Bytes do not match their crc32c: a download (the readers and ``Gcs.read`` hand none of its bytes
    out; ``Gcs.open`` finds it at the end of the stream, after handing them out), or an upload whose stored
    checksum differs from what was sent."""


class Unauthenticated(ApiError):
    code = Code.UNAUTHENTICATED


_CLASS_OF_CODE: dict[Code, type[ApiError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


# -- google.api_core.exceptions as second bases -----------------------------------------------------

_API_CORE = "google.api_core.exceptions"
# The api_core class each code's bpj class also becomes (api_core's own gRPC code -> class table).
_API_CORE_CLASS = {
    Code.CANCELLED: "Cancelled",
    Code.UNKNOWN: "Unknown",
    Code.INVALID_ARGUMENT: "InvalidArgument",
    Code.DEADLINE_EXCEEDED: "DeadlineExceeded",
    Code.NOT_FOUND: "NotFound",
    Code.ALREADY_EXISTS: "AlreadyExists",
    Code.PERMISSION_DENIED: "PermissionDenied",
    Code.RESOURCE_EXHAUSTED: "ResourceExhausted",
    Code.FAILED_PRECONDITION: "FailedPrecondition",
    Code.ABORTED: "Aborted",
    Code.OUT_OF_RANGE: "OutOfRange",
    Code.UNIMPLEMENTED: "MethodNotImplemented",
    Code.INTERNAL: "InternalServerError",
    Code.UNAVAILABLE: "ServiceUnavailable",
    Code.DATA_LOSS: "DataLoss",
    Code.UNAUTHENTICATED: "Unauthenticated",
}
_bound_to: object = None  # the google.api_core.exceptions module the classes derive from


def _follow_api_core() -> None:
    """Give every class of _CLASS_OF_CODE its api_core class as a second base once google.api_core.exceptions
    is imported (by anyone); a dict lookup otherwise. A module reloaded since is followed too."""
    global _bound_to
    module = sys.modules.get(_API_CORE)
    if module is None or module is _bound_to:
        return
    try:
        bases = {code: getattr(module, name) for code, name in _API_CORE_CLASS.items()}
    except AttributeError:  # the module is still being imported
        return
    # Idempotent, so two threads that get here at once do no harm.
    for code, cls in _CLASS_OF_CODE.items():
        cls.__bases__ = (ApiError, bases[code])
    _bound_to = module


_follow_api_core()


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` for a message, cut at ``limit`` characters: a 2 KB hostile URI quoted in full would
    bury what the message says (and can push a gRPC status past what clients accept)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def error_class(code: Code) -> type[ApiError]:
    return _CLASS_OF_CODE.get(code, Unknown)


def from_status(
    code: object, message: str, details: Sequence[dict[str, Any]] = (), *, rpc: str = "", resource: str = ""
) -> ApiError:
    """The ApiError for a status, naming the RPC and the resource the request was about."""
    c = Code.of(code)
    if c == Code.OK:
        c = Code.UNKNOWN
    return error_class(c)(message, rpc=rpc, resource=resource, details=details, code=c)


# -- google.rpc.Status <-> errors -------------------------------------------------------------------


def details_from_any(anys: Sequence[Any]) -> list[dict[str, Any]]:
    """Decode google.protobuf.Any details into proto3 JSON dicts; unknown types keep their bytes."""
    from google.protobuf import json_format, symbol_database

    out: list[dict[str, Any]] = []
    _load_error_details()
    db = symbol_database.Default()
    for a in anys:
        type_name = a.type_url.rsplit("/", 1)[-1]
        try:
            cls = db.GetSymbol(type_name)
            msg = cls.FromString(a.value)
            d = json_format.MessageToDict(msg)
            out.append({"@type": a.type_url, **d})
        except (KeyError, TypeError, ValueError):
            out.append({"@type": a.type_url, "value": base64.b64encode(a.value).decode()})
    return out


def status_bytes(err: ApiError) -> bytes:
    """A serialized google.rpc.Status for an error, as gRPC sends it in ``grpc-status-details-bin``."""
    from google.protobuf import any_pb2, json_format, symbol_database
    from google.rpc import status_pb2

    _load_error_details()
    db = symbol_database.Default()
    status = status_pb2.Status(code=int(err.code), message=err.message)
    for d in err.details:
        type_url = d.get("@type", "")
        a = any_pb2.Any(type_url=type_url)
        if "value" in d and len(d) == 2:
            a.value = base64.b64decode(d["value"])
        else:
            try:
                cls = db.GetSymbol(type_url.rsplit("/", 1)[-1])
            except KeyError:
                continue
            body = {k: v for k, v in d.items() if k != "@type"}
            a.value = json_format.ParseDict(body, cls()).SerializeToString()
        status.details.append(a)
    return status.SerializeToString()


def status_json(err: ApiError) -> dict[str, Any]:
    """The JSON error body Google's REST APIs send: ``{"error": {code, message, status, details}}``."""
    body: dict[str, Any] = {"code": err.http_status, "message": err.message, "status": err.code.name}
    if err.details:
        body["details"] = err.details
    return {"error": body}


def _load_error_details() -> None:
    # Registers google.rpc.RetryInfo, ErrorInfo, BadRequest... in the default pool (common protos).
    from google.rpc import error_details_pb2  # noqa: F401


def _duration_seconds(text: str) -> float:
    try:
        return float(text.rstrip("s"))
    except ValueError:
        return 0.0
