"""One object many times the reader's memory bound, against a real fake-gcs-server: read in a fresh process
whose peak RSS is sampled, corrupted in its middle, and stopped early, with the temporary file it goes
through."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import checksum
from bpj.errors import DataCorruption
from bpj.gcs import Gcs
from bpj.local.gcs import GcsServer
from bpj.outputs import read_gcs
from tests.gcs_faults import Proxy

BUCKET = "big-object-test"
_MiB = 1 << 20
BOUND = 8 * _MiB
BIG = f"gs://{BUCKET}/big/predictions.jsonl"
_names = itertools.count()


def row(i: int) -> dict:
    return {"instance": {"id": i}, "prediction": f"p{i}-" + "x" * (i % 400)}


def body(n: int) -> bytes:
    return "".join(json.dumps(row(i)) + "\n" for i in range(n)).encode()


@pytest.fixture(scope="module")
def server():
    with GcsServer() as s:
        gcs = Gcs(s.endpoint)
        gcs.create_bucket(BUCKET)
        data = body(330_000)  # about 80 MiB: ten times the bound
        assert len(data) > 9 * BOUND
        gcs.write(BIG, data)
        yield s


# The child warms up what any read costs once (pyarrow's JSON reader and memory pool, the client, the
# listing), then reads, checking batch by batch (never holding them all, no Python object per row) that the
# ids run 0, 1, 2... and the predictions have the lengths of row(i)'s; the CRC32C of all the predictions'
# bytes in a row tells the rest.
_CHILD = """
import json, sys
import numpy as np
from bpj import checksum
from bpj.gcs import GcsObject
from bpj.outputs import read_gcs
from bpj.outputs.decode import decode

endpoint, uri, bound, mode, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
decode(GcsObject("b", "x.jsonl", 9), b'{"a": 1}\\n')
reader = read_gcs(uri, endpoint=endpoint, max_bytes_in_flight=bound, ordered=True, progress=False)
reader.objects()

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

base = status("VmRSS:")
rows, wrong, crc = 0, 0, 0
if mode == "batches":
    for batch in reader.iter_batches():
        ids = np.arange(rows, rows + batch.num_rows)
        got = batch.column("instance").field("id")  # (read from its buffer: to_numpy() grows RSS here)
        got = np.frombuffer(got.buffers()[1], np.int64)[got.offset : got.offset + len(got)]
        wrong += not np.array_equal(got, ids)
        text = batch.column("prediction")
        offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
        digits = np.floor(np.log10(np.maximum(ids, 1))).astype(np.int64) + 1
        wrong += not np.array_equal(np.diff(offsets), 2 + digits + ids % 400)
        crc = checksum.crc32c(memoryview(text.buffers()[2])[offsets[0] : offsets[-1]], crc)
        rows += batch.num_rows
else:
    rows = reader.export(out)
print(json.dumps({"growth": status("VmHWM:") - base, "rows": rows, "wrong": wrong, "crc": crc}))
"""


@pytest.mark.parametrize("mode", ["batches", "export"])
def test_an_object_ten_times_the_bound_is_read_within_it(server, mode, tmp_path):
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, server.endpoint, BIG, str(BOUND), mode, str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (got["rows"], got["wrong"]) == (330_000, 0)
    if mode == "batches":
        crc = 0
        for i in range(330_000):
            crc = checksum.crc32c(row(i)["prediction"].encode(), crc)
        assert got["crc"] == crc
    # Held whole, the object alone would be ten times the bound; streamed, about twice it at the most.
    assert got["growth"] < 3 * BOUND, f"peak RSS grew by {got['growth'] / _MiB:.1f} MiB"
    if mode == "export":
        data = out.read_bytes()
        assert len(data) == int(Gcs(server.endpoint).stat(BIG)["size"]) and checksum.crc32c(
            data
        ) == checksum.crc32c(body(330_000))


def test_a_byte_flipped_in_its_middle_returns_no_row_of_it(server):
    gcs = Gcs(server.endpoint)
    directory = f"gs://{BUCKET}/flip"
    small = body(100)
    gcs.write(f"{directory}/predictions_0001.jsonl", small)  # shorter than flip_at: passes unharmed
    gcs.write(f"{directory}/predictions_0002.jsonl", body(100_000))  # about 23 MiB, in 1 MiB ranges
    # Every ranged body of the large object has a byte flipped after its first 512 KiB.
    proxy = Proxy(server.endpoint, flip_at=(512 << 10) + 7)
    try:
        reader = read_gcs(
            directory, endpoint=proxy.endpoint, ordered=True, max_workers=2, max_bytes_in_flight=BOUND
        )
        rows = 0
        with pytest.raises(
            DataCorruption, match=r"predictions_0002\.jsonl: crc32c .*nothing of it was returned"
        ):
            for batch in reader.iter_batches():
                rows += batch.num_rows
        assert rows == 100
        with pytest.raises(DataCorruption, match=r"predictions_0002\.jsonl"):
            reader.export(os.devnull, format="jsonl")
    finally:
        proxy.close()


# -- the temporary file -----------------------------------------------------------------------------------


def spool_files(directory: Path) -> list[str]:
    """Open file descriptors of this process to files in ``directory`` (unlinked or not)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return found


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def small_reader(server, directory: str, endpoint: str | None = None):
    return read_gcs(
        directory,
        endpoint=endpoint or server.endpoint,
        ordered=True,
        max_bytes_in_flight=64 << 10,
        max_workers=2,
    )


