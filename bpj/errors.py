"""One exception tree for every transport.

    BpjError
    ├── UsageError (also ValueError)   bad input, raised before any network call; says what to change
    │   └── UsageTypeError (also TypeError)  a value of the wrong type
    └── ApiError                       the server, or the path to it, answered with a google.rpc.Status
        ├── Cancelled                  CANCELLED            HTTP 499
        ├── Unknown                    UNKNOWN              HTTP 500
        ├── InvalidArgument            INVALID_ARGUMENT     HTTP 400
        ├── DeadlineExceeded           DEADLINE_EXCEEDED    HTTP 504
        ├── NotFound                   NOT_FOUND            HTTP 404
        ├── AlreadyExists              ALREADY_EXISTS       HTTP 409
        ├── PermissionDenied           PERMISSION_DENIED    HTTP 403
        ├── ResourceExhausted          RESOURCE_EXHAUSTED   HTTP 429
        ├── FailedPrecondition         FAILED_PRECONDITION  HTTP 400
        ├── Aborted                    ABORTED              HTTP 409
        ├── OutOfRange                 OUT_OF_RANGE         HTTP 400
        ├── Unimplemented              UNIMPLEMENTED        HTTP 501
        ├── Internal                   INTERNAL             HTTP 500
        ├── Unavailable                UNAVAILABLE          HTTP 503  (also: connection refused or reset)
        │   └── Unreachable            no connection to an endpoint this client never reached
        ├── DataLoss                   DATA_LOSS            HTTP 500
        │   └── DataCorruption         downloaded bytes that fail their checksum (never returned)
        └── Unauthenticated            UNAUTHENTICATED      HTTP 401

The same server error gives the same class and the same message over gRPC, REST and in-memory. Every
ApiError names the RPC, the resource the request was about, and the server's message.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


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
    (seconds, from a google.rpc.RetryInfo detail, or None) and ``http_status``.
    """

    code: Code = Code.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        rpc: str = "",
        resource: str = "",
        details: Sequence[dict[str, Any]] = (),
        code: Code | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.rpc = rpc
        self.resource = resource
        self.details = list(details)
        super().__init__(message)

    @property
    def http_status(self) -> int:
        return self.code.http_status

    @property
    def retry_delay(self) -> float | None:
        for d in self.details:
            if d.get("@type", "").endswith("/google.rpc.RetryInfo"):
                return _duration_seconds(d.get("retryDelay", "0s"))
        return None

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
    """Downloaded bytes do not match their checksum (crc32c); the bytes were not handed out."""


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
