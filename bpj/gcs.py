"""The one Cloud Storage client: the JSON API over one thread-safe urllib3 pool.

The output readers, the local stack (executor, inputs, sinks, models), the CLI and the tests all use
:class:`Gcs`. It speaks the public JSON API, so it works against ``https://storage.googleapis.com`` (TLS,
Application Default Credentials resolved at the first request) as against a local server (anonymous on
loopback); a bearer ``token`` replaces credentials (what a local stack started with a token asks for).

Reading: a body is read in one piece (``Accept-Encoding: identity``, never decoded); a body that breaks is
asked for again with a Range from the last byte received, pinned to the generation first answered.
:meth:`Gcs.download` and :meth:`Gcs.read` check the object's crc32c before any of its bytes are handed out,
:meth:`Gcs.open` streams and checks when the body has been read to its end: a mismatch is
:class:`bpj.errors.DataCorruption`, whichever way the object was read.

Retries: one policy, :data:`RETRY`, decided by :class:`bpj.retry.Attempts` for every request: connection
failures, timeouts, 408, 429 and 5xx are tried again with backoff, for the calls that are safe to repeat (see
the ``_op`` values below); a body that breaks after some of its bytes came through starts the count again.
Errors: :data:`STATUS_ERRORS`, what Cloud Storage means by each HTTP status; a missing object is
``NotFound("gs://b/o was not found")``, a bad URI ``InvalidArgument`` naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bpj import checksum, config, errors, gcs_uri, retry
from bpj.transport.base import Method, RetryPolicy

__all__ = [
    "CHUNK_SIZE",
    "RETRY",
    "STATUS_ERRORS",
    "Gcs",
    "GcsObject",
    "GcsWriter",
    "ObjectReader",
    "client_for",
    "split_uri",
    "verify",
]

_MiB = 1 << 20
CHUNK_SIZE = 8 * _MiB  # the ranges a large object is downloaded in
_CONNECT_TIMEOUT = 20.0
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

# Cloud Storage's advice (https://cloud.google.com/storage/docs/retry-strategy): exponential backoff on
# connection failures, 408, 429 and 5xx.
RETRY = RetryPolicy(
    initial=0.1,
    maximum=5.0,
    multiplier=2.0,
    deadline=60.0,
    codes=frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}),
    unreachable_deadline=5.0,
)

# What Cloud Storage means by each status (https://cloud.google.com/storage/docs/json_api/v1/status-codes).
# Any other 4xx is FailedPrecondition, any other 5xx Unavailable.
STATUS_ERRORS: dict[int, type[errors.ApiError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    408: errors.DeadlineExceeded,  # Request Timeout: try again
    409: errors.AlreadyExists,  # Conflict: a bucket (or another named resource) that exists already
    410: errors.Aborted,  # Gone: a resumable upload session that ended; start the upload again
    411: errors.InvalidArgument,  # Length Required
    412: errors.FailedPrecondition,  # a precondition (ifGenerationMatch...) does not hold
    413: errors.InvalidArgument,  # Payload Too Large
    416: errors.OutOfRange,  # Requested Range Not Satisfiable
    429: errors.ResourceExhausted,  # Too Many Requests: try again, slower
    499: errors.Cancelled,
    500: errors.Internal,
    501: errors.Unimplemented,
    502: errors.Unavailable,
    503: errors.Unavailable,
    504: errors.DeadlineExceeded,
}


def _no_messages(name: str) -> Any:
    raise LookupError(f"Cloud Storage JSON API calls carry no protobuf messages ({name})")


def _op(name: str, *, idempotent: bool = True) -> Method:
    """One JSON API call as :class:`bpj.retry.Attempts` sees it: a name for logs and errors, and whether it
    is safe to send twice."""
    return Method("storage", name, "", "", False, (), None, RETRY, idempotent, resolve=_no_messages)


_BUCKETS_GET = _op("buckets.get")
_BUCKETS_INSERT = _op("buckets.insert")  # with exists_ok: a repeat answers 409, which is fine
_BUCKETS_INSERT_NEW = _op("buckets.insert", idempotent=False)  # a repeat would say "already exists"
_OBJECTS_GET = _op("objects.get")
_OBJECTS_LIST = _op("objects.list")
_OBJECTS_INSERT = _op("objects.insert")  # a whole object (or a new session): a repeat writes the same bytes
_OBJECTS_DELETE = _op("objects.delete", idempotent=False)  # a repeat after a lost answer says 404
_UPLOAD_CHUNK = _op("objects.insert", idempotent=False)  # a chunk of a resumable upload, at its offset


def split_uri(uri: str, *, object_required: bool = True) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``("bucket", "name")``; InvalidArgument naming the URI otherwise."""
    return gcs_uri.split(uri, object_required=object_required, error=errors.InvalidArgument)


