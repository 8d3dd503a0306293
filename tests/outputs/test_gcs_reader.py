"""The GCS output reader against a real fake-gcs-server (memory backend), directly and through a TCP proxy
on 127.0.0.1 that cuts connections mid-body or flips a byte of a body."""

from __future__ import annotations

import csv
import io
import itertools
import json
import multiprocessing
import operator
import threading

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj.errors import DataCorruption, NotFound
from bpj.gcs import Gcs
from bpj.local.gcs import GcsServer
from bpj.outputs import read_gcs
from bpj.outputs.gcs import DOWNLOAD_WORKERS
from bpj.outputs.reader import cores, unify
from tests.gcs_faults import Proxy

BUCKET = "outputs-test"
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    with GcsServer() as s:
        gcs = Gcs(s.endpoint)
        gcs.create_bucket(BUCKET)
        yield s


@pytest.fixture(scope="module")
def gcs(server):
    with Gcs(server.endpoint) as g:
        yield g


def fresh_dir() -> str:
    return f"gs://{BUCKET}/job{next(_names)}/prediction-model-2026-01-01T00:00:00.000Z"


def write_jsonl(gcs: Gcs, directory: str, files: list[list[dict]], stem: str = "predictions") -> None:
    for n, rows in enumerate(files, 1):
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        gcs.write(f"{directory}/{stem}_{n:04d}.jsonl", body)
    gcs.write(directory + "/", b"")


def gcs_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bpj-gcs")]


# -- generated output sets ----------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_float = st.floats(allow_nan=False, allow_infinity=False, width=64)
_predictions = {
    "scores": st.lists(_float, max_size=4),
    "label": st.fixed_dictionaries({"label": _text, "score": _float}),
    "text": _text,
    "number": st.integers(-(2**53), 2**53),
}


@st.composite
def output_sets(draw: st.DrawFn) -> list[list[dict]]:
    """Files of rows with one schema per set (as one model writes), with empty files, unicode, nulls and
    now and then a very long line."""
    prediction = _predictions[draw(st.sampled_from(sorted(_predictions)))]
    row = st.fixed_dictionaries(
        {
            "instance": st.fixed_dictionaries(
                {
                    "id": st.integers(0, 2**40),
                    "text": st.one_of(st.none(), _text),
                    "pad": st.sampled_from(["", "x" * 1000, "é" * 150_000]),
                }
            ),
            "prediction": prediction,
        }
    )
    return draw(st.lists(st.lists(row, max_size=12), max_size=6))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(files=output_sets())
def test_reader_returns_exactly_the_rows_written(server, gcs, files):
    directory = fresh_dir()
    write_jsonl(gcs, directory, files)
    expected = [r for rows in files for r in rows]
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True, max_workers=3, progress=False)
    assert reader.to_arrow().to_pylist() == expected
    assert list(reader.records()) == expected
    unordered = read_gcs(directory, endpoint=server.endpoint, progress=False).to_arrow().to_pylist()
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(unordered, key=key) == sorted(expected, key=key)
    got = dict(reader.files())
    assert list(got) == [f"{directory}/predictions_{n:04d}.jsonl" for n in range(1, len(files) + 1)]
    for n, rows in enumerate(files, 1):
        assert (
            got[f"{directory}/predictions_{n:04d}.jsonl"]
            == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        )


def test_small_budget_many_files_and_ranged_chunks(server, gcs):
    directory = fresh_dir()
    files = [
        [{"instance": {"id": f * 1000 + i}, "prediction": [i, f]} for i in range(f * 300)] for f in range(12)
    ]
    write_jsonl(gcs, directory, files)
    expected = [r for rows in files for r in rows]
    # Objects of up to ~80 KiB in 4 KiB ranges, at most 16 KiB reserved at a time.
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True, max_bytes_in_flight=16 << 10)
    reader.chunk_size = 4096
    assert reader.to_arrow().to_pylist() == expected
    assert [len(b) for _, b in reader.files()] == [o.size for o in reader.objects()]


def test_progress_counts_toward_the_listed_bytes(server, gcs, capsys):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"prediction": i} for i in range(n * 100)] for n in range(1, 5)])
    reader = read_gcs(directory, endpoint=server.endpoint, progress=True)
    total = sum(o.size for o in reader.objects())
    for read in (reader.to_arrow, lambda: list(reader.files())):
        read()
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.startswith(f"{directory}: ") and f"/{total / 1e6:,.1f} MB" in last and " 100% " in last


