"""bpj.local.gcs_routes: what the GCS guard forwards is exactly what it checked."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpj import gcs_uri
from bpj.local.gcs_routes import Refused, canonical_body, route

BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9_-]{1,20}[a-z0-9]", fullmatch=True).filter(
    lambda b: gcs_uri.bucket_problem(b) is None
)
NAMES = st.lists(
    st.sampled_from(["a", "é", "..", ".", "", "%2e", "x y", "\x00", "~", "a%2Fb", "?", "#"]), max_size=5
).map("/".join)


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@given(bucket=BUCKETS, name=NAMES, raw_slashes=st.booleans())
def test_an_object_route_takes_the_name_apart_as_checked_and_rebuilds_it_whole(bucket, name, raw_slashes):
    encoded = "/".join(q(p) for p in name.split("/")) if raw_slashes else q(name)
    target = f"/storage/v1/b/{bucket}/o/{encoded}?alt=media"
    if not name:  # no object: the bucket's listing
        assert route("GET", target).kind == "objects"
        return
    if gcs_uri.object_problem(name) is not None:
        with pytest.raises(Refused) as e:
            route("GET", target)
        assert e.value.status in (400, 404)
        return
    r = route("GET", target)
    assert r.media == (bucket, name, "")
    assert r.target == f"/storage/v1/b/{bucket}/o/{q(name)}?alt=media"
    assert route("GET", r.target) == r  # the rebuilt request reads the same


@given(
    name=NAMES | st.sampled_from(["ok-bucket", "Bad..b", "goog-x"]),
    key=st.sampled_from(
        ["name", "NAME", "Name", "bucket", "BUCKET", "buc\u212aet"]
    ),  # Kelvin sign folds to k
)
def test_json_metadata_names_are_checked_under_any_spelling_go_would_accept(name, key):
    r = route("POST", "/upload/storage/v1/b/bucket-a/o?uploadType=resumable")
    body = f'{{"{key}": {json_string(name)}, "contentType": "text/plain"}}'.encode()
    check = gcs_uri.bucket_problem if key.casefold() == "bucket" else gcs_uri.object_problem
    if check(name) is not None:
        with pytest.raises(Refused):
            canonical_body(r, "application/json", body)
    else:
        out, content_type = canonical_body(r, "text/plain", body)
        assert content_type.startswith("application/json") and out


def json_string(value: str) -> str:
    import json

    return json.dumps(value)


@pytest.mark.parametrize(
    "method, target, status",
    [
        ("GET", "/_internal/healthcheck", 404),
        ("PUT", "/storage/v1/b/bucket-a", 405),
        ("GET", "/storage/v1/b/bucket-a/o?prefix=a&prefix=b", 400),
        ("GET", "/storage/v1/b/bucket-a/o?X-Goog-Algorithm=x", 400),
        ("POST", "/upload/storage/v1/b/bucket-a/o?uploadType=media", 400),
        ("POST", "/upload/storage/v1/b/bucket-a/o?uploadType=other&name=x", 400),
        ("GET", "/storage/v1/b/Bad_Bucket/o", 400),
        ("GET", "/storage/v1/b/bucket-a/o/%ff", 400),
        ("GET", "storage/v1/b", 400),
    ],
)
def test_refusals(method, target, status):
    with pytest.raises(Refused) as e:
        route(method, target)
    assert e.value.status == status and e.value.message


def test_multipart_bodies_are_reassembled_from_what_was_checked():
    r = route("POST", "/upload/storage/v1/b/bucket-a/o?uploadType=multipart")
    body = b'--B\r\nContent-Type: application/json\r\n\r\n{"name": "ok/x"}\r\n--B\r\nContent-Type: text/plain\r\n\r\ndata--B\r\n--B--\r\n'
    with pytest.raises(Refused):  # the boundary appears inside the data: three parts, not two
        canonical_body(r, "multipart/related; boundary=B", body)
    body = b'--B\r\nContent-Type: application/json\r\n\r\n{"name": "ok/x"}\r\n--B\r\nContent-Type: text/plain\r\n\r\ndata\r\n--B--\r\n'
    out, content_type = canonical_body(r, 'multipart/related; boundary="B"', body)
    boundary = content_type.split("boundary=")[1].encode()
    assert out.count(b"--" + boundary) == 3 and b'{"name":"ok/x"}' in out and b"\r\n\r\ndata\r\n" in out
    bad = body.replace(b"ok/x", b"../x")
    with pytest.raises(Refused, match="path segments"):
        canonical_body(r, "multipart/related; boundary=B", bad)