def test_the_temporary_file_is_gone_after_success_error_and_an_early_stop(server, temp_dir):
    gcs = Gcs(server.endpoint)
    directory = f"gs://{BUCKET}/spool"
    objects = [body(3000), body(2000)]  # about 700 and 460 KiB: spooled, with a 64 KiB bound
    for n, data in enumerate(objects, 1):
        gcs.write(f"{directory}/predictions_{n:04d}.jsonl", data)

    # While an object is read its file is open, already unlinked: nothing in the directory.
    it = small_reader(server, directory).iter_batches()
    first = next(it)
    assert first.num_rows and any(t.endswith("(deleted)") and "/bpj-" in t for t in spool_files(temp_dir))
    assert os.listdir(temp_dir) == []
    it.close()  # an early stop
    assert spool_files(temp_dir) == []

    # Success, every way of reading.
    reader = small_reader(server, directory)
    assert reader.to_arrow().to_pylist() == [row(i) for i in range(3000)] + [row(i) for i in range(2000)]
    assert [bytes(v) for _, v in reader.files()] == objects
    assert reader.export(temp_dir / "out.jsonl") == 5000
    assert (temp_dir / "out.jsonl").read_bytes() == b"".join(objects)
    assert spool_files(temp_dir) == [] and os.listdir(temp_dir) == ["out.jsonl"]

    # An error.
    proxy = Proxy(server.endpoint, flip_at=2000)  # in every 8 KiB range
    try:
        with pytest.raises(DataCorruption):
            small_reader(server, directory, proxy.endpoint).to_arrow()
    finally:
        proxy.close()
    assert spool_files(temp_dir) == [] and os.listdir(temp_dir) == ["out.jsonl"]


def test_export_of_spooled_objects_keeps_their_bytes_and_counts_rows(server, temp_dir):
    gcs = Gcs(server.endpoint)
    directory = f"gs://{BUCKET}/export"
    blank = b"\n  \n" * 30_000  # blank lines only: no rows, not written
    ragged = body(2000).replace(b"\n", b"\n\n", 50) + b'{"instance": {"id": -1}, "prediction": "last"}'
    for n, data in enumerate([ragged, blank], 1):
        gcs.write(f"{directory}/predictions_{n:04d}.jsonl", data)
    assert small_reader(server, directory).export(temp_dir / "out.jsonl") == 2001
    assert (temp_dir / "out.jsonl").read_bytes() == ragged + b"\n"


_line = st.one_of(
    st.builds(lambda i, n: json.dumps({"id": i, "p": "é" * n}), st.integers(0, 99), st.integers(0, 3000)),
    st.sampled_from(["", "  ", "\t", " \r"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(st.tuples(st.lists(_line, max_size=25), st.booleans()), min_size=1, max_size=3),
    bound=st.sampled_from([1, 5000, 30_000]),
)
def test_export_copies_the_same_lines_whether_an_object_is_spooled_or_not(server, files, bound):
    gcs = Gcs(server.endpoint)
    directory = f"gs://{BUCKET}/export-{next(_names)}"
    bodies = [("\n".join(lines) + ("\n" if newline else "")).encode() for lines, newline in files]
    for n, data in enumerate(bodies, 1):
        gcs.write(f"{directory}/predictions_{n:04d}.jsonl", data)
    outs = []
    for max_bytes in (bound, 1 << 30):  # spooled (most of them), and in memory
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
            reader = read_gcs(
                directory, endpoint=server.endpoint, ordered=True, max_bytes_in_flight=max_bytes
            )
            outs.append((reader.export(f.name), Path(f.name).read_bytes()))
    assert outs[0] == outs[1]
    rows, written = outs[0]
    assert rows == sum(1 for lines, _ in files for line in lines if line.strip())
    assert [json.loads(line) for line in written.splitlines() if line.strip()] == [
        json.loads(line) for lines, _ in files for line in lines if line.strip()
    ]


def test_no_temporary_directory_is_said_not_hidden(server, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    reader = small_reader(server, BIG)
    with pytest.raises(FileNotFoundError, match="missing"):
        next(reader.iter_batches())