def test_prefix_glob_and_single_object(server, gcs):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"instance": 1, "prediction": 2}], [{"instance": 3, "prediction": 4}]])
    write_jsonl(
        gcs, directory, [[{"instance": 5, "error": {"status": "INTERNAL", "message": "x"}}]], "errors"
    )
    ep = server.endpoint
    assert read_gcs(directory + "/", endpoint=ep, ordered=True).to_arrow().column("instance").to_pylist() == [
        1,
        3,
    ]
    assert read_gcs(directory + "/*_0002.jsonl", endpoint=ep).to_arrow().column("instance").to_pylist() == [3]
    one = read_gcs(directory + "/predictions_0001.jsonl", endpoint=ep)
    assert one.to_arrow().to_pylist() == [{"instance": 1, "prediction": 2}]
    assert one.errors().to_arrow().column("instance").to_pylist() == [5]
    missing = fresh_dir()
    with pytest.raises(NotFound, match=f"NOT_FOUND on {missing}: no object or directory"):
        read_gcs(missing, endpoint=ep).to_arrow()


def test_csv_outputs(server, gcs):
    directory = fresh_dir()
    expected = []
    for n in range(1, 4):
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["a", "b", "prediction"])
        for i in range(n * 5):
            row = {"a": n * 100 + i, "b": f'naïve, "quoted" {i}', "prediction": json.dumps({"p": i / 4})}
            w.writerow(row.values())
            expected.append(row)
        gcs.write(f"{directory}/predictions_{n:04d}.csv", out.getvalue().encode())
    gcs.write(f"{directory}/predictions_0004.csv", b"a,b,prediction\n")  # header only
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True)
    assert reader.to_arrow().to_pylist() == expected


def test_errors_are_read_apart(server, gcs):
    directory = fresh_dir()
    predictions = [[{"instance": {"x": i}, "prediction": i * 2} for i in range(5)]]
    failures = [
        [{"instance": {"x": 9}, "error": {"status": "INVALID_ARGUMENT", "message": "bad x"}}],
        [{"instance": {"x": 10}, "error": {"status": "INTERNAL", "message": "boom"}}],
    ]
    write_jsonl(gcs, directory, predictions)
    write_jsonl(gcs, directory, failures, "errors")
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True)
    assert reader.to_arrow().to_pylist() == predictions[0]
    assert reader.errors().to_arrow().to_pylist() == failures[0] + failures[1]
    assert read_gcs(directory, endpoint=server.endpoint, kind="errors").to_arrow().num_rows == 2


def test_mixed_kinds_in_a_column_become_json_text(server, gcs):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"instance": 1, "prediction": 1}, {"instance": 2, "prediction": "two"}]])
    table = read_gcs(directory, endpoint=server.endpoint).to_arrow()
    assert table.to_pylist() == [{"instance": 1, "prediction": "1"}, {"instance": 2, "prediction": '"two"'}]


def test_export_formats(server, gcs, tmp_path):
    import pyarrow.parquet as pq

    directory = fresh_dir()
    files = [
        [{"instance": {"id": i}, "prediction": {"label": "é", "scores": [0.5, i]}} for i in range(n)]
        for n in (3, 4)
    ]
    write_jsonl(gcs, directory, files)
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True)
    expected = [r for rows in files for r in rows]
    assert reader.export(tmp_path / "out.jsonl") == 7
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == expected
    assert reader.export(tmp_path / "out.parquet") == 7
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == expected
    assert reader.export(tmp_path / "out.csv") == 7
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [json.loads(r["prediction"]) for r in rows] == [r["prediction"] for r in expected]
    try:
        import pandas  # noqa: F401
    except ImportError:  # pandas is optional
        return
    assert len(reader.to_pandas()) == 7


def test_partitions_in_other_processes(server, gcs):
    directory = fresh_dir()
    files = [
        [{"instance": {"id": f * 100 + i}, "prediction": [f, i]} for i in range(f * 7)] for f in range(5)
    ]
    write_jsonl(gcs, directory, files)
    reader = read_gcs(directory, endpoint=server.endpoint, ordered=True)
    parts = reader.partitions()
    assert len(parts) == 5
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        tables = pool.map(operator.methodcaller("read"), parts)
    assert unify(t for t in tables if t.num_rows).to_pylist() == reader.to_arrow().to_pylist()


# -- faults through a proxy -----------------------------------------------------------------------------


def test_connections_cut_mid_body_still_give_exactly_the_rows(server, gcs):
    directory = fresh_dir()
    files = [
        [{"instance": {"id": f * 10_000 + i, "t": "é" * 20}, "prediction": [i / 3]} for i in range(2000)]
        for f in range(4)
    ]
    write_jsonl(gcs, directory, files)
    proxy = Proxy(server.endpoint, cut_after=50_000, cuts=12)
    try:
        reader = read_gcs(directory, endpoint=proxy.endpoint, ordered=True, max_workers=2)
        assert reader.to_arrow().to_pylist() == [r for rows in files for r in rows]
        assert proxy.cuts_done >= 8
        reader.chunk_size = 30_000  # ranged reads cut as well
        proxy.cuts_done, proxy.cut_after = 0, 20_000
        assert [b for _, b in reader.files()] == [
            b for _, b in read_gcs(directory, endpoint=server.endpoint, ordered=True).files()
        ]
        assert proxy.cuts_done >= 4
    finally:
        proxy.close()


