"""One bad CSV row or TFRecord record fails only itself, against a real fake-gcs-server and a real local stack.

What a reader cannot resynchronise after (a TFRecord length that is corrupt or larger than the file, a file
that ends inside a record, a gzip stream that breaks) ends that file with one DATA_LOSS instance at the byte
where it is; the other files of the job still run. A CSV quoted field that is never closed reads to the end of
the file, as Python's csv reader reads it: those lines are one bad row.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import itertools
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import types
from bpj.gcs import Gcs
from bpj.local.gcs import GcsServer
from bpj.local.inputs import Instance, read_instances
from bpj.local.records import MAX_RECORD_BYTES, masked_crc, quoted_at_end
from tests.local.conftest import S, wait_for

HSETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
LIMIT = csv.field_size_limit()
_names = itertools.count()


@pytest.fixture(scope="module")
def gcs():
    with GcsServer() as server, Gcs(server.endpoint) as client:
        client.create_bucket("bpj-iso")
        yield client


def put(gcs, name: str, data: bytes) -> str:
    uri = f"gs://bpj-iso/t{next(_names)}/{name}"
    gcs.write(uri, data)
    return uri


def read(gcs, fmt: str, *uris: str, batch_size: int = 3) -> list[Instance]:
    config = types.BatchPredictionJob.InputConfig(instances_format=fmt, gcs_source=types.GcsSource(uris=uris))
    batches = list(
        read_instances(
            config, types.BatchPredictionJob.InstanceConfig(), gcs=gcs, tables=None, batch_size=batch_size
        )
    )
    assert all(0 < len(b) <= batch_size for b in batches)
    out = [i for b in batches for i in b]
    assert [i.index for i in out] == list(range(len(out)))
    return out


def good(got: list[Instance]) -> list:
    return [i.raw for i in got if i.error is None]


def bad(got: list[Instance]) -> list[tuple[str, str]]:
    return [(i.error_code, i.error) for i in got if i.error is not None]


# -- CSV --------------------------------------------------------------------------------------------------


def csv_bytes(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode()


def test_csv_row_that_is_not_utf8_fails_alone(gcs):
    data = b'a,b\nx,1\ny,\xff\xfe\n"multi\nline \xff",2\nz,3\n'
    uri = put(gcs, "in.csv", data)
    got = read(gcs, "csv", uri)
    assert good(got) == [["x", 1], ["z", 3]]
    # The row of line 3, and the row of lines 4-5 whose second line holds the bad bytes.
    assert bad(got) == [
        ("INVALID_ARGUMENT", f"line 3 of {uri} is not UTF-8"),
        ("INVALID_ARGUMENT", f"line 5 of {uri} is not UTF-8"),
    ]
    assert [i.raw for i in got if i.error] == [None, None]  # nothing was read: no instance to show


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_field_over_the_limit_fails_its_row_only(gcs, quoted):
    big = "w" * (LIMIT + 10)
    if quoted:  # a quoted field over many lines
        big = "\n".join(["q" * 1000, 'with a " quote', big, *["r" * 70_000] * 20, "end"])
    # The bad row starts about 60 KB before the end of the reader's first 1 MiB chunk and ends in a later one.
    pad = [["pad", "p" * 994]] * 990
    data = csv_bytes([["a", "b"], ["x", "1"], *pad, ["y", big], ["z", "2"], ["zz", "3"]])
    uri = put(gcs, "in.csv", data)
    got = read(gcs, "csv", uri)
    assert good(got) == [["x", 1], *pad, ["z", 2], ["zz", 3]]
    start = 3 + len(pad)
    end = start + big.count("\n")
    lines = f"lines {start}-{end}" if quoted else f"line {start}"
    assert bad(got) == [
        (
            "INVALID_ARGUMENT",
            f"{lines} of {uri} cannot be read as CSV: field larger than field limit ({LIMIT})",
        )
    ]


def test_csv_wrong_width_names_the_first_line_of_its_row(gcs):
    uri = put(gcs, "in.csv", csv_bytes([["a", "b"], ["1", "2"], ["x\ny", "2", "3"], ["4"], ["5", "6"]]))
    got = read(gcs, "csv", uri)
    assert good(got) == [[1, 2], [5, 6]]
    assert bad(got) == [
        ("INVALID_ARGUMENT", f"line 3 of {uri} has 3 values, the header 2"),
        ("INVALID_ARGUMENT", f"line 5 of {uri} has 1 values, the header 2"),
    ]
    assert [i.raw for i in got if i.error] == [["x\ny", 2, 3], [4]]  # these rows were read


@pytest.mark.parametrize("rest", [50, LIMIT + 10])
def test_csv_quoted_field_never_closed_takes_the_rest_of_the_file(gcs, rest):
    # Decided: as Python's csv reader (strict=False) reads it, the open quote runs to the end of the file; the
    # rows before it stand, and the lines from the row's start to the end are one error. Whether the rest is
    # short or over the field limit, the answer is the same.
    tail = "".join(f"{i},{'v' * (rest // 5)}\n" for i in range(5))
    data = f'a,b\n1,2\n3,"open\n{tail}'.encode()
    uri = put(gcs, "in.csv", data)
    got = read(gcs, "csv", uri)
    assert good(got) == [[1, 2]]
    assert bad(got) == [
        (
            "INVALID_ARGUMENT",
            f"lines 3-8 of {uri}: a quoted field in the row that starts on line 3 is never closed",
        )
    ]


def test_csv_quotes_inside_unquoted_fields_and_odd_endings_are_rows(gcs):
    # A quote inside an unquoted field is a character (no open quote); \r and \r\n end lines as \n does; no
    # newline at the end; a UTF-8 BOM is dropped.
    data = b'\xef\xbb\xbfa,b\r\n1,x"y\r2,"q""r"\r\n3,"ok"tail\n4,5'
    got = read(gcs, "csv", put(gcs, "in.csv", data))
    assert good(got) == [[1, 'x"y'], [2, 'q"r'], [3, "oktail"], [4, 5]]
    assert bad(got) == []


def test_csv_header_that_cannot_be_read_fails_that_file_only(gcs):
    broken = put(gcs, "a.csv", b'a,"b\n1,2\n')
    fine = put(gcs, "b.csv", b"a,b\n1,2\n")
    got = read(gcs, "csv", broken, fine)
    assert good(got) == [[1, 2]]
    assert bad(got) == [
        (
            "INVALID_ARGUMENT",
            f"cannot read the CSV header: lines 1-2 of {broken}: a quoted field in the row that starts on "
            "line 1 is never closed",
        )
    ]


_TEXT = st.text(alphabet='ab ,"\n\r\té', max_size=12)


@st.composite
def csv_damage(draw):
    rows = draw(st.lists(st.lists(_TEXT, min_size=3, max_size=3), min_size=1, max_size=12))
    at = draw(st.integers(0, len(rows) - 1))
    kind = draw(st.sampled_from(["utf8", "big", "big-quoted"]))
    return rows, at, kind, draw(st.integers(1, 5))


@HSETTINGS
@given(case=csv_damage())
def test_csv_one_damaged_row_among_any(gcs, case):
    rows, at, kind, batch_size = case
    pieces = [csv_bytes([["p", "q", "r"]])]
    for i, row in enumerate(rows):
        text = csv_bytes([row])
        if i == at:
            body, ending = text[:-2], text[-2:]  # csv.writer ends rows with \r\n
            if kind == "utf8":
                text = body + b"\xff" + ending  # after the last field: the quoting is unchanged
            elif kind == "big":
                text = body + b"," + b"z" * (LIMIT + 1) + ending
            else:
                text = body + b',"' + b"z\n" * (LIMIT // 2 + 1) + b'"' + ending
        pieces.append(text)
    starts = [1 + _lines(b"".join(pieces[:k])) for k in range(1, len(pieces) + 1)]
    start, end = starts[at], starts[at + 1] - 1
    uri = put(gcs, "in.csv", b"".join(pieces))
    got = read(gcs, "csv", uri, batch_size=batch_size)
    assert good(got) == [r for i, r in enumerate(rows) if i != at]  # no digits: no cell becomes a number
    lines = f"line {start}" if start == end else f"lines {start}-{end}"
    if kind == "utf8":
        assert bad(got) == [("INVALID_ARGUMENT", f"line {end} of {uri} is not UTF-8")]
    else:
        assert bad(got) == [
            (
                "INVALID_ARGUMENT",
                f"{lines} of {uri} cannot be read as CSV: field larger than field limit ({LIMIT})",
            )
        ]


def _lines(data: bytes) -> int:
    return len(io.StringIO(data.decode("utf-8", "replace"), newline="").readlines())


@given(row=st.lists(_TEXT, min_size=1, max_size=4))
def test_quoted_at_end_finds_where_a_written_row_ends(row):
    # The resync after a csv.Error follows quotes as csv.reader does: of the lines of a row csv.writer wrote
    # (quotes doubled, fields with separators quoted), only the last one ends outside a quoted field.
    lines = io.StringIO(csv_bytes([row]).decode(), newline="").readlines()
    quoted = False
    for k, line in enumerate(lines):
        quoted = quoted_at_end(line, quoted)
        ends_here = not quoted
        assert ends_here == (k == len(lines) - 1)


# -- TFRecord ------------------------------------------------------------------------------------------


def record(
    data: bytes, *, length: int | None = None, length_crc_ok: bool = True, crc_ok: bool = True
) -> bytes:
    head = struct.pack("<Q", len(data) if length is None else length)
    return (
        head
        + struct.pack("<I", masked_crc(head) ^ (0 if length_crc_ok else 1))
        + data
        + struct.pack("<I", masked_crc(data) ^ (0 if crc_ok else 0x100))
    )


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def where(uri: str, gzipped: bool) -> str:
    return f"{uri} (decompressed)" if gzipped else uri


def write_tf(gcs, data: bytes, gzipped: bool) -> tuple[str, str]:
    uri = put(gcs, "in.tfrecord", gzip.compress(data) if gzipped else data)
    return uri, "tf-record-gzip" if gzipped else "tf-record"


@pytest.mark.parametrize("gzipped", [False, True])
def test_tfrecord_bad_data_crc_fails_alone(gcs, gzipped):
    uri, fmt = write_tf(gcs, record(b"one") + record(b"two", crc_ok=False) + record(b"three"), gzipped)
    got = read(gcs, fmt, uri)
    assert good(got) == [b64(b"one"), b64(b"three")]
    assert bad(got) == [
        ("INVALID_ARGUMENT", f"the TFRecord at byte 19 of {where(uri, gzipped)} is corrupt (crc32c mismatch)")
    ]
    assert got[1].raw == b64(b"two") and got[1].payload is None


@pytest.mark.parametrize("gzipped", [False, True])
def test_tfrecord_corrupt_length_ends_the_file(gcs, gzipped):
    data = record(b"one") + record(b"two", length=1 << 62, length_crc_ok=False) + record(b"three")
    uri, fmt = write_tf(gcs, data, gzipped)
    got = read(gcs, fmt, uri)
    assert good(got) == [b64(b"one")]
    assert bad(got) == [
        (
            "DATA_LOSS",
            f"the length of the TFRecord at byte 19 of {where(uri, gzipped)} is corrupt (crc32c mismatch); "
            "the rest of the file is skipped",
        )
    ]


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("length", [30, 1 << 40, (1 << 64) - 1])
def test_tfrecord_length_with_a_valid_crc_larger_than_the_file(gcs, gzipped, length):
    # 8 forged bytes with their crc: nothing may allocate what they claim.
    uri, fmt = write_tf(gcs, record(b"one") + record(b"two", length=length) + record(b"x"), gzipped)
    got = read(gcs, fmt, uri)
    assert good(got) == [b64(b"one")]
    ((code, message),) = bad(got)
    assert code == "DATA_LOSS" and message.endswith("; the rest of the file is skipped")
    w = where(uri, gzipped)
    if not gzipped:
        assert message.startswith(
            f"the TFRecord at byte 19 of {w} is cut short: its length says {length} bytes of data"
        )
    elif length > MAX_RECORD_BYTES:
        assert message.startswith(f"the TFRecord at byte 19 of {w} claims {length} bytes of data, more than ")
    else:  # size unknown before decompressing: read (in bounded pieces) up to the end
        assert message.startswith(f"the TFRecord at byte 19 of {w} is cut short (the file ends inside it)")


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("cut", [1, 4, 9, 15])
def test_tfrecord_truncated_last_record(gcs, gzipped, cut):
    last = record(b"abcdefgh")  # 24 bytes: header 12, data 8, crc 4
    uri, fmt = write_tf(gcs, record(b"one") + last[:cut], gzipped)
    got = read(gcs, fmt, uri)
    assert good(got) == [b64(b"one")]
    ((code, message),) = bad(got)
    assert code == "DATA_LOSS"
    assert message.startswith(f"the TFRecord at byte 19 of {where(uri, gzipped)} is cut short")


def test_tfrecord_gzip_stream_cut_short(gcs):
    records = [record(bytes([i]) * 50_000) for i in range(8)]
    packed = gzip.compress(b"".join(records), compresslevel=0)
    uri = put(gcs, "in.tfrecord.gz", packed[: len(packed) // 2])
    got = read(gcs, "tf-record-gzip", uri)
    assert got[-1].error_code == "DATA_LOSS" and "does not decompress" in got[-1].error
    assert got[-1].error.startswith(f"{uri} does not decompress (after byte ")
    assert good(got) == [b64(bytes([i]) * 50_000) for i in range(len(got) - 1)]  # the records before it


def test_one_corrupt_file_does_not_stop_the_others(gcs):
    first = put(gcs, "a.tfrecord", record(b"a1") + record(b"a2", length=99, length_crc_ok=False))
    second = put(gcs, "b.tfrecord", record(b"b1") + record(b"b2"))
    got = read(gcs, "tf-record", first, second, batch_size=2)
    assert good(got) == [b64(b"a1"), b64(b"b1"), b64(b"b2")]
    assert [code for code, _ in bad(got)] == ["DATA_LOSS"] and first in bad(got)[0][1]


@st.composite
def tf_damage(draw):
    datas = draw(st.lists(st.binary(max_size=300), min_size=1, max_size=10))
    at = draw(st.integers(0, len(datas) - 1))
    kinds = ["data crc", "length crc", "forged length", "truncated"]
    if datas[at]:
        kinds.append("data byte")
    kind = draw(st.sampled_from(kinds if at == len(datas) - 1 else [k for k in kinds if k != "truncated"]))
    return datas, at, kind, draw(st.integers(0, (1 << 64) - 1)), draw(st.booleans()), draw(st.integers(1, 4))


@HSETTINGS
@given(case=tf_damage())
def test_tfrecord_one_damaged_record_among_any(gcs, case):
    datas, at, kind, noise, gzipped, batch_size = case
    offsets = list(itertools.accumulate((16 + len(d) for d in datas), initial=0))
    pieces = [bytearray(record(d)) for d in datas]
    piece = pieces[at]
    if kind == "data byte":
        piece[12 + noise % len(datas[at])] ^= 1 + noise % 255
    elif kind == "data crc":
        piece[-1 - noise % 4] ^= 1 + noise % 255
    elif kind == "length crc":
        piece[8 + noise % 4] ^= 1 + noise % 255
    elif kind == "forged length":  # crc-valid, and more than the rest of the file and the cap
        rest = offsets[-1] - offsets[at] - 16
        piece[:] = record(datas[at], length=max(rest + 1, MAX_RECORD_BYTES + 1, noise))[: len(piece)]
    else:
        del piece[1 + noise % (len(piece) - 1) :]
    uri, fmt = write_tf(gcs, b"".join(pieces), gzipped)
    got = read(gcs, fmt, uri, batch_size=batch_size)
    w = where(uri, gzipped)
    if kind in ("data byte", "data crc"):
        assert good(got) == [b64(d) for i, d in enumerate(datas) if i != at]
        assert bad(got) == [
            ("INVALID_ARGUMENT", f"the TFRecord at byte {offsets[at]} of {w} is corrupt (crc32c mismatch)")
        ]
    else:  # the framing broke: the records before it, then DATA_LOSS at its offset, nothing after
        assert good(got) == [b64(d) for d in datas[:at]]
        ((code, message),) = bad(got)
        assert code == "DATA_LOSS" and got[-1].error == message
        assert f"TFRecord at byte {offsets[at]} of {w} " in message


# -- a whole job on the local stack ---------------------------------------------------------------------

ECHO = """
class Echo:
    def load(self, artifacts_dir):
        pass

    def predict(self, body):
        return {"predictions": body["instances"]}
