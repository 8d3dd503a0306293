"""The local stack's GCS port, attacked as a stranger would: every refusal against the real guard process and
the real fake-gcs-server behind it, over raw sockets so that every byte is ours to choose."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.local.raw_http import exchange, request

TOKEN = "s3cret-token"
BUCKET = "guarded"


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    """A directory holding the data dir and, beside it, a sentinel tree an escape would write into."""
    root = tmp_path_factory.mktemp("gcs-security")
    (root / "outside").mkdir()
    (root / "outside" / "keep.txt").write_text("untouched")
    return root


@pytest.fixture(scope="module")
def server(area):
    from bpj.local.gcs import GcsServer

    with GcsServer(area / "data", token=TOKEN) as s:
        status, _, _ = call(s, "POST", "/storage/v1/b?project=p", body=json.dumps({"name": BUCKET}).encode())
        assert status == 200
        yield s


def call(server, method, target, *, headers=None, body=None, host=None, auth=True):
    return request(
        server.port, method, target, token=TOKEN if auth else None, headers=headers, body=body, host=host
    )


def raw(server, data: bytes) -> bytes:
    return exchange(server.port, data, wait=2.0)


def snapshot(area: Path) -> set[str]:
    """Every path under ``area`` outside the data dir, and every path under the data dir that escapes it."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(area, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if (area / "data") not in path.parents and path != area / "data":
                seen.add(str(path.relative_to(area)))
    return seen


def error_message(body: bytes) -> str:
    data = json.loads(body)
    assert set(data) == {"error"} and isinstance(data["error"]["code"], int)
    return data["error"]["message"]


# -- who may talk -------------------------------------------------------------------------------------------


def test_the_engine_is_out_of_reach(server):
    assert server.isolated, f"fake-gcs-server is not isolated: {server.why_not_isolated}"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.engine_port), timeout=2) as s:
        s.sendall(b"GET /storage/v1/b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(100).startswith(b"HTTP/1.1 200"), "the engine answered from the host's loopback"
        raise OSError("connected, but not to the engine")


@pytest.mark.parametrize(
    "method, target, body",
    [
        ("GET", "/storage/v1/b?project=p", None),
        ("GET", f"/storage/v1/b/{BUCKET}/o", None),
        ("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=models/m/model.pkl", b"pwned"),
        ("DELETE", f"/storage/v1/b/{BUCKET}", None),
    ],
)
def test_every_request_needs_the_token(server, method, target, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, _, answer = call(server, method, target, headers=headers, body=body, auth=False)
        assert status == 401 and "bearer token" in error_message(answer)
    status, _, _ = call(server, "GET", f"/storage/v1/b/{BUCKET}/o/models%2Fm%2Fmodel.pkl", headers={})
    assert status == 404  # the unauthenticated upload wrote nothing


def test_the_bearer_scheme_is_case_insensitive(server):
    status, _, _ = call(
        server, "GET", "/storage/v1/b?project=p", headers={"Authorization": f"bearer {TOKEN}"}, auth=False
    )
    assert status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "0.0.0.0", ""])
def test_a_foreign_host_header_is_refused(server, host):
    status, _, body = call(server, "GET", "/storage/v1/b?project=p", host=host)
    assert status in (400, 403) and error_message(body)


def test_no_wildcard_cors_and_foreign_origins_refused(server):
    own = f"http://127.0.0.1:{server.port}"
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{server.port + 1}"):
        status, headers, body = call(server, "GET", "/storage/v1/b?project=p", headers={"Origin": origin})
        assert status == 403 and "origin" in error_message(body)
        assert not any(k.startswith("access-control-") for k in headers)
    for extra in ({}, {"Origin": own}):
        status, headers, _ = call(server, "GET", "/storage/v1/b?project=p", headers=extra)
        assert status == 200 and not any(k.startswith("access-control-") for k in headers), headers
    # a preflight is not answered with permission either
    status, headers, _ = call(
        server, "OPTIONS", "/storage/v1/b", headers={"Origin": "https://evil.example"}, auth=False
    )
    assert status in (401, 403, 405) and "access-control-allow-origin" not in headers