def test_a_flipped_byte_is_data_corruption(server, gcs):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"instance": i, "prediction": i} for i in range(500)] for _ in range(3)])
    proxy = Proxy(server.endpoint, flip_at=1234)
    try:
        reader = read_gcs(directory, endpoint=proxy.endpoint, ordered=True)
        with pytest.raises(DataCorruption, match=r"predictions_000[123]\.jsonl.*crc32c"):
            reader.to_arrow()
        with pytest.raises(DataCorruption):
            next(reader.files())
        with pytest.raises(DataCorruption):
            reader.partitions()[0].read()
    finally:
        proxy.close()
    assert not gcs_threads()


@pytest.mark.parametrize("how", ["batches", "files", "records"])
def test_stopping_early_leaves_no_worker_running(server, gcs, how):
    directory = fresh_dir()
    write_jsonl(
        gcs, directory, [[{"instance": {"id": i}, "prediction": [i]} for i in range(3000)] for _ in range(24)]
    )
    reader = read_gcs(directory, endpoint=server.endpoint, max_workers=4, max_bytes_in_flight=1 << 20)
    before = {t.ident for t in threading.enumerate()}
    it = {"batches": reader.iter_batches, "files": reader.files, "records": reader.records}[how]()
    for _ in it:
        assert gcs_threads()
        break
    del it
    assert not gcs_threads()
    assert {t.ident for t in threading.enumerate()} <= before


@pytest.mark.parametrize(
    "how, workers", [("files", DOWNLOAD_WORKERS), ("batches", cores()), ("records", cores())]
)
def test_by_default_downloads_take_a_few_threads_and_decoding_one_per_core(server, gcs, how, workers):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"instance": {"id": i}, "prediction": [i]}] for i in range(12)])
    # A bound of one byte keeps the feeder waiting on the consumer, so every worker is still there.
    reader = read_gcs(directory, endpoint=server.endpoint, max_bytes_in_flight=1)
    it = {"batches": reader.iter_batches, "files": reader.files, "records": reader.records}[how]()
    next(it)
    assert len([t for t in gcs_threads() if t.name != "bpj-gcs-feed"]) == workers
    it.close()
    assert not gcs_threads()


def test_worker_error_stops_every_worker(server, gcs):
    directory = fresh_dir()
    write_jsonl(gcs, directory, [[{"instance": i, "prediction": i}] for i in range(10)])
    gcs.write(f"{directory}/predictions_0005.jsonl", b"{not json\n")
    with pytest.raises(Exception, match="predictions_0005"):
        read_gcs(directory, endpoint=server.endpoint).to_arrow()
    assert not gcs_threads()


def test_lists_that_start_with_null_read_as_written(server, gcs):
    # pyarrow's JSON reader alone reads these two rows as [1, 2] and [0].
    directory = fresh_dir()
    rows = [{"instance": 1, "prediction": [None, 1]}, {"instance": 2, "prediction": [2]}]
    write_jsonl(gcs, directory, [rows])
    assert read_gcs(directory, endpoint=server.endpoint).to_arrow().to_pylist() == rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
    chunk=st.sampled_from([512, 1000, 4096]),
    bound=st.sampled_from([1, 3000, 20_000]),
)
def test_an_object_larger_than_the_bound_is_decoded_in_slices_of_whole_lines(
    server, gcs, lengths, chunk, bound
):
    # One object (as a Gemini job writes its predictions.jsonl) larger than the bound: downloaded in ranges
    # into a temporary file, checked by its combined crc32c, then decoded a slice of lines at a time: lines
    # longer than a slice, and slice cuts at every place, still give exactly the rows written, in order.
    directory = fresh_dir()
    rows = [{"instance": {"id": i}, "prediction": "é" * n} for i, n in enumerate(lengths)]
    write_jsonl(gcs, directory, [rows])
    reader = read_gcs(directory, endpoint=server.endpoint, max_bytes_in_flight=bound, progress=False)
    reader.chunk_size = chunk
    batches = list(reader.iter_batches())
    assert [r for b in batches for r in b.to_pylist()] == rows
    size = reader.objects()[0].size
    if size * 3 > bound and size > max(chunk, bound // 3) + 3000 * 2 + 100:
        assert len(batches) > 1
    assert not gcs_threads()


def test_slices_of_one_object_may_differ_in_kind(server, gcs):
    directory = fresh_dir()
    rows = [{"instance": i, "prediction": i} for i in range(200)] + [
        {"instance": i, "prediction": f"p{i}"} for i in range(200, 400)
    ]
    write_jsonl(gcs, directory, [rows])
    reader = read_gcs(directory, endpoint=server.endpoint, max_bytes_in_flight=3000, ordered=True)
    reader.chunk_size = 1000
    assert [b.schema.field("prediction").type for b in reader.iter_batches()][::-1][0] == pa.string()
    table = reader.to_arrow()
    assert table.column("instance").to_pylist() == list(range(400))
    assert [json.loads(p) for p in table.column("prediction").to_pylist()] == [r["prediction"] for r in rows]