"""
PARENT = "projects/bpj-local/locations/us-central1"


@pytest.fixture(scope="module")
def job_outputs(stack):
    """One job over a good TFRecord file and a damaged one, predicted by a routine that echoes instances."""
    from bpj._gen.services.job_service import JobServiceClient
    from bpj._gen.services.model_service import ModelServiceClient
    from bpj.transport.grpc import GrpcTransport

    for bucket in ("iso-models", "iso-in", "iso-out"):
        stack.gcs.create_bucket(bucket)
    stack.gcs.write("gs://iso-models/echo/echo.py", ECHO.encode())
    damaged = record(b"d1") + record(b"d2", crc_ok=False) + record(b"d3") + record(b"d4", length=1 << 50)
    stack.gcs.write("gs://iso-in/a.tfrecord", damaged)
    stack.gcs.write("gs://iso-in/b.tfrecord", record(b"g1") + record(b"g2"))
    transport = GrpcTransport(stack.api_endpoint)
    try:
        model = types.Model(display_name="echo", artifact_uri="gs://iso-models/echo")
        model.container_spec.image_uri = "europe-docker.pkg.dev/p/serving/echo:1"
        model.container_spec.env.append(types.EnvVar(name="BPJ_PREDICTOR", value="echo:Echo"))
        op = ModelServiceClient(transport).upload_model(types.UploadModelRequest(parent=PARENT, model=model))
        uploaded = types.UploadModelResponse()
        op.response.Unpack(uploaded)
        spec = types.BatchPredictionJob(display_name="iso", model=uploaded.model)
        spec.input_config.instances_format = "tf-record"
        spec.input_config.gcs_source.uris.append("gs://iso-in/*.tfrecord")
        spec.output_config.predictions_format = "jsonl"
        spec.output_config.gcs_destination.output_uri_prefix = "gs://iso-out/run"
        jobs = JobServiceClient(transport)
        created = jobs.create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=spec)
        )
        job = wait_for(
            lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)), created.name
        )
    finally:
        transport.close()
    lines: dict[str, list] = {"predictions": [], "errors": []}
    for kind in lines if job.state == S.JOB_STATE_SUCCEEDED else ():
        lines[kind] = [
            json.loads(line)
            for uri in stack.gcs.list(f"{job.output_info.gcs_output_directory}/{kind}_*")
            for line in stack.gcs.read(uri).decode().splitlines()
        ]
    return job, lines


def test_job_predicts_every_good_record_and_reports_the_bad_ones(job_outputs):
    job, lines = job_outputs
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (4, 2)
    assert [p["prediction"] for p in lines["predictions"]] == [b64(x) for x in (b"d1", b"d3", b"g1", b"g2")]
    crc, lost = lines["errors"]
    assert crc == {
        "instance": b64(b"d2"),
        "error": {
            "status": "INVALID_ARGUMENT",
            "message": "the TFRecord at byte 18 of gs://iso-in/a.tfrecord is corrupt (crc32c mismatch)",
        },
    }
    assert lost["instance"] is None
    assert lost["error"]["message"].startswith(
        f"the TFRecord at byte 54 of gs://iso-in/a.tfrecord is cut short: its length says {1 << 50} bytes"
    )
    assert len(job.partial_failures) == 2


def test_job_reports_a_broken_framing_as_data_loss(job_outputs):
    job, lines = job_outputs
    assert lines["errors"][1]["error"]["status"] == "DATA_LOSS"
    assert [f.code for f in job.partial_failures] == [3, 15]