@pytest.mark.parametrize(
    "method, target",
    [
        ("POST", "/_internal/delete_all"),
        ("PUT", "/_internal/reseed"),
        ("PUT", "/_internal/config"),
        ("POST", "/batch/storage/v1"),
        ("GET", f"/{BUCKET}/anything"),
        ("POST", f"/storage/v1/b/{BUCKET}/notificationConfigs"),
        ("GET", "http://127.0.0.1/storage/v1/b"),
        ("BREW", "/storage/v1/b"),
    ],
)
def test_only_the_json_api_is_served(server, method, target):
    status, _, body = call(server, method, target, body=b"{}")
    assert status in (400, 404, 405), status
    assert "local stack" in error_message(body) or status != 404


# -- nothing outside the data dir, whatever the names --------------------------------------------------------

SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "a",
        "tmp",
        "outside",
        "keep.txt",
        "%2e%2e",
        ".%2e",
        "..\\..",
        "\x00",
        "\n",
        "é",
        "x" * 200,
    ]
)
HOSTILE_NAMES = st.lists(SEGMENTS, min_size=1, max_size=7).map("/".join) | st.text(max_size=20)
HOSTILE_BUCKETS = st.sampled_from(
    ["..", ".", "a/..", "..%2F..", "ab", "UPPER", "a..b", "goog-x", "/", "%2e%2e"]
) | (st.text(max_size=12))


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=HOSTILE_NAMES, how=st.sampled_from(["media", "multipart", "resumable", "path", "copy", "compose"])
)
def test_hostile_object_names_never_leave_the_data_dir(server, area, name, how):
    before = snapshot(area)
    if how == "media":
        call(server, "POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={q(name)}", body=b"x")
    elif how == "multipart":
        meta = json.dumps({"name": name}).encode()
        body = b"--B\r\nContent-Type: application/json\r\n\r\n" + meta + b"\r\n--B\r\n\r\nx\r\n--B--\r\n"
        headers = {"Content-Type": "multipart/related; boundary=B"}
        call(
            server,
            "POST",
            f"/upload/storage/v1/b/{BUCKET}/o?uploadType=multipart",
            headers=headers,
            body=body,
        )
    elif how == "resumable":
        body = json.dumps({"name": name, "NAME": name, "bucket": BUCKET}).encode()
        headers = {"Content-Type": "application/json"}
        status, h, _ = call(
            server,
            "POST",
            f"/upload/storage/v1/b/{BUCKET}/o?uploadType=resumable",
            headers=headers,
            body=body,
        )
        if status == 200 and "location" in h:
            target = urllib.parse.urlsplit(h["location"])
            call(server, "PUT", f"{target.path}?{target.query}", body=b"x")
    elif how == "path":
        for method in ("PUT", "PATCH", "DELETE", "GET"):
            call(server, method, f"/storage/v1/b/{BUCKET}/o/{name}", body=b"{}" if method != "GET" else None)
    elif how == "copy":
        call(server, "POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=src", body=b"x")
        call(server, "POST", f"/storage/v1/b/{BUCKET}/o/src/copyTo/b/{BUCKET}/o/{q(name)}", body=b"{}")
        call(server, "POST", f"/storage/v1/b/{BUCKET}/o/src/rewriteTo/b/{BUCKET}/o/{name}", body=b"{}")
    else:
        body = json.dumps({"sourceObjects": [{"name": name}], "destination": {"name": name}}).encode()
        call(server, "POST", f"/storage/v1/b/{BUCKET}/o/{q(name)}/compose", body=body)
    assert snapshot(area) == before
    assert (area / "outside" / "keep.txt").read_text() == "untouched"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bucket=HOSTILE_BUCKETS)