@dataclass(frozen=True)
class GcsObject:
    """One listed object: what a download needs to fetch and check it."""

    bucket: str
    name: str
    size: int
    generation: str | None = None
    crc32c: int | None = None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def format(self) -> str:
        return "csv" if self.name.lower().endswith(".csv") else "jsonl"


class Gcs:
    """A thread-safe Cloud Storage client over one urllib3 pool.

    ``endpoint``, ``credentials``, ``token`` and ``tls_root_cert`` (a PEM path) default to ``bpj.init``'s
    ``gcs_endpoint``, credentials, token and TLS root (and their environment variables). ``timeout``:
    seconds one request may wait for bytes. ``buffer_size``: the pieces :meth:`open` reads in; ``upload_chunk_size``: the pieces of a resumable upload
    (a multiple of 256 KiB). ``retry``: the policy (None: one attempt per request).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        credentials: Any = None,
        token: str | None = None,
        tls_root_cert: str | None = None,
        max_connections: int = 32,
        timeout: float = 60.0,
        buffer_size: int = _MiB,
        upload_chunk_size: int = 16 * _MiB,
        retry: RetryPolicy | None = RETRY,
    ) -> None:
        import urllib3

        self.settings = config.settings(
            gcs_endpoint=endpoint, credentials=credentials, token=token, tls_root_cert=tls_root_cert
        )
        self.endpoint = self.settings.gcs_endpoint
        parsed = config.parse_endpoint(self.endpoint)
        self.base = f"{'https' if parsed.tls(self.settings.tls_root_cert) else 'http'}://{parsed.target()}"
        self.timeout = timeout
        self.retry = retry
        self.buffer_size = buffer_size
        self.upload_chunk_size = max(256 << 10, upload_chunk_size // (256 << 10) * (256 << 10))
        self.reached = False  # an HTTP answer has come from the endpoint (else: errors.Unreachable)
        self._credentials = self.settings.credentials
        self._resolved = self._credentials is not None or parsed.is_loopback
        self._lock = threading.Lock()
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT, read=timeout),
            ca_certs=self.settings.tls_root_cert,
        )

    # -- plumbing --

    def headers(self) -> dict[str, str]:
        """The headers of every request: the token, or the credentials' (refreshed when they expire)."""
        h = {"User-Agent": "bpj", "Accept-Encoding": "identity"}
        if self.settings.token:
            h["Authorization"] = f"Bearer {self.settings.token}"
            return h
        with self._lock:
            if not self._resolved:
                self._credentials = config.resolve_credentials(self.settings, self.endpoint)
                self._resolved = True
            creds = self._credentials
            if creds is not None:
                if not creds.valid:
                    import google.auth.transport.requests

                    creds.refresh(google.auth.transport.requests.Request())
                creds.apply(h)
        return h

    def _attempts(self, op: Method) -> retry.Attempts:
        return retry.Attempts(op, self.retry, self.timeout)

    def _once(
        self,
        op: Method,
        verb: str,
        path: str,
        *,
        about: str,
        timeout: float | None,
        fields: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """One request: the response when its status is in ``ok``, else the ApiError of its status."""
        import urllib3

        if timeout is not None and timeout <= 0:
            raise errors.DeadlineExceeded(f"{verb} {about}: no time left to ask", rpc=op.rpc_name)
        url = self.base + path
        if fields:
            url += "?" + urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)
        wait = (
            None if timeout is None else urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, timeout), read=timeout)
        )
        try:
            resp = self._pool.request(
                verb,
                url,
                body=body,
                headers={**self.headers(), **(headers or {})},
                preload_content=not stream,
                redirect=False,
                timeout=wait,
            )
        except urllib3.exceptions.HTTPError as e:
            raise self._failed(op, f"{verb} {about}", e) from None
        self.reached = True
        if resp.status in ok:
            return resp
        data = resp.data
        resp.release_conn()
        raise _error(resp.status, data, about, op, resp.headers)

    def _failed(self, op: Method, what: str, e: Exception) -> errors.ApiError:
        import urllib3

        if isinstance(e, urllib3.exceptions.ReadTimeoutError):
            return errors.DeadlineExceeded(f"{what}: no answer in time ({e})", rpc=op.rpc_name)
        if isinstance(e, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.SSLError)):
            # No connection (NewConnectionError is a ConnectTimeoutError), or no TLS session on it.
            err = errors.Unavailable(f"{what}: cannot connect to {self.base}: {e}", rpc=op.rpc_name)
            return err if self.reached else errors.Unreachable.of(err, self.endpoint)
        return errors.Unavailable(f"{what}: the connection broke: {e}", rpc=op.rpc_name)

    def _call(self, op: Method, verb: str, path: str, *, about: str, **kw: Any) -> Any:
        """A request, tried again as :data:`RETRY` says when ``op`` is safe to repeat."""
        return retry.call_with_retry(
            lambda t: self._once(op, verb, path, about=about, timeout=t, **kw),
            method=op,
            policy=self.retry,
            timeout=self.timeout,
        )

    def _json(self, op: Method, verb: str, path: str, *, about: str, **kw: Any) -> dict[str, Any]:
        resp = self._call(op, verb, path, about=about, **kw)
        return json.loads(resp.data) if resp.data else {}

    # -- buckets --

    def create_bucket(self, name: str, *, exists_ok: bool = True, project: str | None = None) -> None:
        """Create a bucket; an existing one is fine unless ``exists_ok`` is False (then AlreadyExists)."""
        split_uri(f"gs://{name}", object_required=False)
        try:
            self._call(
                _BUCKETS_INSERT if exists_ok else _BUCKETS_INSERT_NEW,
                "POST",
                "/storage/v1/b",
                about=f"gs://{name}",
                fields={"project": project or self.settings.project or "local"},
                body=json.dumps({"name": name}).encode(),
                headers={"Content-Type": "application/json"},
            )
        except errors.AlreadyExists as e:
            if not exists_ok:
                raise errors.AlreadyExists(f"gs://{name} already exists", rpc=e.rpc) from e

    def bucket_exists(self, name: str) -> bool:
        try:
            self._call(_BUCKETS_GET, "GET", f"/storage/v1/b/{_quote(name)}", about=f"gs://{name}")
        except errors.NotFound:
            return False
        return True

    # -- listing and metadata --

    def objects(self, bucket: str, prefix: str) -> Iterator[GcsObject]:
        """The objects whose names start with ``prefix``, in the server's order, page by page."""
        fields = {
            "prefix": prefix,
            "maxResults": "1000",
            "fields": "items(name,size,generation,crc32c),nextPageToken",
        }
        path = f"/storage/v1/b/{_quote(bucket)}/o"
        while True:
            page = self._json(_OBJECTS_LIST, "GET", path, about=f"gs://{bucket}/{prefix}", fields=fields)
            for item in page.get("items", ()):
                crc = item.get("crc32c")
                yield GcsObject(
                    bucket,
                    item["name"],
                    int(item.get("size", 0)),
                    item.get("generation"),
                    checksum.from_base64(crc) if crc else None,
                )
            token = page.get("nextPageToken")
            if not token:
                return
            fields["pageToken"] = token

    def list(self, pattern: str) -> list[str]:
        """The gs:// URIs of the objects that start with a prefix, or match a wildcard pattern (``*``, ``**``,
        ``?``, ``[...]``, as Cloud Storage URIs use them), in name order."""
        bucket, name = split_uri(pattern, object_required=False)
        m = gcs_uri.WILDCARD.search(name)
        regex = gcs_uri.glob_regex(name) if m else None
        out = [
            f"gs://{bucket}/{o.name}"
            for o in self.objects(bucket, name[: m.start()] if m else name)
            if regex is None or regex.fullmatch(o.name)
        ]
        return sorted(out, key=lambda u: u.encode())

    def stat(self, uri: str) -> dict[str, Any]:
        """The object's JSON API metadata (``size``, ``crc32c``, ``generation``, ``contentType``...)."""
        bucket, name = split_uri(uri)
        return self._json(_OBJECTS_GET, "GET", _object_path(bucket, name), about=uri)

    def exists(self, uri: str) -> bool:
        """Whether the object exists (for ``gs://bucket`` or ``gs://bucket/``: whether the bucket does)."""
        bucket, name = split_uri(uri, object_required=False)
        if not name:
            return self.bucket_exists(bucket)
        try:
            self.stat(uri)
        except errors.NotFound:
            return False
        return True

    def size(self, uri: str) -> int:
        return int(self.stat(uri)["size"])

    # -- reading --

    def read(self, uri: str, *, verify: bool = True) -> bytes:
        """The whole object, checked against its crc32c (unless ``verify`` is False)."""
        r = _Read(self, *split_uri(uri))
        data = r.all()
        if verify and r.crc is not None:
            _check(uri, checksum.crc32c(data), r.crc)
        return data

    def fetch(self, obj: GcsObject, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes ``[start, end)`` of a listed object (unchecked), and the object's crc32c from the response
        headers; the whole object in one GET when that is what is asked."""
        whole = start == 0 and end == obj.size
        r = _Read(self, obj.bucket, obj.name, start, None if whole else end, obj.generation)
        return r.all(), r.crc

    def download(self, obj: GcsObject, chunk_size: int = CHUNK_SIZE) -> bytes:
        """A listed object, checked (ranged GETs of ``chunk_size`` for a large one, one after another)."""
        parts, header_crc = [], None
        for start in range(0, obj.size, chunk_size):
            data, crc = self.fetch(obj, start, min(obj.size, start + chunk_size))
            parts.append(data)
            header_crc = header_crc if header_crc is not None else crc
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        verify(obj, data, header_crc)
        return data

    def open(self, uri: str, *, verify: bool = True) -> io.BufferedReader:
        """A binary file object that streams the object's body in ``buffer_size`` pieces (checked against the
        object's crc32c when the whole body has been read). NotFound is raised here, not on the first read."""
        return io.BufferedReader(ObjectReader(self, uri, verify=verify), buffer_size=self.buffer_size)

    # -- writing --

    def write(
        self,
        uri: str,
        data: bytes | bytearray | memoryview,
        *,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Write an object in one request, or with a resumable upload in ``upload_chunk_size`` pieces when it
        is larger than one. Returns the object's metadata."""
        if len(data) <= self.upload_chunk_size:
            return self._upload_media(uri, bytes(data), content_type)
        with self.writer(uri, content_type=content_type) as w:
            w.write(data)
        return w.metadata

    def writer(self, uri: str, *, content_type: str = "application/octet-stream") -> GcsWriter:
        """A binary writer that streams into a new object (bounded memory: one upload chunk)."""
        split_uri(uri)
        return GcsWriter(self, uri, content_type)

    def delete(self, uri: str) -> None:
        bucket, name = split_uri(uri)
        self._call(_OBJECTS_DELETE, "DELETE", _object_path(bucket, name), about=uri, ok=(200, 204))

    def _upload(self, uri: str, upload_type: str, body: bytes, headers: dict[str, str]) -> Any:
        bucket, name = split_uri(uri)
        try:
            return self._call(
                _OBJECTS_INSERT,
                "POST",
                f"/upload/storage/v1/b/{_quote(bucket)}/o",
                about=uri,
                fields={"uploadType": upload_type, "name": name},
                body=body,
                headers=headers,
            )
        except errors.NotFound as e:
            # An upload answers 404 only when the bucket is missing: say so, not "gs://b/o was not found".
            raise errors.NotFound(
                f"cannot write {uri}: the bucket gs://{bucket} was not found", rpc=e.rpc
            ) from None

    def _upload_media(self, uri: str, data: bytes, content_type: str) -> dict[str, Any]:
        resp = self._upload(uri, "media", data, {"Content-Type": content_type})
        meta: dict[str, Any] = json.loads(resp.data) if resp.data else {}
        _check_uploaded(uri, meta, checksum.crc32c(data))
        return meta

    def _start_resumable(self, uri: str, content_type: str) -> str:
        resp = self._upload(
            uri,
            "resumable",
            json.dumps({"name": split_uri(uri)[1], "contentType": content_type}).encode(),
            {"Content-Type": "application/json", "X-Upload-Content-Type": content_type},
        )
        location = resp.headers.get("Location")
        if not location:
            raise errors.Internal(f"{uri}: the server started a resumable upload without a Location")
        # The session URL must go to our endpoint, whatever host the server thinks it has.
        parts = urllib.parse.urlsplit(location)
        return parts.path + ("?" + parts.query if parts.query else "")

    def _put_chunk(self, uri: str, session: str, data: bytes, start: int, total: int | None) -> Any:
        size = "*" if total is None else str(total)
        rng = f"bytes {start}-{start + len(data) - 1}/{size}" if data else f"bytes */{size}"
        return self._call(
            _UPLOAD_CHUNK,
            "PUT",
            session,
            about=uri,
            body=data,
            headers={"Content-Range": rng},
            ok=(200, 201, 308),
        )

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Gcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gcs({self.endpoint!r})"


class _Read:
    """One read of an object's bytes ``[pos, end)`` (``end`` None: to the object's end, until an answer
    says where that is). The generation and crc32c come from the first answer, and every later request is
    pinned to that generation; the attempts after a break start again once more bytes have come."""

    def __init__(
        self, gcs: Gcs, bucket: str, name: str, pos: int = 0, end: int | None = None, gen: str | None = None
    ) -> None:
        self.gcs, self.uri, self.path = gcs, f"gs://{bucket}/{name}", _object_path(bucket, name)
        self.pos, self.end, self.generation = pos, end, gen
        self.crc: int | None = None
        self.attempts: retry.Attempts | None = None

    def open(self, broken: object = None) -> Any:
        """A streaming response whose body starts at ``pos``; after a break (``broken`` says what broke),
        first the wait the attempts decide."""
        import urllib3

        err = None if broken is None else _broken(self.uri, self.pos, broken)
        while True:
            attempts = self.attempts = self.attempts or self.gcs._attempts(_OBJECTS_GET)
            if err is not None:
                time.sleep(attempts.after(err))
            ranged = self.pos > 0 or self.end is not None
            last = "" if self.end is None else self.end - 1
            try:
                resp = self.gcs._once(
                    _OBJECTS_GET,
                    "GET",
                    self.path,
                    about=self.uri,
                    timeout=attempts.next_timeout(),
                    fields={"alt": "media", **({"generation": self.generation} if self.generation else {})},
                    headers={"Range": f"bytes={self.pos}-{last}"} if ranged else None,
                    stream=True,
                    ok=(200, 206),
                )
            except errors.ApiError as e:
                err = e
                continue
            self.crc = checksum.from_goog_hash(resp.headers) if self.crc is None else self.crc
            self.generation = self.generation or resp.headers.get("X-Goog-Generation")
            skip = self.pos if ranged and resp.status == 200 else 0  # the server ignored the Range
            if self.end is None and resp.length_remaining is not None:
                self.end = self.pos + resp.length_remaining - skip
            try:
                while skip > 0 and (got := len(resp.read(min(skip, CHUNK_SIZE), decode_content=False))):
                    skip -= got
                return resp
            except (urllib3.exceptions.HTTPError, OSError) as e:
                resp.close()
                err = _broken(self.uri, self.pos, e)

    def progress(self, n: int) -> None:
        self.pos += n
        self.attempts = None

    def all(self) -> bytes:
        """The bytes up to the end, each answer's body read in one piece; a broken body is asked for again
        from the last byte received."""
        import urllib3

        pieces: list[bytes] = []
        broken: object = None
        while self.end is None or self.pos < self.end:
            resp = self.open(broken)
            want = None if self.end is None else self.end - self.pos
            try:
                data, broken = resp.read(want, decode_content=False), None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                data, broken = b"", e
            if broken is None and want is not None and len(data) < want:
                broken = f"the body ended after {len(data)} of {want} bytes"
            if broken is None:
                resp.release_conn()
            else:
                resp.close()  # a broken connection never goes back to the pool
            if data:
                pieces.append(data)
                self.progress(len(data))
            if broken is None and self.end is None:
                self.end = self.pos  # a body without a length, read to its end
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class ObjectReader(io.RawIOBase):
    """The body of one object as a raw stream; a broken connection resumes with a Range request pinned to
    the generation first read, and the crc32c of what was read is checked at the end of the body."""

    def __init__(self, gcs: Gcs, uri: str, *, verify: bool = True) -> None:
        super().__init__()
        self.uri = uri
        self._read = _Read(gcs, *split_uri(uri))
        self._crc = 0 if verify else None
        self._resp: Any = None
        self._resp = self._read.open()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        import urllib3

        while self._resp is not None:
            try:
                # One read from the socket: what came before a break is kept (readinto would drop it).
                data = self._resp.read(len(b), decode_content=False)
                break
            except (urllib3.exceptions.HTTPError, OSError) as e:
                resp, self._resp = self._resp, None
                resp.close()
                self._resp = self._read.open(e)
        else:
            return 0
        if not data:
            self._finish()
            return 0
        b[: len(data)] = data
        if self._crc is not None:
            self._crc = checksum.crc32c(data, self._crc)
        self._read.progress(len(data))
        return len(data)

    def _finish(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.release_conn()
        if self._crc is not None and self._read.crc is not None:
            _check(self.uri, self._crc, self._read.crc, streamed=True)

    def close(self) -> None:
        if self._resp is not None:
            # Not read to the end: drain a short rest, drop the connection rather than drain a long one.
            resp, self._resp = self._resp, None
            remaining = resp.length_remaining
            if remaining is not None and remaining <= 256 << 10:
                resp.drain_conn()
            else:
                resp.close()
            resp.release_conn()
        super().close()


class GcsWriter(io.RawIOBase):
    """Streams bytes into one new object: a single media upload when everything fits in one chunk, else a
    resumable upload in ``upload_chunk_size`` pieces. ``close()`` commits; ``abort()`` drops what was written."""

    def __init__(self, gcs: Gcs, uri: str, content_type: str) -> None:
        super().__init__()
        self.uri = uri
        self.metadata: dict[str, Any] = {}
        self._gcs = gcs
        self._content_type = content_type
        self._buf = bytearray()
        self._session: str | None = None
        self._sent = 0
        self._crc = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"write to closed writer for {self.uri}")
        view = memoryview(data).cast("B")
        self._buf += view
        self._crc = checksum.crc32c(view, self._crc)
        chunk = self._gcs.upload_chunk_size
        if len(self._buf) > chunk:
            if self._session is None:
                self._session = self._gcs._start_resumable(self.uri, self._content_type)
            n = len(self._buf) // chunk * chunk
            if n == len(self._buf):
                n -= chunk  # keep the last chunk: the final PUT must carry bytes
            self._gcs._put_chunk(self.uri, self._session, bytes(self._buf[:n]), self._sent, None)
            self._sent += n
            del self._buf[:n]
        return len(view)

    @property
    def bytes_written(self) -> int:
        return self._sent + len(self._buf)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._session is None:
                self.metadata = self._gcs._upload_media(self.uri, bytes(self._buf), self._content_type)
            else:
                total = self._sent + len(self._buf)
                resp = self._gcs._put_chunk(self.uri, self._session, bytes(self._buf), self._sent, total)
                self.metadata = json.loads(resp.data) if resp.data else {}
                _check_uploaded(self.uri, self.metadata, self._crc)
        finally:
            self._buf = bytearray()
            super().close()

    def abort(self) -> None:
        """Forget the buffered bytes; nothing is committed."""
        self._buf = bytearray()
        if self._session is not None:
            with contextlib.suppress(errors.ApiError):
                self._gcs._call(
                    _OBJECTS_DELETE, "DELETE", self._session, about=self.uri, ok=(200, 204, 404, 499)
                )
        super().close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- one client per endpoint, for partitions ------------------------------------------------------------

_clients: dict[tuple[str | None, str | None], Gcs] = {}
_clients_lock = threading.Lock()


def client_for(endpoint: str | None, tls_root_cert: str | None = None) -> Gcs:
    """A process-wide client per endpoint and TLS root (what partitions use, in whatever process they run:
    credentials and token come from that process's settings)."""
    with _clients_lock:
        c = _clients.get((endpoint, tls_root_cert))
        if c is None:
            c = _clients[endpoint, tls_root_cert] = Gcs(endpoint, tls_root_cert=tls_root_cert)
        return c


# -- checks and errors --------------------------------------------------------------------------------


def verify(obj: GcsObject, data: bytes, header_crc: int | None = None) -> None:
    """DataCorruption unless ``data`` has the object's size and crc32c (from its listing, else from the
    response headers)."""
    verify_sum(obj, len(data), lambda: checksum.crc32c(data), header_crc)


def verify_sum(obj: GcsObject, size: int, crc: Callable[[], int], header_crc: int | None = None) -> None:
    """:func:`verify` for bytes held elsewhere (a file, ranges checked apart): ``size`` of them, and
    ``crc()`` their crc32c, asked for only when there is one to compare with."""
    if size != obj.size:
        raise errors.DataCorruption(f"{obj.uri}: downloaded {size} bytes, the object has {obj.size}")
    expected = obj.crc32c if obj.crc32c is not None else header_crc
    if expected is not None:
        _check(obj.uri, crc(), expected)


def _check(uri: str, got: int, expected: int, *, streamed: bool = False) -> None:
    if got != expected:
        fate = "the bytes read are not the object's" if streamed else "nothing of it was returned"
        raise errors.DataCorruption(
            f"{uri}: crc32c of the downloaded bytes is {got:08x}, the object's is {expected:08x}; {fate}"
        )


def _broken(about: str, pos: int, why: object) -> errors.ApiError:
    return errors.Unavailable(f"reading {about} broke at byte {pos}: {why}", rpc=_OBJECTS_GET.rpc_name)


def _check_uploaded(uri: str, meta: dict[str, Any], crc: int) -> None:
    got = meta.get("crc32c")
    if got and checksum.from_base64(got) != crc:
        raise errors.DataCorruption(f"{uri}: the server stored bytes whose crc32c differs from what was sent")


def _error(status: int, body: bytes, about: str, op: Method, headers: Mapping[str, str]) -> errors.ApiError:
    """The ApiError for an HTTP status, by :data:`STATUS_ERRORS`, with the server's message and any
    ``Retry-After`` as a RetryInfo detail (which :class:`bpj.retry.Attempts` honours)."""
    cls = STATUS_ERRORS.get(status) or (
        errors.FailedPrecondition
        if 400 <= status < 500
        else errors.Unavailable
        if status >= 500
        else errors.Unknown
    )
    wait = headers.get("Retry-After", "")
    details = [{"@type": _RETRY_INFO, "retryDelay": f"{int(wait)}s"}] if wait.isdigit() else []
    if status == 404:
        return cls(f"{about} was not found", rpc=op.rpc_name, details=details)
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:500]
    return cls(f"{about}: HTTP {status}: {message}", rpc=op.rpc_name, details=details)


def _object_path(bucket: str, name: str) -> str:
    return f"/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}"


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
