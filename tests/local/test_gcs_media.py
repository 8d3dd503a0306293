"""Downloads the GCS guard serves from the engine's files answer exactly as fake-gcs-server itself does: the
same statuses, bytes and headers for every range, and the engine's answer wherever the guard steps aside."""

from __future__ import annotations

import http.client
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj.local.gcs_media import open_media, parse_range

BUCKET = "media-test"
COMPARED = ("content-length", "content-range", "content-type", "x-goog-hash", "x-goog-generation", "etag")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from bpj.gcs import Gcs
    from bpj.local.gcs import GcsServer

    root = tmp_path_factory.mktemp("media")
    with GcsServer(root / "guarded") as guarded, GcsServer(root / "bare", guarded=False) as bare:
        clients = [Gcs(guarded.endpoint), Gcs(bare.endpoint)]
        for c in clients:
            c.create_bucket(BUCKET)
        yield guarded, bare, clients


def get(server, target, headers=()):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", target, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


RANGES = st.one_of(
    st.none(),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 3000), st.integers(0, 3000)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 3000)),
    st.builds(lambda n: f"bytes=-{n}", st.integers(0, 3000)),
    st.sampled_from(["bytes=0-1,5-6", "bytes=-", "items=0-1", "bytes=a-b"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=2500),
    rng=RANGES,
    route=st.sampled_from(["json", "download"]),
    fresh=st.booleans(),
)
def test_served_from_files_exactly_as_the_engine_answers(servers, data, rng, route, fresh):
    guarded, bare, clients = servers
    name = "dir/obj.bin" if not fresh else f"fresh/{len(data)}-{rng}.bin"
    for c in clients:
        c.write(f"gs://{BUCKET}/{name}", data, content_type="application/jsonl")
    quoted = name.replace("/", "%2F")
    target = (
        f"/storage/v1/b/{BUCKET}/o/{quoted}?alt=media"
        if route == "json"
        else f"/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media"
    )
    headers = [("Range", rng)] if rng else []
    ours, theirs = get(guarded, target, headers), get(bare, target, headers)
    assert ours[0] == theirs[0], (rng, ours[:2], theirs[:2])
    if ours[0] < 300:
        assert ours[2] == theirs[2]
        for key in COMPARED:
            if key != "x-goog-generation":  # two engines, two clocks
                assert ours[1].get(key) == theirs[1].get(key), key
        assert "access-control-allow-origin" not in ours[1]


def test_a_generation_other_than_the_current_one_is_the_engines_answer(servers):
    guarded, _, clients = servers
    clients[0].write(f"gs://{BUCKET}/gen.bin", b"one")
    meta = clients[0].stat(f"gs://{BUCKET}/gen.bin")
    status, _, body = get(
        guarded, f"/storage/v1/b/{BUCKET}/o/gen.bin?alt=media&generation={meta['generation']}"
    )
    assert (status, body) == (200, b"one")
    status, _, _ = get(guarded, f"/storage/v1/b/{BUCKET}/o/gen.bin?alt=media&generation=1")
    assert status == 404


def test_a_missing_object_is_the_engines_404(servers):
    guarded, bare, _ = servers
    assert get(guarded, f"/storage/v1/b/{BUCKET}/o/nothing?alt=media")[0] == 404
    assert get(bare, f"/storage/v1/b/{BUCKET}/o/nothing?alt=media")[0] == 404


def test_files_are_opened_without_following_links_and_checked_against_the_metadata(tmp_path):
    (tmp_path / "root" / "b" / "d").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"secret!")
    (tmp_path / "root" / "b" / "d" / "real").write_bytes(b"public!")
    os.symlink(tmp_path / "secret", tmp_path / "root" / "b" / "d" / "link")
    os.symlink(tmp_path, tmp_path / "root" / "b" / "up")
    meta = {"size": "7", "generation": "1"}
    root = str(tmp_path / "root")
    media = open_media(root, "b", "d/real", meta)
    assert media is not None and os.pread(media.fd, 10, 0) == b"public!"
    media.close()
    assert open_media(root, "b", "d//real", meta) is not None  # Go's Join folds empty segments
    assert open_media(root, "b", "d/link", meta) is None
    assert open_media(root, "b", "up/secret", meta) is None
    assert open_media(root, "b", "d/real", {**meta, "size": "8"}) is None  # not the object the engine means
    gzipped = {**meta, "contentEncoding": "gzip"}
    assert open_media(root, "b", "d/real", gzipped) is None  # the engine transcodes
    assert open_media(root, "b", "d/../d/real", meta) is None
    assert open_media(root, "b", "d", meta) is None  # a directory


@given(size=st.integers(0, 50), header=st.text("bytes=0123456789-,", max_size=14))
def test_ranges_are_single_and_inside_the_object_or_left_to_the_engine(size, header):
    span = parse_range(header, size)
    if span not in (None, False):
        first, last = span
        assert 0 <= first <= last < size
    assert parse_range(None, size) is None


def test_one_connection_goes_on_after_every_kind_of_answer(servers):
    # A client reuses its connection after any answer that did not say close: an unsatisfiable range
    # (the engine's 416), a miss, a served file, metadata. Each next request on it gets its answer.
    guarded, _, clients = servers
    clients[0].write(f"gs://{BUCKET}/keep.bin", b"0123456789")
    media = f"/download/storage/v1/b/{BUCKET}/o/keep.bin?alt=media"
    asks = [
        (media, {"Range": "bytes=50-60"}, 416),
        (media, {}, 200),
        (f"/storage/v1/b/{BUCKET}/o/missing.bin?alt=media", {}, 404),
        (media, {"Range": "bytes=2-3"}, 206),
        (f"/storage/v1/b/{BUCKET}/o/keep.bin", {}, 200),
        (media, {"Range": "bytes=99-"}, 416),
        (media, {"Range": "bytes=0-0"}, 206),
    ]
    conn = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=30)
    try:
        for target, headers, status in asks * 2:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status, (target, headers)
            assert not resp.will_close, "the guard said close"
    finally:
        conn.close()
