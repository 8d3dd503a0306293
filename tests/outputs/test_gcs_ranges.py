"""GCS partitions by byte range against a real fake-gcs-server: every line decoded once whatever the cuts,
pieces that combine to the object's crc32c, a rewritten object caught, and partitions read in fresh
processes (their token and TLS root from the environment or the partition, never pickled secrets)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import operator
import pickle
import socket
import ssl
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import checksum
from bpj.errors import DataCorruption, NotFound, Unavailable, UsageError
from bpj.gcs import Gcs
from bpj.local.gcs import GcsServer
from bpj.local.servers.tls import self_signed_cert
from bpj.outputs import read_gcs
from bpj.outputs.gcs_partitions import GcsPartition, owned_lines
from bpj.outputs.pieces import check
from bpj.outputs.reader import unify
from tests.gcs_faults import pipe

BUCKET = "ranges-test"
TOKEN = "ranges-test-token-a8f3"
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    # With a token, as a local stack started with one: no partition may carry it, workers take it from
    # their own environment (BPJ_TOKEN).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BPJ_TOKEN", TOKEN)
        with GcsServer(token=TOKEN) as s:
            Gcs(s.endpoint).create_bucket(BUCKET)
            yield s


@pytest.fixture(scope="module")
def gcs(server):
    with Gcs(server.endpoint) as g:
        yield g


def fresh_uri() -> str:
    return f"gs://{BUCKET}/job{next(_names)}/predictions.jsonl"


def rows_of(lengths: list[int]) -> list[dict]:
    return [{"instance": {"id": i}, "prediction": "é" * n} for i, n in enumerate(lengths)]


def body(rows: list[dict], *, blank_every: int = 0, trailing_newline: bool = True) -> bytes:
    lines = []
    for i, r in enumerate(rows):
        lines.append(json.dumps(r, ensure_ascii=False))
        if blank_every and i % blank_every == 0:
            lines.append("")
    text = "\n".join(lines) + ("\n" if trailing_newline and lines else "")
    return text.encode()


def read_all(parts: list[GcsPartition]) -> tuple[list[dict], list]:
    got = [p.read_piece() for p in parts]
    tables = [t for t, _ in got if t.num_rows]
    return (unify(tables).to_pylist() if tables else []), [piece for _, piece in got]


# -- the line rule, on raw bytes ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=1, max_size=3000).map(lambda b: b.replace(b"\x00", b"\n")), cuts=st.data())
def test_ranges_own_the_lines_that_start_in_them(server, gcs, data, cuts):
    uri = fresh_uri()
    gcs.write(uri, data)
    (obj,) = gcs.objects(BUCKET, uri.split("/", 3)[3])
    # Cuts anywhere, and cuts right at line starts and ends (where an off-by-one would show).
    anywhere = st.integers(1, max(1, len(data) - 1))
    edges = [i + d for i, b in enumerate(data) if b == 0x0A for d in (0, 1)]
    cut = st.one_of(anywhere, st.sampled_from(edges)) if edges else anywhere
    inner = sorted(set(cuts.draw(st.lists(cut, max_size=8))) - {0, len(data)})
    bounds = [0, *inner, len(data)]
    got = [owned_lines(gcs, obj, s, e) for s, e in itertools.pairwise(bounds)]
    # Together the ranges give the object, byte for byte, each exactly once...
    assert b"".join(d for _, d in got) == data
    pos = 0
    for (s, e), (first, d) in zip(itertools.pairwise(bounds), got, strict=True):
        if d:
            assert first == pos
            pos += len(d)
            # ...each a run of whole lines whose first starts in the range (at 0 or after a newline)...
            assert s <= first < e and (first == 0 or data[first - 1 : first] == b"\n")
            assert first + len(d) == len(data) or d.endswith(b"\n")
        else:
            # ...and a range that gives nothing has no line start in it.
            assert b"\n" not in data[max(0, s - 1) : e - 1] and s > 0


# -- rows and pieces ------------------------------------------------------------------------------------


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    lengths=st.lists(st.one_of(st.integers(0, 100), st.integers(1000, 5000)), min_size=1, max_size=30),
    blank_every=st.sampled_from([0, 1, 4]),
    trailing_newline=st.booleans(),
    ranges=st.integers(1, 16),
)
def test_ranges_read_apart_give_the_rows_of_the_whole_object(
    server, gcs, lengths, blank_every, trailing_newline, ranges
):
    uri = fresh_uri()
    rows = rows_of(lengths)
    data = body(rows, blank_every=blank_every, trailing_newline=trailing_newline)
    max_bytes = -(-len(data) // ranges)  # lines longer than a range, and ranges cut anywhere
    gcs.write(uri, data)
    reader = read_gcs(uri, endpoint=server.endpoint, progress=False)
    (whole,) = reader.partitions()
    assert whole.read().to_pylist() == rows
    parts = reader.partitions(max_bytes=max_bytes)
    assert len(parts) == max(1, -(-len(data) // max_bytes))
    got, pieces = read_all(parts)
    assert got == rows
    check(pieces)
    for p in pieces:  # the bytes CRC'd are the object's bytes the piece names
        assert p.crc == checksum.crc32c(data[p.start : p.end])
        assert (p.uri, p.size, p.crc32c) == (uri, len(data), checksum.crc32c(data))
    assert sum(p.end - p.start for p in pieces) == len(data)


def test_a_range_read_twice_gives_the_same_rows_and_piece(server, gcs):
    uri = fresh_uri()
    gcs.write(uri, body(rows_of([50 * (i % 7) for i in range(400)])))
    parts = read_gcs(uri, endpoint=server.endpoint).partitions(max_bytes=5000)
    assert len(parts) > 3
    for p in parts:
        (t1, p1), (t2, p2) = p.read_piece(), p.read_piece()
        assert t1.to_pylist() == t2.to_pylist() and p1 == p2


def test_a_range_whose_line_started_before_it_owns_nothing(server, gcs):
    uri = fresh_uri()
    rows = rows_of([10, 20_000, 10])
    gcs.write(uri, body(rows))
    parts = read_gcs(uri, endpoint=server.endpoint).partitions(max_bytes=4000)
    got = [p.read_piece() for p in parts]
    empty = [(t, piece) for t, piece in got if not t.num_rows]
    assert empty and all(piece.start == piece.end and piece.crc == 0 for _, piece in empty)
    check(piece for _, piece in got)
    assert unify(t for t, _ in got if t.num_rows).to_pylist() == rows


def test_read_on_a_range_says_to_use_read_piece_and_check(server, gcs):
    uri = fresh_uri()
    rows = rows_of([100] * 50)
    gcs.write(uri, body(rows))
    reader = read_gcs(uri, endpoint=server.endpoint)
    parts = reader.partitions(max_bytes=1000)
    with pytest.raises(UsageError, match=r"read_piece\(\).*bpj\.outputs\.pieces\.check\(\)"):
        parts[1].read()
    # A range that is the whole object checks itself.
    size = reader.objects()[0].size
    assert dataclasses.replace(parts[0], end=size).read().to_pylist() == rows
    assert reader.partitions(max_bytes=size)[0].read().to_pylist() == rows
    with pytest.raises(UsageError, match="max_bytes"):
        reader.partitions(max_bytes=0)


def test_csv_objects_stay_whole(server, gcs):
    directory = f"gs://{BUCKET}/csv{next(_names)}"
    text = "a,b\n" + "".join(f'{i},"line\nbreak {i}"\n' for i in range(300))
    gcs.write(f"{directory}/predictions_0001.csv", text.encode())
    reader = read_gcs(directory, endpoint=server.endpoint)
    (part,) = reader.partitions(max_bytes=100)
    table, piece = part.read_piece()
    assert table.num_rows == 300 and (piece.start, piece.end) == (0, len(text.encode()))
    check([piece])


def test_every_range_reads_the_generation_listed(server, gcs):
    uri = fresh_uri()
    gcs.write(uri, body(rows_of([20] * 200)))
    parts = read_gcs(uri, endpoint=server.endpoint).partitions(max_bytes=2000)
    gcs.write(uri, body(rows_of([30] * 200)))  # overwritten after the listing: a new generation
    for p in (parts[0], parts[3], parts[-1]):
        with pytest.raises(NotFound, match=uri):
            p.read_piece()


# -- corruption -----------------------------------------------------------------------------------------


def test_an_object_rewritten_under_its_old_crc32c_fails_the_check_naming_it(server, gcs):
    uri = fresh_uri()
    rows = rows_of([30 * (i % 11) for i in range(500)])
    data = body(rows)
    gcs.write(uri, data)
    reader = read_gcs(uri, endpoint=server.endpoint)
    (listed,) = reader.objects()
    # The same name rewritten with one byte flipped inside a value ("é" -> "ê": still valid JSON), read
    # as if its listing still said the old crc32c.
    at = data.index("é".encode(), len(data) // 2)
    flipped = bytearray(data)
    flipped[at + 1] ^= 0x01
    gcs.write(uri, bytes(flipped))
    (rewritten,) = read_gcs(uri, endpoint=server.endpoint).objects()
    stale = dataclasses.replace(rewritten, crc32c=listed.crc32c)
    parts = [dataclasses.replace(p, object=stale) for p in reader.partitions(max_bytes=3000)]
    got, pieces = read_all(parts)
    assert len(got) == len(rows)  # every range decodes: only the pieces together can tell
    with pytest.raises(DataCorruption, match=rf"{uri} \(generation {rewritten.generation}\): the crc32c"):
        check(pieces)
    whole = dataclasses.replace(parts[0], start=0, end=None)
    with pytest.raises(DataCorruption, match=uri):
        whole.read()
    with pytest.raises(DataCorruption, match=uri):
        whole.read_piece()


# -- in other processes ---------------------------------------------------------------------------------


def test_partitions_pickle_without_secrets_and_read_the_same_in_fresh_processes(server, gcs):
    directory = f"gs://{BUCKET}/spawn{next(_names)}"
    files = [rows_of([(7 * i + f) % 200 for i in range(f * 150)]) for f in range(4)]
    for n, rows in enumerate(files, 1):
        gcs.write(f"{directory}/predictions_{n:04d}.jsonl", body(rows))
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True)
    parts = reader.partitions(max_bytes=8000)
    assert len(parts) > len(files)
    for p in parts:
        blob = pickle.dumps(p)
        assert TOKEN.encode() not in blob and b"Bearer" not in blob
        assert pickle.loads(blob) == p
    here = [p.read_piece() for p in parts]
    # Spawned workers start from nothing: their client comes from BPJ_TOKEN in their own environment.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        there = pool.map(operator.methodcaller("read_piece"), parts)
    assert [piece for _, piece in there] == [piece for _, piece in here]
    assert [t.to_pylist() for t, _ in there] == [t.to_pylist() for t, _ in here]
    check(piece for _, piece in there)
    assert unify(t for t, _ in there if t.num_rows).to_pylist() == [r for rows in files for r in rows]


class TlsRelay:
    """TLS on 127.0.0.1 in front of a plaintext server, with a self-signed certificate (written to
    ``root``): what a worker must trust through the partition's TLS root."""

    def __init__(self, upstream: str, root: Path) -> None:
        key, cert = self_signed_cert(("127.0.0.1",))
        (root / "key.pem").write_bytes(key)
        (root / "cert.pem").write_bytes(cert)
        self.cert = str(root / "cert.pem")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert, str(root / "key.pem"))
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        upstream = socket.create_connection(self._upstream)
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self._listener.close()


