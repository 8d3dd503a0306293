"""The Cloud Storage JSON API as the output reader uses it: list objects, read bytes, check them.

One thread-safe urllib3 pool per client, credentials resolved at the first request (none for a loopback
endpoint). A body is read in one piece; a broken one resumes with a Range request from the last byte
received, pinned to the listed generation. ``verify`` checks an object's crc32c before any of its bytes are
handed out.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bpj import checksum, errors

__all__ = ["CHUNK_SIZE", "Client", "DataCorruption", "GcsObject", "client_for", "verify"]

_MiB = 1 << 20
CHUNK_SIZE = 8 * _MiB
_ATTEMPTS = 6  # per request, and per broken body without progress
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)

DataCorruption = errors.DataCorruption


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


class Client:
    """The JSON API over one thread-safe urllib3 pool, with credentials resolved at the first request."""

    def __init__(self, endpoint: str | None = None, credentials: Any = None, *, maxsize: int = 16) -> None:
        import urllib3

        from bpj import config

        self.settings = config.settings(gcs_endpoint=endpoint)
        self.endpoint = self.settings.gcs_endpoint
        parsed = config.parse_endpoint(self.endpoint)
        tls = parsed.tls(self.settings.tls_root_cert)
        self.base = f"{'https' if tls else 'http'}://{parsed.target()}"
        self._credentials = credentials
        self._resolved = credentials is not None or parsed.is_loopback
        self._lock = threading.Lock()
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=maxsize,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=20.0, read=120.0),
            ca_certs=self.settings.tls_root_cert,
        )

    def headers(self) -> dict[str, str]:
        h = {"User-Agent": "bpj-outputs", "Accept-Encoding": "identity"}
        if self.settings.token:
            h["Authorization"] = f"Bearer {self.settings.token}"
            return h
        with self._lock:
            if not self._resolved:
                from bpj import config

                self._credentials = config.resolve_credentials(self.settings, self.endpoint)
                self._resolved = True
            creds = self._credentials
            if creds is not None:
                if not creds.valid:
                    import google.auth.transport.requests

                    creds.refresh(google.auth.transport.requests.Request())
                creds.apply(h)
        return h

    def get(
        self, path: str, fields: dict[str, str], about: str, headers: dict[str, str] | None = None
    ) -> Any:
        """A streaming response with status 200 or 206; retries connection failures and 408/429/5xx."""
        import urllib3

        url = f"{self.base}{path}?{urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)}"
        problem = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(min(2.0, 0.05 * 2**attempt))
            try:
                resp = self.pool.request(
                    "GET",
                    url,
                    headers={**self.headers(), **(headers or {})},
                    preload_content=False,
                    redirect=False,
                )
            except urllib3.exceptions.HTTPError as e:
                problem = str(e)
                continue
            if resp.status in (200, 206):
                return resp
            body = resp.read()
            resp.release_conn()
            if resp.status in _RETRY_STATUS:
                problem = f"HTTP {resp.status}"
                continue
            raise _api_error(resp.status, body, about)
        raise errors.Unavailable(f"GET {about} failed {_ATTEMPTS} times: {problem}")

    def list(self, bucket: str, prefix: str) -> Iterator[GcsObject]:
        fields = {
            "prefix": prefix,
            "maxResults": "1000",
            "fields": "items(name,size,generation,crc32c),nextPageToken",
        }
        about = f"gs://{bucket}/{prefix}"
        while True:
            resp = self.get(f"/storage/v1/b/{_quote(bucket)}/o", fields, about)
            page = json.loads(resp.read())
            resp.release_conn()
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

    def fetch(self, obj: GcsObject, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes ``[start, end)`` of an object, and the object's crc32c from the response headers.

        The body is read in one piece; when the connection breaks, the rest is asked for with a Range from
        the last byte received (giving up after ``_ATTEMPTS`` breaks in a row without progress)."""
        import urllib3

        path = f"/storage/v1/b/{_quote(obj.bucket)}/o/{_quote(obj.name)}"
        fields = {"alt": "media"}
        if obj.generation:
            fields["generation"] = obj.generation
        pieces: list[bytes] = []
        pos, stalls, header_crc = start, 0, None
        while pos < end:
            ranged = not (pos == 0 and end == obj.size)
            resp = self.get(path, fields, obj.uri, {"Range": f"bytes={pos}-{end - 1}"} if ranged else None)
            header_crc = header_crc if header_crc is not None else checksum.from_goog_hash(resp.headers)
            want = end - pos
            data = b""
            try:
                if ranged and resp.status == 200:  # the server ignored the Range: skip to ours
                    data = resp.read(decode_content=False)[pos:end]
                else:
                    data = resp.read(want, decode_content=False)
            except (urllib3.exceptions.HTTPError, OSError):
                pass
            if len(data) == want:
                resp.release_conn()
            else:
                resp.close()  # a broken connection never goes back to the pool
                stalls = 0 if data else stalls + 1
                if stalls >= _ATTEMPTS:
                    raise errors.Unavailable(f"reading {obj.uri} failed {stalls} times at byte {pos}")
            if data:
                pieces.append(data)
                pos += len(data)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return data, header_crc

    def download(self, obj: GcsObject) -> bytes:
        """The whole object, checked (ranged GETs of CHUNK_SIZE for a large one, one after another)."""
        parts, header_crc = [], None
        for start in range(0, obj.size, CHUNK_SIZE):
            data, crc = self.fetch(obj, start, min(obj.size, start + CHUNK_SIZE))
            parts.append(data)
            header_crc = header_crc if header_crc is not None else crc
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        verify(obj, data, header_crc)
        return data


_clients: dict[str | None, Client] = {}
_clients_lock = threading.Lock()


def client_for(endpoint: str | None) -> Client:
    """A process-wide client per endpoint (what partitions use, in whatever process they run)."""
    with _clients_lock:
        c = _clients.get(endpoint)
        if c is None:
            c = _clients[endpoint] = Client(endpoint)
        return c


def verify(obj: GcsObject, data: bytes, header_crc: int | None = None) -> None:
    """DataCorruption unless ``data`` has the object's crc32c (from its listing, else the response)."""
    expected = obj.crc32c if obj.crc32c is not None else header_crc
    if len(data) != obj.size:
        raise DataCorruption(f"{obj.uri}: downloaded {len(data)} bytes, the object has {obj.size}")
    if expected is not None:
        got = checksum.crc32c(data)
        if got != expected:
            raise DataCorruption(
                f"{obj.uri}: crc32c of the downloaded bytes is {got:08x}, the object's is {expected:08x}; "
                "nothing of it was returned"
            )


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _api_error(status: int, body: bytes, about: str) -> errors.ApiError:
    if status == 404:
        return errors.NotFound(f"{about} was not found")
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:500]
    code = errors.Code.from_http(status)
    return errors.error_class(code)(f"{about}: HTTP {status}: {message}", code=code)
