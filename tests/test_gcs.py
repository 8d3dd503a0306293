"""The one Cloud Storage client (bpj/gcs.py) against a real fake-gcs-server behind the local stack's guard,
through a TCP proxy that cuts bodies or flips a byte, and against a scripted HTTP server on 127.0.0.1 for the
statuses a local server never sends: one error class per status, and retries as Cloud Storage advises."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import checksum, config, errors
from bpj.gcs import RETRY, Gcs, GcsObject
from bpj.gcs_uri import glob_regex
from bpj.local.gcs import GcsServer
from tests.gcs_faults import Answer, Proxy, Scripted, error

BUCKET = "bpj-gcs"
# RETRY's decisions with waits short enough for a test.
FAST = dataclasses.replace(RETRY, initial=0.001, maximum=0.01, deadline=3.0, unreachable_deadline=0.3)
HSETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    with GcsServer() as s:
        yield s


@pytest.fixture(scope="module")
def gcs(server):
    with Gcs(server.endpoint, upload_chunk_size=1 << 20) as client:
        client.create_bucket(BUCKET)
        yield client


@pytest.fixture
def base(gcs):
    return next_base()


def next_base() -> str:
    return f"gs://{BUCKET}/t{next(_names)}"


def media_headers(data: bytes, generation: str = "7") -> dict[str, str]:
    crc = base64.b64encode(checksum.crc32c(data).to_bytes(4, "big")).decode()
    return {"X-Goog-Hash": f"crc32c={crc}", "X-Goog-Generation": generation}


# -- objects ------------------------------------------------------------------------------------------


@HSETTINGS
@given(
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
        lambda n: n not in (".", "..")
    ),
    data=st.binary(max_size=2000),
)
def test_roundtrip_any_name(gcs, name, data):
    uri = f"{next_base()}/{name}"
    gcs.write(uri, data)
    assert gcs.read(uri) == data
    assert gcs.size(uri) == len(data)
    assert gcs.exists(uri)
    with gcs.open(uri) as f:
        assert f.read() == data
    assert uri in gcs.list(uri)
    (obj,) = [o for o in gcs.objects(BUCKET, uri.split("/", 3)[3]) if o.uri == uri]
    assert (obj.size, obj.crc32c) == (len(data), checksum.crc32c(data))
    assert gcs.download(obj) == data
    gcs.delete(uri)
    assert not gcs.exists(uri)


def test_special_names(gcs, base):
    for name in ["a b/c#d?e=f&g.jsonl", "ünï/cødé ✓.txt", "100%/x+y", "semi;colon"]:
        gcs.write(f"{base}/{name}", name.encode())
        assert gcs.read(f"{base}/{name}") == name.encode()


def test_large_object_streams_in_chunks_and_reads_in_ranges(gcs, base):
    data = os.urandom(5 * (1 << 20) + 12345)  # several resumable chunks of 1 MiB
    meta = gcs.write(f"{base}/big.bin", data)
    assert int(meta["size"]) == len(data)
    with gcs.open(f"{base}/big.bin") as f:
        first = f.read(100)
        assert first == data[:100]
        rest = b"".join(iter(lambda: f.read(300_000), b""))
    assert first + rest == data
    with gcs.writer(f"{base}/streamed.bin") as w:
        for i in range(0, len(data), 700_000):
            w.write(data[i : i + 700_000])
    assert gcs.read(f"{base}/streamed.bin") == data
    (obj,) = gcs.objects(BUCKET, f"{base}/streamed.bin".split("/", 3)[3])
    assert gcs.download(obj, chunk_size=1_000_000) == data
    assert gcs.fetch(obj, 1_000_000, 1_000_100)[0] == data[1_000_000:1_000_100]


def test_reader_closed_early_keeps_the_pool_usable(gcs, base):
    gcs.write(f"{base}/x", os.urandom(3 << 20))
    for _ in range(20):
        with gcs.open(f"{base}/x") as f:
            f.read(10)
    assert gcs.size(f"{base}/x") == 3 << 20


def test_wildcards(gcs, base):
    names = ["a/1.jsonl", "a/2.jsonl", "a/b/3.jsonl", "a/x.csv", "c/4.jsonl", "a1.jsonl"]
    for n in names:
        gcs.write(f"{base}/{n}", b"{}")
    got = lambda p: [u[len(base) + 1 :] for u in gcs.list(f"{base}/{p}")]  # noqa: E731
    assert got("a/*.jsonl") == ["a/1.jsonl", "a/2.jsonl"]
    assert got("a/**") == ["a/1.jsonl", "a/2.jsonl", "a/b/3.jsonl", "a/x.csv"]
    assert got("**.jsonl") == ["a/1.jsonl", "a/2.jsonl", "a/b/3.jsonl", "a1.jsonl", "c/4.jsonl"]
    assert got("a/?.jsonl") == ["a/1.jsonl", "a/2.jsonl"]
    assert got("a/[!1].jsonl") == ["a/2.jsonl"]
    assert got("a") == ["a/1.jsonl", "a/2.jsonl", "a/b/3.jsonl", "a/x.csv", "a1.jsonl"]  # a prefix
    assert glob_regex("x/*").fullmatch("x/y") and not glob_regex("x/*").fullmatch("x/y/z")


def test_listing_pages(gcs, base):
    for i in range(1203):
        gcs.write(f"{base}/p/{i:05d}", b"")
    assert len(gcs.list(f"{base}/p/")) == 1203


# -- errors -------------------------------------------------------------------------------------------

# What Cloud Storage means by each status, written out here apart from bpj/gcs.py's table; 418 and 507 stand
# for the statuses it does not name, 302 for a redirect the client does not follow.
STATUSES = {
    302: errors.Unknown,
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    408: errors.DeadlineExceeded,
    409: errors.AlreadyExists,
    410: errors.Aborted,
    411: errors.InvalidArgument,
    412: errors.FailedPrecondition,
    413: errors.InvalidArgument,
    416: errors.OutOfRange,
    418: errors.FailedPrecondition,
    429: errors.ResourceExhausted,
    499: errors.Cancelled,
    500: errors.Internal,
    501: errors.Unimplemented,
    502: errors.Unavailable,
    503: errors.Unavailable,
    504: errors.DeadlineExceeded,
    507: errors.Unavailable,
}
# Cloud Storage's retry strategy: 408, 429 and 5xx (but 501, which will not change).
RETRIED = {408, 429, 500, 502, 503, 504, 507}


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_each_status_is_one_error_class_and_retried_as_cloud_storage_advises(status):
    cls = STATUSES[status]
    with Scripted(error(status, "the server's words"), Answer(200, {"name": "o", "size": "3"})) as s:
        if status in RETRIED:
            assert Gcs(s.endpoint, retry=FAST).size("gs://bkt/o") == 3
            assert len(s.requests) == 2
        else:
            with pytest.raises(cls):
                Gcs(s.endpoint, retry=FAST).size("gs://bkt/o")
            assert len(s.requests) == 1
        s.answers = [error(status, "the server's words")]
        with pytest.raises(errors.ApiError) as info:
            Gcs(s.endpoint, retry=None).stat("gs://bkt/o")
    assert type(info.value) is cls
    assert info.value.rpc == "storage.objects.get"
    words = "gs://bkt/o was not found" if status == 404 else f"gs://bkt/o: HTTP {status}: the server's words"
    assert info.value.message == words


def test_statuses_from_the_real_server(server, gcs, base):
    with pytest.raises(errors.NotFound) as e:
        gcs.read(f"{base}/nope")
    assert e.value.message == f"{base}/nope was not found"
    with pytest.raises(errors.NotFound, match="nope was not found"):
        gcs.open(f"{base}/nope")
    with pytest.raises(errors.NotFound):
        gcs.delete(f"{base}/nope")
    with pytest.raises(errors.NotFound):
        gcs.list("gs://no-such-bucket-here/x")
    with pytest.raises(errors.NotFound, match="the bucket gs://no-such-bucket-here was not found"):
        gcs.write("gs://no-such-bucket-here/x", b"x")
    gcs.create_bucket(BUCKET)  # 409, and that is fine
    with pytest.raises(errors.AlreadyExists, match=f"gs://{BUCKET} already exists"):
        gcs.create_bucket(BUCKET, exists_ok=False)
    gcs.write(f"{base}/ten", b"0123456789")
    (obj,) = gcs.objects(BUCKET, f"{base}/ten".split("/", 3)[3])
    with pytest.raises(errors.OutOfRange):
        Gcs(server.endpoint).fetch(obj, 20, 30)
    with GcsServer(token="s3cret") as guarded:
        with pytest.raises(errors.Unauthenticated):
            Gcs(guarded.endpoint).create_bucket("needs-a-token")
        Gcs(guarded.endpoint, token="s3cret").create_bucket("needs-a-token")


def test_bad_uris_fail_before_any_request(gcs):
    for bad in ["s3://b/o", "gs://", "gs://B!/o", "gs://bucket"]:
        with pytest.raises(errors.InvalidArgument, match="gs://|s3://"):
            gcs.read(bad)
    with pytest.raises(errors.InvalidArgument, match="3-63 characters"):
        gcs.write("gs://in/x", b"x")


# -- retries ------------------------------------------------------------------------------------------


def test_retry_after_is_waited_for():
    with Scripted(error(503, **{"Retry-After": "1"}), Answer(200, {"size": "5"})) as s:
        started = time.monotonic()
        assert Gcs(s.endpoint, retry=FAST).size("gs://bkt/o") == 5
        assert time.monotonic() - started >= 1.0
        assert len(s.requests) == 2


def test_calls_that_may_have_taken_effect_are_sent_once():
    short = dataclasses.replace(FAST, deadline=0.3)
    with Scripted(error(503)) as s:
        gcs = Gcs(s.endpoint, retry=short)
        with pytest.raises(errors.Unavailable):
            gcs.delete("gs://bkt/o")
        with pytest.raises(errors.Unavailable):
            gcs.create_bucket("new-bucket", exists_ok=False)
        assert [r[0] for r in s.requests] == ["DELETE", "POST"]
        with pytest.raises(errors.Unavailable):
            gcs.create_bucket("new-bucket")  # a repeat answered 409 is fine: tried again
        with pytest.raises(errors.Unavailable):
            gcs.write("gs://bkt/o", b"same bytes")  # a repeat writes the same object: tried again
        assert len(s.requests) > 6


def test_an_endpoint_never_reached_is_given_up_soon():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gcs = Gcs(f"http://127.0.0.1:{port}", retry=dataclasses.replace(FAST, deadline=60.0))
    started = time.monotonic()
    with pytest.raises(errors.Unreachable, match="is the endpoint right"):
        gcs.stat("gs://bkt/o")
    assert time.monotonic() - started < 5


def test_settings_give_the_endpoint_and_the_token():
    with Scripted(Answer(200, {"size": "1"})) as s:
        config.init(gcs_endpoint=s.endpoint, token="t0k")
        try:
            assert Gcs().size("gs://bkt/o") == 1
        finally:
            config.reset()
    assert s.requests[0][2]["authorization"] == "Bearer t0k"
    assert s.requests[0][2]["accept-encoding"] == "identity"


# -- broken and corrupted bodies ----------------------------------------------------------------------


def test_bodies_cut_mid_way_resume_from_the_last_byte(server, gcs, base):
    data = os.urandom(1_000_000)
    uri = f"{base}/cut.bin"
    gcs.write(uri, data)
    proxy = Proxy(server.endpoint, cut_after=100_000, cuts=10**6)
    try:
        client = Gcs(proxy.endpoint, retry=FAST)
        assert client.read(uri) == data
        (obj,) = client.objects(BUCKET, uri.split("/", 3)[3])
        assert client.download(obj, chunk_size=300_000) == data
        with client.open(uri) as f:
            assert f.read() == data
        assert proxy.cuts_done >= 20  # 9 + 6 + 9 bodies cut
    finally:
        proxy.close()


def test_a_body_that_breaks_without_progress_is_given_up(server, gcs, base):
    uri = f"{base}/never.bin"
    gcs.write(uri, os.urandom(10_000))
    proxy = Proxy(server.endpoint, cut_after=0, cuts=10**6)
    try:
        client = Gcs(proxy.endpoint, retry=dataclasses.replace(FAST, deadline=0.5))
        with pytest.raises(errors.Unavailable, match="broke at byte 0"):
            client.read(uri)
        with client.open(uri) as f, pytest.raises(errors.Unavailable, match="broke at byte 0"):
            f.read()
    finally:
        proxy.close()


@pytest.mark.parametrize("how", ["read", "open"])
def test_a_resumed_read_is_pinned_to_the_generation_and_skips_what_it_has(how):
    data = os.urandom(10_000)
    whole = Answer(200, data, media_headers(data))
    # The first body breaks after 4000 bytes; the second answer ignores the Range and sends everything.
    with Scripted(dataclasses.replace(whole, send=4000), whole) as s:
        client = Gcs(s.endpoint, retry=FAST)
        if how == "read":
            assert client.read("gs://bkt/o") == data
        else:
            with client.open("gs://bkt/o") as f:
                assert f.read() == data
    (_, first, h1), (_, second, h2) = s.requests
    assert "generation" not in first and "range" not in h1
    assert "generation=7" in second
    assert h2["range"] == "bytes=4000-9999"


def test_a_flipped_byte_is_data_corruption_whichever_way_the_object_is_read(server, gcs, base):
    data = os.urandom(300_000)
    uri = f"{base}/flip.bin"
    gcs.write(uri, data)
    proxy = Proxy(server.endpoint, flip_at=50_000)  # in every media body
    try:
        client = Gcs(proxy.endpoint, retry=FAST)
        (obj,) = client.objects(BUCKET, uri.split("/", 3)[3])
        with pytest.raises(errors.DataCorruption, match="flip.bin: crc32c .*nothing of it was returned"):
            client.read(uri)
        with pytest.raises(errors.DataCorruption):
            client.download(obj)
        with pytest.raises(errors.DataCorruption):
            client.download(obj, chunk_size=100_000)
        with client.open(uri) as f, pytest.raises(errors.DataCorruption, match="the bytes read are not"):
            f.read()
        flipped = client.read(uri, verify=False)
        assert flipped != data and len(flipped) == len(data)
        with client.open(uri, verify=False) as f:
            assert f.read() == flipped
    finally:
        proxy.close()
    with pytest.raises(errors.DataCorruption, match="downloaded 300000 bytes, the object has 300001"):
        gcs.download(GcsObject(obj.bucket, obj.name, obj.size + 1, obj.generation))
