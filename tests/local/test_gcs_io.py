"""The local GCS server, the instance readers and the output sinks, against a real fake-gcs-server (memory
backend) and a table store under tmp_path. The client itself: tests/test_gcs.py."""

from __future__ import annotations

import base64
import csv
import datetime
import gzip
import io
import itertools
import json
import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj.gcs import Gcs
from bpj.local.gcs import GcsServer
from bpj.local.inputs import Instance, read_instances
from bpj.local.sinks import BigQuerySink, GcsSink

pa = pytest.importorskip("pyarrow")
store_module = pytest.importorskip("bpj.local.bigquery.store")

HSETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CREATED = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    with GcsServer() as s:
        yield s


@pytest.fixture(scope="module")
def gcs(server):
    with Gcs(server.endpoint, upload_chunk_size=1 << 20) as client:
        client.create_bucket("bpj-in")
        yield client


@pytest.fixture
def base(gcs):
    """A fresh gs:// folder for one test (or one hypothesis example, via next_base)."""
    return next_base()


def next_base() -> str:
    return f"gs://bpj-in/t{next(_names)}"


@pytest.fixture
def tables(tmp_path):
    return store_module.TableStore(tmp_path / "bq")


def gcs_input(fmt: str, *uris: str):
    return types.BatchPredictionJob.InputConfig(
        instances_format=fmt, gcs_source=types.GcsSource(uris=list(uris))
    )


def config(**kw):
    return types.BatchPredictionJob.InstanceConfig(**kw)