def test_a_partition_carries_its_tls_root_to_a_fresh_process(tmp_path, monkeypatch):
    with GcsServer(guarded=False) as bare:
        relay = TlsRelay(bare.endpoint, tmp_path)
        try:
            monkeypatch.delenv("BPJ_TOKEN", raising=False)
            monkeypatch.setenv("BPJ_TLS_ROOT_CERT", relay.cert)
            gcs = Gcs(relay.endpoint)
            gcs.create_bucket(BUCKET)
            uri = f"gs://{BUCKET}/tls/predictions.jsonl"
            rows = rows_of([40] * 300)
            gcs.write(uri, body(rows))
            parts = read_gcs(uri, endpoint=relay.endpoint).partitions(max_bytes=4000)
            assert {p.tls_root for p in parts} == {relay.cert}
            # The workers' environment names no TLS root: what they trust comes with the partition.
            monkeypatch.delenv("BPJ_TLS_ROOT_CERT")
            untrusted = [dataclasses.replace(p, tls_root=None) for p in parts[:1]]
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                there = pool.map(operator.methodcaller("read_piece"), parts)
                with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
                    pool.map(operator.methodcaller("read_piece"), untrusted)
            check(piece for _, piece in there)
            assert unify(t for t, _ in there if t.num_rows).to_pylist() == rows
        finally:
            relay.close()
