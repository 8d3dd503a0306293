"""No URI or name a client sends to the Vertex emulator reaches outside the data dir: hostile URIs in every URI
field, against the real stack over gRPC and REST, and names the table store refuses. Values JSON cannot carry and
hostile artifact object names are in test_vertex_security_values.py."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj.local.bigquery.store import TableStore
from tests.local.conftest import SKLEARN_IMAGE
from tests.local.hostile import PARENT, SEGMENT, Outside, a_job, listing

# -- hostile URIs ------------------------------------------------------------------------------------------

_DOTS = st.sampled_from(["..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e", "．．", "..%2f..", "%00"])


def _host_paths(sentinel: Path) -> st.SearchStrategy[str]:
    target = st.builds(lambda s: f"{sentinel}/{s}", SEGMENT) | st.sampled_from(
        [str(sentinel), "/etc", "/tmp", "/", "/../etc"]
    )
    return st.one_of(
        target,
        target.map(lambda p: f"file://{p}"),
        target.map(lambda p: f"FILE://{p}"),
        target.map(lambda p: f"file:{p}"),
        target.map(lambda p: f"gs://{p}"),  # gs:///etc: no bucket
        target.map(lambda p: f"gs:{p}"),
        target.map(lambda p: p.replace("/", "\\")),
        target.map(lambda p: f"bq://{p}"),
    )


@st.composite
def _gcs_traversals(draw) -> str:
    bucket = draw(st.sampled_from(["bpj-in", "bpj-out", "bpj-models"]))
    segments = draw(st.lists(SEGMENT, min_size=0, max_size=3))
    at = draw(st.integers(0, len(segments)))
    sep = draw(st.sampled_from(["/", "\\"]))
    segments[at:at] = [draw(_DOTS)] * draw(st.integers(1, 3))
    name = sep.join(segments)
    return f"gs://{bucket}/{name}{draw(st.sampled_from(['', '/', sep + 'x']))}"


_BAD_CHARS = st.sampled_from(["\x00", "\n", "\r", "\x01", "\x1f", "\x7f"])
_GCS_OTHERS = st.one_of(
    st.builds(lambda c, s: f"gs://bpj-in/{s}{c}{s}", _BAD_CHARS, SEGMENT),
    st.builds(lambda n: "gs://bpj-in/" + "a" * n, st.integers(1025, 3000)),
    st.builds(lambda n: "gs://" + "b" * n + "/x", st.integers(64, 300)),
    st.sampled_from(
        [
            "gs://../x",
            "gs://./x",
            "gs://bpj-in/../../../../etc/passwd",
            "gs://bücket/x",
            "gs://BPJ-IN/x",
            "gs://bpj-in\\..\\x/y",
            "gs://bpj%2din/x",
            "s3://bpj-in/x",
            "http://127.0.0.1/x",
            " gs://bpj-in/x",
        ]
    ),
)
_BQ = st.one_of(
    st.sampled_from(
        [
            "bq://../x.d.t",
            "bq://p.d/../x.t",
            "bq://p.d.t/..",
            "bq://p..t",
            "bq://p.d..",
            "bq://p.d.t\x00",
            "bq://p.d.t\n",
            "bq://p.d.a\\b",
            "bq://p.d./t",
            "bq://P.d.t",
            "bq://1p.d.t",
            "bq://p-.d.t",
            "bq://example.com:../x.d.t",
            "bq://p.%2e%2e.t",
            "bq://p.d.ｔ/x",
            "bq://p.d.t∕x",
            "bq://",
            "bq:///etc",
        ]
    ),
    st.builds(lambda n: "bq://p.d." + "t" * n, st.integers(256, 1100)),
    st.builds(lambda n: "bq://p." + "d" * n + ".t", st.integers(256, 1100)),
    st.builds(lambda n: "bq://" + "p" * n + ".d.t", st.integers(31, 100)),
    st.builds(lambda c, s: f"bq://p.{s}.t{c}", _BAD_CHARS, SEGMENT),
)

FIELDS = {
    "artifact_uri": "model.artifact_uri",
    "unmanaged_artifact_uri": "batch_prediction_job.unmanaged_container_model.artifact_uri",
    "gcs_source": "batch_prediction_job.input_config.gcs_source.uris[1]",
    "gcs_destination_prefix": "batch_prediction_job.output_config.gcs_destination.output_uri_prefix",
    "bigquery_source": "batch_prediction_job.input_config.bigquery_source.input_uri",
    "bigquery_destination": "batch_prediction_job.output_config.bigquery_destination.output_uri",
}


def hostile(sentinel: Path) -> st.SearchStrategy[str]:
    return st.one_of(_host_paths(sentinel), _gcs_traversals(), _GCS_OTHERS, _BQ)


def send(clients, field: str, value: str) -> errors.ApiError:
    jobs, models = clients
    with pytest.raises(errors.ApiError) as info:
        if field == "artifact_uri":
            model = types.Model(display_name="hostile", artifact_uri=value)
            model.container_spec.image_uri = SKLEARN_IMAGE
            models.upload_model(types.UploadModelRequest(parent=PARENT, model=model))
        else:
            request = types.CreateBatchPredictionJobRequest(
                parent=PARENT, batch_prediction_job=a_job(field, value)
            )
            jobs.create_batch_prediction_job(request)
    return info.value


def stored(clients) -> tuple[int, int]:
    jobs, models = clients
    return (
        len(
            jobs.list_batch_prediction_jobs(
                types.ListBatchPredictionJobsRequest(parent=PARENT)
            ).batch_prediction_jobs
        ),
        len(models.list_models(types.ListModelsRequest(parent=PARENT)).models),
    )


def test_hostile_uris_are_refused_naming_the_field(stack, clients, sentinel):
    outside = Outside(stack, sentinel)
    before = stored(clients)

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(field=st.sampled_from(sorted(FIELDS)), value=hostile(sentinel))
    def check(field, value):
        error = send(clients, field, value)
        assert isinstance(error, errors.InvalidArgument), error
        assert f"Field: {FIELDS[field]};" in error.message, error.message
        outside.unchanged()

    check()
    assert stored(clients) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("artifact_uri", "file:///etc"),
        ("artifact_uri", "/etc"),
        ("artifact_uri", "gs://bpj-models/m/../../../.."),
        ("unmanaged_artifact_uri", "file://{sentinel}"),
        ("gcs_source", "gs://bpj-in/%2e%2e/%2e%2e/x.jsonl"),
        ("gcs_destination_prefix", "gs://bpj-out/../../../../tmp"),
        ("bigquery_source", "bq://bpj-local.d.t/../../x"),
        ("bigquery_destination", "bq://bpj-local.d/.."),
    ],
)
def test_each_uri_field_is_checked(stack, clients, sentinel, field, value):
    outside = Outside(stack, sentinel)
    error = send(clients, field, value.format(sentinel=sentinel))
    assert isinstance(error, errors.InvalidArgument)
    assert f"Field: {FIELDS[field]};" in error.message
    outside.unchanged()


def test_valid_uris_still_pass(clients, stack):
    jobs, models = clients
    stack.gcs.create_bucket("bpj-models")
    stack.gcs.write("gs://bpj-models/some model/v1/model.pkl", b"checked at upload, loaded by jobs")
    model = types.Model(display_name="fine", artifact_uri="gs://bpj-models/some model/v1/")
    model.container_spec.image_uri = SKLEARN_IMAGE
    model.predict_schemata.instance_schema_uri = "gs://google-cloud-aiplatform/schema/predict/instance/x.yaml"
    models.upload_model(types.UploadModelRequest(parent=PARENT, model=model))
    job = a_job("bigquery_destination", "bq://example.com:bpj-local.out_ds")
    job.input_config.gcs_source.uris[1] = "gs://bpj-in/dir/**/*.jsonl"
    created = jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
    )
    job = a_job("bigquery_source", "bq://bpj-local.src.my table-ü")
    job.output_config.gcs_destination.output_uri_prefix = "gs://bpj-out"
    jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
    )
    assert created.name.startswith(PARENT)


# -- the table store -------------------------------------------------------------------------------------


_NOT_A_COMPONENT = st.sampled_from(["", ".", "..", "../x", "a/b", "/etc", "a\\b", "..\\x", "x\x00", "t\n"])


def _with_a_bad_char(bad: str) -> st.SearchStrategy[str]:
    return st.builds(lambda a, c, b: a + c + b, SEGMENT, st.sampled_from(list(bad)), SEGMENT)


BAD_NAMES = {
    "project": st.one_of(
        _NOT_A_COMPONENT,
        _with_a_bad_char("._:/\\\x00\x1fAÜ %"),
        st.sampled_from(["1p", "p-", "-p", "P", "a" * 31, "example:p", "example.com:../p", "example.com:P"]),
    ),
    "dataset": st.one_of(
        _NOT_A_COMPONENT,
        _with_a_bad_char(".-/\\ \x00\x1füｔ%:"),
        st.integers(256, 2000).map(lambda n: "d" * n),
    ),
    "table": st.one_of(
        _NOT_A_COMPONENT,
        _with_a_bad_char("./\\\x00\x1f\x7f\u2215\uff0f\u202e\n:%$"),
        st.integers(256, 2000).map(lambda n: "t" * n),
        st.integers(128, 600).map(lambda n: "ü" * n),  # over 255 bytes of UTF-8
    ),
}


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(BAD_NAMES)), data=st.data())
def test_table_store_refuses_names_that_are_not_bigquerys(tmp_path_factory, kind, data):
    bad = data.draw(BAD_NAMES[kind])
    root = tmp_path_factory.getbasetemp() / "tables"
    store = TableStore(root / "store")
    store.create_dataset("bpj-local", "d", exists_ok=True)
    before = set(os.listdir(root)), listing(root / "store")
    names = {"project": "bpj-local", "dataset": "d", "table": "t", kind: bad}
    p, d, t = names["project"], names["dataset"], names["table"]
    calls = [
        lambda: store.table_exists(p, d, t),
        lambda: store.create_table(p, d, t, pa.schema([("x", pa.int64())])),
        lambda: store.append(p, d, t, pa.table({"x": [1]})),
        lambda: store.read(p, d, t),
        lambda: store.delete_table(p, d, t),
    ]
    if kind != "table":
        calls += [
            lambda: store.create_dataset(p, d),
            lambda: store.delete_dataset(p, d, delete_contents=True),
        ]
    if kind == "project":
        calls.append(lambda: store.list_datasets(p))
    for call in calls:
        with pytest.raises(errors.InvalidArgument, match=f"Invalid {kind} ID"):
            call()
    assert (set(os.listdir(root)), listing(root / "store")) == before


def test_table_store_takes_bigquerys_names(tmp_path):
    store = TableStore(tmp_path)
    for project, dataset, table in [
        ("example.com:my-proj", "D_1", "my table-ü"),
        ("p", "d" * 255, "表\u3000a_b"),
        ("a" * 30, "x", "t" * 255),
    ]:
        store.create_dataset(project, dataset)
        store.create_table(project, dataset, table, pa.schema([("x", pa.int64())]))
        store.append(project, dataset, table, pa.table({"x": [1]}))
        assert store.read(project, dataset, table).num_rows == 1
        assert (tmp_path / project / dataset / table).is_dir()