def read_all(gcs, input_config, instance_config=None, *, tables=None, batch_size=7) -> list[Instance]:
    batches = list(
        read_instances(
            input_config, instance_config or config(), gcs=gcs, tables=tables, batch_size=batch_size
        )
    )
    assert all(0 < len(b) <= batch_size for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    out = [i for b in batches for i in b]
    assert [i.index for i in out] == list(range(len(out)))
    return out


def tfrecord(data: bytes, *, corrupt_data: bool = False, corrupt_length: bool = False) -> bytes:
    import google_crc32c

    def masked(b: bytes) -> int:
        crc = google_crc32c.value(b)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    length = struct.pack("<Q", len(data))
    lcrc = masked(length) ^ (1 if corrupt_length else 0)
    dcrc = masked(data) ^ (1 if corrupt_data else 0)
    return length + struct.pack("<I", lcrc) + data + struct.pack("<I", dcrc)


# -- the server ---------------------------------------------------------------------------------------


def test_server_answers_and_stops():
    with GcsServer() as s:
        assert s.running and s.endpoint.startswith("http://127.0.0.1:")
        Gcs(s.endpoint).create_bucket("probe")
    assert not s.running


def test_binary_refuses_other_platforms(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    with pytest.raises(errors.FailedPrecondition, match="Linux x86_64 only.*gcs_endpoint="):
        GcsServer.binary()


# -- readers ------------------------------------------------------------------------------------------


def test_jsonl_values_blank_and_malformed_lines(gcs, base):
    text = '{"a": 1}\n\n  \n[1, 2]\r\n"s"\nnot json\n{"a": \n3 4\n' + '{"b": "é"}'  # no final newline
    gcs.write(f"{base}/in.jsonl", codecs_bom() + text.encode() + b"\n\xff\xfe\n5\n")
    got = read_all(gcs, gcs_input("jsonl", f"{base}/in.jsonl"))
    ok = [(i.raw, i.payload) for i in got if i.error is None]
    assert ok == [({"a": 1}, {"a": 1}), ([1, 2], [1, 2]), ("s", "s"), ({"b": "é"}, {"b": "é"}), (5, 5)]
    bad = [i for i in got if i.error is not None]
    assert [b.raw for b in bad] == ["not json", '{"a": ', "3 4", None]
    assert "line 6 of" in bad[0].error and "in.jsonl" in bad[0].error
    assert "not UTF-8" in bad[3].error


def codecs_bom() -> bytes:
    return b"\xef\xbb\xbf"


def test_files_in_name_order_across_wildcards(gcs, base):
    for name, n in [("b.jsonl", 3), ("a.jsonl", 2), ("sub/c.jsonl", 1)]:
        gcs.write(f"{base}/{name}", "".join(f'{{"f": "{name}", "i": {i}}}\n' for i in range(n)).encode())
    got = read_all(gcs, gcs_input("jsonl", f"{base}/*.jsonl", f"{base}/sub/c.jsonl"), batch_size=2)
    assert [(i.raw["f"], i.raw["i"]) for i in got] == [
        ("a.jsonl", 0),
        ("a.jsonl", 1),
        ("b.jsonl", 0),
        ("b.jsonl", 1),
        ("b.jsonl", 2),
        ("sub/c.jsonl", 0),
    ]


def test_csv(gcs, base):
    rows = [
        ["x", "y", "id"],
        ["1", "a,b", "k1"],
        ["-2.5e3", 'multi\nline "q"', "k2"],
        [],
        ["3", "c"],
        ["01", "", "1.5"],
    ]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    gcs.write(f"{base}/in.csv", buf.getvalue().encode())
    got = read_all(gcs, gcs_input("csv", f"{base}/in.csv"))
    # Numbers become numbers (Vertex asks for strings to be quoted); "01" is not a JSON number.
    assert [i.raw for i in got] == [[1, "a,b", "k1"], [-2500.0, rows[2][1], "k2"], [3, "c"], ["01", "", 1.5]]
    assert [i.payload for i in got[:2]] == [i.raw for i in got[:2]]
    assert got[0].columns == ("x", "y", "id")
    assert got[2].error and "2 values, the header 3" in got[2].error
    got = read_all(gcs, gcs_input("csv", f"{base}/in.csv"), config(instance_type="object", key_field="id"))
    assert [(i.payload, i.key) for i in got[:2]] == [
        ({"x": 1, "y": "a,b"}, "k1"),
        ({"x": -2500.0, "y": rows[2][1]}, "k2"),
    ]
    got = read_all(gcs, gcs_input("csv", f"{base}/in.csv"), config(included_fields=["id", "x"]))
    assert got[0].payload == ["k1", 1]
    with pytest.raises(errors.InvalidArgument, match="key_field names 'nope'"):
        read_all(gcs, gcs_input("csv", f"{base}/in.csv"), config(key_field="nope"))


@pytest.mark.parametrize("gzipped", [False, True])
def test_tf_record(gcs, base, gzipped):
    records = [b"", b"abc", os.urandom(70_000), b"\x00\xff"]
    data = b"".join(tfrecord(r, corrupt_data=(i == 1)) for i, r in enumerate(records))
    fmt = "tf-record-gzip" if gzipped else "tf-record"
    gcs.write(f"{base}/in.tfrecord", gzip.compress(data) if gzipped else data)
    got = read_all(gcs, gcs_input(fmt, f"{base}/in.tfrecord"), batch_size=3)
    assert [i.raw for i in got] == [{"b64": base64.b64encode(r).decode()} for r in records]
    assert [i.error is None for i in got] == [True, False, True, True]
    assert "crc32c" in got[1].error and got[0].payload == got[0].raw
    # Damage to the framing ends the file with one DATA_LOSS instance (tests/local/test_input_isolation.py).
    gcs.write(f"{base}/bad.tfrecord", tfrecord(b"x") + tfrecord(b"yy", corrupt_length=True))
    got = read_all(gcs, gcs_input("tf-record", f"{base}/bad.tfrecord"))
    assert [(i.error is None, i.error_code, i.raw) for i in got] == [
        (True, "INVALID_ARGUMENT", {"b64": "eA=="}),
        (False, "DATA_LOSS", None),
    ]
    assert "length of the TFRecord at byte 17" in got[1].error
    gcs.write(f"{base}/cut.tfrecord", tfrecord(b"hello")[:-3])
    (got,) = read_all(gcs, gcs_input("tf-record", f"{base}/cut.tfrecord"))
    assert got.error_code == "DATA_LOSS" and "at byte 0" in got.error
    if gzipped:
        gcs.write(f"{base}/notgz", b"plain bytes")
        (got,) = read_all(gcs, gcs_input(fmt, f"{base}/notgz"))
        assert got.error_code == "DATA_LOSS" and "does not decompress" in got.error


def test_file_list(gcs, base):
    gcs.write(f"{base}/img/1.png", b"\x89PNG one")
    gcs.write(f"{base}/img/2.png", b"two")
    lines = f"{base}/img/1.png\n\n{base}/img/missing.png\nnot-a-uri\n{base}/img/2.png\n"
    gcs.write(f"{base}/list.txt", lines.encode())
    got = read_all(gcs, gcs_input("file-list", f"{base}/list.txt"), batch_size=2)
    assert [i.raw for i in got] == [
        f"{base}/img/1.png",
        f"{base}/img/missing.png",
        "not-a-uri",
        f"{base}/img/2.png",
    ]
    assert got[0].payload == {"b64": base64.b64encode(b"\x89PNG one").decode()}
    assert got[3].payload == {"b64": base64.b64encode(b"two").decode()}
    assert "was not found" in got[1].error and "not a gs:// URI" in got[2].error


def test_bigquery_input(gcs, tables):
    schema = pa.schema(
        [("id", pa.int64()), ("name", pa.string()), ("x", pa.float64()), ("t", pa.timestamp("us"))]
    )
    tables.create_dataset("p", "d")
    tables.create_table("p", "d", "t", schema)
    t0 = datetime.datetime(2024, 1, 2, 3, 4, 5)
    for start in (0, 3):
        rows = [{"id": i, "name": f"n{i}", "x": i / 2, "t": t0} for i in range(start, start + 3)]
        tables.append("p", "d", "t", pa.Table.from_pylist(rows, schema=schema))
    src = types.BatchPredictionJob.InputConfig(
        instances_format="bigquery", bigquery_source=types.BigQuerySource(input_uri="bq://p.d.t")
    )
    got = read_all(gcs, src, tables=tables, batch_size=4)
    assert len(got) == 6
    assert got[1].raw == {"id": 1, "name": "n1", "x": 0.5, "t": t0}
    assert got[1].payload == [1, "n1", 0.5, "2024-01-02T03:04:05"]  # array by default, JSON values
    got = read_all(
        gcs, src, config(instance_type="object", key_field="id", excluded_fields=["t"]), tables=tables
    )
    assert (got[2].payload, got[2].key) == ({"name": "n2", "x": 1.0}, 2)
    got = read_all(gcs, src, config(included_fields=["x", "id"]), tables=tables)
    assert got[4].payload == [2.0, 4]
    with pytest.raises(errors.NotFound, match="bq://p.d.nope"):
        read_all(
            gcs,
            types.BatchPredictionJob.InputConfig(
                instances_format="bigquery", bigquery_source=types.BigQuerySource(input_uri="bq://p.d.nope")
            ),
            tables=tables,
        )


def test_config_errors(gcs, base):
    gcs.write(f"{base}/in.jsonl", b"{}\n")
    src = gcs_input("jsonl", f"{base}/in.jsonl")
    cases = [
        (src, config(included_fields=["a"], excluded_fields=["b"]), "mutually exclusive"),
        (src, config(instance_type="table"), "instance_type"),
        (gcs_input("tf-record", f"{base}/in.jsonl"), config(key_field="k"), "key_field"),
        (gcs_input("file-list", f"{base}/in.jsonl"), config(included_fields=["a"]), "included_fields"),
        (gcs_input("parquet", f"{base}/in.jsonl"), config(), "instances_format"),
        (gcs_input("jsonl", "s3://x/y"), config(), "s3://x/y"),
        (gcs_input("jsonl"), config(), "uris is empty"),
    ]
    for input_config, instance_config, match in cases:
        with pytest.raises(errors.InvalidArgument, match=match):
            read_instances(input_config, instance_config, gcs=gcs, tables=None, batch_size=10)
    with pytest.raises(errors.NotFound, match=f"{base}/missing.jsonl was not found"):
        read_instances(
            gcs_input("jsonl", f"{base}/missing.jsonl"), config(), gcs=gcs, tables=None, batch_size=1
        )
    with pytest.raises(errors.NotFound, match="matched no objects"):
        read_instances(gcs_input("jsonl", f"{base}/*.csv"), config(), gcs=gcs, tables=None, batch_size=1)


def test_key_field_on_non_objects_is_an_instance_error(gcs, base):
    gcs.write(f"{base}/in.jsonl", b'{"k": 1, "v": 2}\n[1, 2]\n{"v": 3}\n')
    got = read_all(gcs, gcs_input("jsonl", f"{base}/in.jsonl"), config(key_field="k"))
    assert (got[0].payload, got[0].key, got[0].error) == ({"v": 2}, 1, None)
    assert "JSON object, not an array" in got[1].error
    assert "no key_field 'k'" in got[2].error


# Reference semantics of InstanceConfig for one JSON object (from the Vertex AI API reference).
def expected_shape(obj, instance_type, key_field, included, excluded):
    key = obj.get(key_field) if key_field else None
    if key_field and key_field not in obj:
        return None
    if instance_type == "array":
        if not included:
            return None
        return [obj.get(f) for f in included if f != key_field], key
    if included:
        return {f: obj[f] for f in included if f in obj and f != key_field}, key
    return {k: v for k, v in obj.items() if k not in set(excluded) | {key_field}}, key


FIELDS = st.sampled_from(["a", "b", "c", "d", "e"])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8,
)


@HSETTINGS
@given(
    objects=st.lists(st.dictionaries(FIELDS, JSON, max_size=5), min_size=1, max_size=12),
    instance_type=st.sampled_from(["", "object", "array"]),
    key_field=st.sampled_from(["", "a", "b"]),
    selection=st.tuples(
        st.sampled_from(["none", "included", "excluded"]), st.lists(FIELDS, unique=True, max_size=4)
    ),
)
def test_instance_config_property(gcs, objects, instance_type, key_field, selection):
    mode, fields = selection
    included = fields if mode == "included" else []
    excluded = fields if mode == "excluded" else []
    uri = f"{next_base()}/in.jsonl"
    gcs.write(uri, "".join(json.dumps(o) + "\n" for o in objects).encode())
    cfg = config(
        instance_type=instance_type, key_field=key_field, included_fields=included, excluded_fields=excluded
    )
    got = read_all(gcs, gcs_input("jsonl", uri), cfg, batch_size=5)
    assert [i.raw for i in got] == objects
    for inst, obj in zip(got, objects, strict=True):
        want = expected_shape(obj, instance_type, key_field, included, excluded)
        if want is None:
            assert inst.error is not None and inst.payload is None
        else:
            assert inst.error is None and (inst.payload, inst.key) == want


@HSETTINGS
@given(
    files=st.lists(st.lists(JSON, max_size=15), min_size=1, max_size=4),
    batch_size=st.integers(1, 9),
    crlf=st.booleans(),
)
def test_jsonl_reads_back_what_was_written(gcs, files, batch_size, crlf):
    base = next_base()
    end = "\r\n" if crlf else "\n"
    for n, values in enumerate(files):
        gcs.write(f"{base}/part-{n:03d}.jsonl", "".join(json.dumps(v) + end for v in values).encode())
    got = read_all(gcs, gcs_input("jsonl", f"{base}/part-*.jsonl"), batch_size=batch_size)
    assert [i.raw for i in got] == [v for values in files for v in values]
    assert all(i.error is None and i.payload == i.raw for i in got)


@HSETTINGS
@given(
    rows=st.lists(
        st.lists(
            st.text(max_size=6) | st.from_regex(r"-?[0-9]{1,3}(\.[0-9])?", fullmatch=True),
            min_size=3,
            max_size=3,
        ),
        max_size=20,
    ),
    records=st.lists(st.binary(max_size=300), max_size=20),
)
def test_csv_and_tfrecord_read_back_what_was_written(gcs, rows, records):
    base = next_base()
    buf = io.StringIO()
    csv.writer(buf).writerows([["p", "q", "r"], *rows])
    gcs.write(f"{base}/in.csv", buf.getvalue().encode())
    got = read_all(gcs, gcs_input("csv", f"{base}/in.csv"))
    assert [i.raw for i in got] == [[csv_value(c) for c in r] for r in rows]
    assert all(i.error is None and i.payload == i.raw for i in got)
    gcs.write(f"{base}/in.tfrecord", gzip.compress(b"".join(tfrecord(r) for r in records)))
    got = read_all(gcs, gcs_input("tf-record-gzip", f"{base}/in.tfrecord"))
    assert [base64.b64decode(i.payload["b64"]) for i in got] == records


def csv_value(cell: str):
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", cell):
        return int(cell)
    if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", cell):
        return float(cell)
    return cell


# -- sinks --------------------------------------------------------------------------------------------


def lines_of(gcs, uri):
    return [json.loads(line) for line in gcs.read(uri).decode().splitlines()]


def test_gcs_sink_jsonl_layout(gcs):
    gcs.create_bucket("bpj-out")
    sink = GcsSink(
        gcs, "gs://bpj-out/runs/", model_display_name="my model", create_time=CREATED, rows_per_file=3
    )
    assert sink.directory == "gs://bpj-out/runs/prediction-my model-2024-05-06T07:08:09.123Z"
    insts = [Instance(i, {"v": i}, {"v": i}) for i in range(7)]
    sink.write_predictions([(i, [i.index, 0.5]) for i in insts[:2]])
    sink.write_predictions([(i, [i.index, 0.5]) for i in insts[2:5]])
    sink.write_errors([(insts[5], "INVALID_ARGUMENT", "bad"), (insts[6], "INTERNAL", "boom")])
    files = sink.close()
    d = sink.directory
    assert files == [f"{d}/predictions_0001.jsonl", f"{d}/predictions_0002.jsonl", f"{d}/errors_0001.jsonl"]
    assert gcs.list(d + "/") == [f"{d}/", *sorted(files)]
    preds = lines_of(gcs, files[0]) + lines_of(gcs, files[1])
    assert preds == [{"instance": {"v": i}, "prediction": [i, 0.5]} for i in range(5)]
    assert lines_of(gcs, files[2]) == [
        {"instance": {"v": 5}, "error": {"status": "INVALID_ARGUMENT", "message": "bad"}},
        {"instance": {"v": 6}, "error": {"status": "INTERNAL", "message": "boom"}},
    ]


def test_gcs_sink_keyed_numpy_and_empty(gcs):
    import numpy as np

    gcs.create_bucket("bpj-out")
    sink = GcsSink(gcs, "gs://bpj-out/k", model_display_name="m", create_time=CREATED, keyed=True)
    sink.write_predictions(
        [(Instance(0, {"id": "a", "x": 1}, {"x": 1}, key="a"), np.array([1.5, float("nan")]))]
    )
    sink.write_errors([(Instance(1, "garbage", None, error="not json"), "INVALID_ARGUMENT", "not json")])
    files = sink.close()
    assert lines_of(gcs, files[0]) == [{"key": "a", "prediction": [1.5, None]}]
    assert lines_of(gcs, files[1]) == [
        {"key": None, "error": {"status": "INVALID_ARGUMENT", "message": "not json"}}
    ]
    empty = GcsSink(gcs, "gs://bpj-out/e", model_display_name="m", create_time=CREATED)
    assert empty.close() == [] and gcs.exists(empty.directory + "/")
    with pytest.raises(errors.FailedPrecondition):
        empty.write_predictions([(Instance(0, 1, 1), 1)])


def test_gcs_sink_csv(gcs):
    gcs.create_bucket("bpj-out")
    cols = ("x", "y")
    sink = GcsSink(
        gcs, "gs://bpj-out/c", model_display_name="m", create_time=CREATED, predictions_format="csv"
    )
    sink.write_predictions(
        [
            (Instance(0, ["1", "a\nb"], ["1", "a\nb"], columns=cols), {"p": 1}),
            (Instance(1, ["2", "c"], [], columns=cols), 3),
        ]
    )
    sink.write_errors([(Instance(2, ["3", "d"], None, columns=cols), "INVALID_ARGUMENT", "bad")])
    pred, err = sink.close()
    assert pred.endswith("/predictions_0001.csv") and err.endswith("/errors_0001.csv")
    assert list(csv.reader(io.StringIO(gcs.read(pred).decode()))) == [
        ["x", "y", "prediction"],
        ["1", "a\nb", '{"p": 1}'],
        ["2", "c", "3"],
    ]
    rows = list(csv.reader(io.StringIO(gcs.read(err).decode())))
    assert rows[0] == ["x", "y", "error"] and json.loads(rows[1][2]) == {
        "status": "INVALID_ARGUMENT",
        "message": "bad",
    }


def test_bigquery_sink(tables):
    sink = BigQuerySink(
        tables, "bq://proj", model_display_name="My-Model v2", create_time=CREATED, rows_per_append=2
    )
    assert sink.dataset == "bq://proj.prediction_My_Model_v2_2024_05_06T07_08_09_123Z"
    insts = [Instance(i, {"a": i, "b": f"s{i}"}, None) for i in range(5)]
    sink.write_predictions([(i, {"score": i.index / 4}) for i in insts[:3]])
    sink.write_predictions([(insts[3], [1, 2])])
    sink.write_errors([(insts[4], "FAILED_PRECONDITION", "nope")])
    assert sink.close() == [f"{sink.dataset}.predictions", f"{sink.dataset}.errors"]
    ds = sink.dataset_id
    preds = pa.Table.from_batches(list(tables.scan("proj", ds, "predictions"))).to_pylist()
    assert preds == [{"a": i, "b": f"s{i}", "prediction": json.dumps({"score": i / 4})} for i in range(3)] + [
        {"a": 3, "b": "s3", "prediction": "[1, 2]"}
    ]
    errs = pa.Table.from_batches(list(tables.scan("proj", ds, "errors"))).to_pylist()
    assert errs == [{"a": 4, "b": "s4", "errors": {"code": 9, "message": "nope"}}]
    assert tables.schema("proj", ds, "errors").field("errors").type == pa.struct(
        [("code", pa.int64()), ("message", pa.string())]
    )


def test_bigquery_sink_into_a_dataset_with_a_schema(tables):
    schema = pa.schema([("id", pa.int64()), ("t", pa.timestamp("us"))])
    t0 = datetime.datetime(2024, 1, 1)
    sink = BigQuerySink(
        tables,
        "bq://proj.mine",
        model_display_name="m",
        create_time=CREATED,
        instance_schema=schema,
        keyed=False,
    )
    assert sink.dataset == "bq://proj.mine"
    sink.write_predictions([(Instance(0, {"id": 7, "t": t0}, [7]), 0.25)])
    sink.close()
    assert tables.schema("proj", "mine", "predictions") == pa.schema([*schema, ("prediction", pa.string())])
    assert tables.schema("proj", "mine", "errors").names == ["id", "t", "errors"]
    assert pa.Table.from_batches(list(tables.scan("proj", "mine", "predictions"))).to_pylist() == [
        {"id": 7, "t": t0, "prediction": "0.25"}
    ]
    with pytest.raises(errors.AlreadyExists):
        BigQuerySink(tables, "bq://proj.mine", model_display_name="m", create_time=CREATED)
    with pytest.raises(errors.InvalidArgument, match="bq://"):
        BigQuerySink(tables, "gs://x", model_display_name="m", create_time=CREATED)