def test_hostile_bucket_names_never_leave_the_data_dir(server, area, bucket):
    from bpj import gcs_uri

    before = snapshot(area)
    status, _, body = call(
        server, "POST", "/storage/v1/b?project=p", body=json.dumps({"name": bucket}).encode()
    )
    if gcs_uri.bucket_problem(bucket) is not None:
        assert status == 400 and "bucket name" in error_message(body)
    call(server, "POST", f"/upload/storage/v1/b/{q(bucket)}/o?uploadType=media&name=x", body=b"x")
    call(server, "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name=x", body=b"x")
    call(server, "DELETE", f"/storage/v1/b/{q(bucket)}")
    assert snapshot(area) == before


def test_refusals_name_what_to_change(server):
    status, _, body = call(
        server, "POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=..%2Fx", body=b"x"
    )
    assert status == 400 and "'..' path segments" in error_message(body)
    status, _, body = call(server, "GET", f"/storage/v1/b/{BUCKET}/o?prefix=a&prefix=b")
    assert status == 400 and "more than once" in error_message(body)
    status, _, body = call(server, "POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media", body=b"x")
    assert status == 400 and "'name' query parameter" in error_message(body)


# -- HTTP framing -------------------------------------------------------------------------------------------


def test_bad_framing_is_refused_with_an_error_body(server):
    host = f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
    for head in (
        f"POST /upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=f HTTP/1.1\r\n{host}Content-Length: abc\r\n\r\n",
        f"POST /upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=f HTTP/1.1\r\n{host}Content-Length: 1\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        f"GET /storage/v1/b HTTP/1.1\r\n{host}X-Big: {'a' * 70000}\r\n\r\n",
        f"GET /{'a' * 20000} HTTP/1.1\r\n{host}\r\n",
        "GARBAGE\r\n\r\n",
    ):
        answer = raw(server, head.encode())
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1][:1] == b"4", answer[:200]
        assert error_message(rest.partition(b"\r\n\r\n")[2])
    assert call(server, "GET", "/storage/v1/b?project=p")[0] == 200


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=300_000), pieces=st.integers(1, 5), start=st.integers(0, 10))
def test_bodies_pass_through_whole_chunked_or_not(server, data, pieces, start):
    step = max(1, len(data) // pieces)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + step]), data[i : i + step]) for i in range(0, len(data), step)
    )
    head = (
        f"POST /upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=chunked HTTP/1.1\r\n"
        f"Host: localhost:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = raw(server, head.encode() + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    status, _, body = call(server, "GET", f"/storage/v1/b/{BUCKET}/o/chunked?alt=media")
    assert status == 200 and body == data
    if data:
        first = min(start, len(data) - 1)
        status, _, body = call(
            server,
            "GET",
            f"/download/storage/v1/b/{BUCKET}/o/chunked?alt=media",
            headers={"Range": f"bytes={first}-"},
        )
        assert status == 206 and body == data[first:]


# -- the official client goes through ------------------------------------------------------------------------


def test_google_cloud_storage_with_the_token(server):
    from google.cloud import storage
    from google.oauth2.credentials import Credentials

    client = storage.Client(
        project="p", credentials=Credentials(TOKEN), client_options={"api_endpoint": server.endpoint}
    )
    bucket = client.bucket(BUCKET)
    bucket.blob("official/small.txt").upload_from_string(b"hello")  # multipart
    big = os.urandom(3 << 20)
    blob = bucket.blob("official/big.bin", chunk_size=256 << 10)  # resumable, in chunks
    blob.upload_from_string(big)
    assert bucket.blob("official/big.bin").download_as_bytes() == big
    listed = list(client.list_blobs(BUCKET, prefix="official/"))
    assert all(b.media_link.startswith(f"{server.endpoint}/") for b in listed)  # links name the guard
    assert [b.download_as_bytes() for b in listed] == [big, b"hello"]
    assert sorted(b.name for b in listed) == [
        "official/big.bin",
        "official/small.txt",
    ]
    bucket.copy_blob(bucket.blob("official/small.txt"), bucket, "official/copy.txt")
    assert bucket.blob("official/copy.txt").download_as_bytes() == b"hello"
    bucket.blob("official/copy.txt").delete()
