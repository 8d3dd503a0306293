"""No URI, name or value a client sends to the Vertex emulator reaches outside the data dir or breaks what REST
serves: hostile URIs, non-finite Values and hostile artifact object names, against the real stack over gRPC and
REST (and the artifact copy directly, with a fake GCS)."""

from __future__ import annotations

import json
import math
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj.errors import FailedPrecondition
from bpj.local.bigquery.store import TableStore
from bpj.local.models import load_predictor
from bpj.transport.grpc import GrpcTransport
from bpj.transport.rest import RestTransport
from tests.local.conftest import SKLEARN_IMAGE, S, wait_for

PROJECT = "bpj-local"
PARENT = f"projects/{PROJECT}/locations/us-central1"
CPR_IMAGE = "europe-docker.pkg.dev/my-project/serving/model-server:1"
PREDICTOR = "class P:\n    def load(self, d): pass\n    def predict(self, body): return body['instances']\n"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    """A directory outside the data dir holding what an attacker would like the stack to load."""
    d = tmp_path_factory.mktemp("sentinel")
    (d / "model.pkl").write_bytes(b"never loaded")
    (d / "predictor.py").write_text(PREDICTOR)
    return d


@pytest.fixture(scope="module")
def grpc(stack):
    transport = GrpcTransport(stack.api_endpoint)
    yield transport
    transport.close()


@pytest.fixture(scope="module", params=["grpc", "rest"])
def clients(request, stack):
    transport = (
        GrpcTransport(stack.api_endpoint) if request.param == "grpc" else RestTransport(stack.rest_endpoint)
    )
    yield JobServiceClient(transport), ModelServiceClient(transport)
    transport.close()


def listing(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


class Outside:
    """What exists outside the data dir: the entries of its parent (the pytest base temp dir) and everything
    under the sentinel directory."""

    def __init__(self, stack, sentinel: Path) -> None:
        self.parent = Path(stack.root).resolve().parent
        self.sentinel = sentinel
        self.before = self.take()

    def take(self) -> tuple[set[str], set[str]]:
        return set(os.listdir(self.parent)), listing(self.sentinel)

    def unchanged(self) -> None:
        assert self.take() == self.before


# -- hostile URIs ------------------------------------------------------------------------------------------

_SEGMENT = st.text(st.sampled_from("abcxyz019-_"), min_size=1, max_size=8)
_DOTS = st.sampled_from(["..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e", "．．", "..%2f..", "%00"])


def _host_paths(sentinel: Path) -> st.SearchStrategy[str]:
    target = st.builds(lambda s: f"{sentinel}/{s}", _SEGMENT) | st.sampled_from(
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
    segments = draw(st.lists(_SEGMENT, min_size=0, max_size=3))
    at = draw(st.integers(0, len(segments)))
    sep = draw(st.sampled_from(["/", "\\"]))
    segments[at:at] = [draw(_DOTS)] * draw(st.integers(1, 3))
    name = sep.join(segments)
    return f"gs://{bucket}/{name}{draw(st.sampled_from(['', '/', sep + 'x']))}"


_BAD_CHARS = st.sampled_from(["\x00", "\n", "\r", "\x01", "\x1f", "\x7f"])
_GCS_OTHERS = st.one_of(
    st.builds(lambda c, s: f"gs://bpj-in/{s}{c}{s}", _BAD_CHARS, _SEGMENT),
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
    st.builds(lambda c, s: f"bq://p.{s}.t{c}", _BAD_CHARS, _SEGMENT),
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


def a_job(field: str, value: str) -> types.BatchPredictionJob:
    job = types.BatchPredictionJob(display_name="hostile")
    if field == "unmanaged_artifact_uri":
        job.unmanaged_container_model.artifact_uri = value
        job.unmanaged_container_model.container_spec.image_uri = SKLEARN_IMAGE
    else:
        job.model = f"{PARENT}/models/does-not-exist"
    if field == "bigquery_source":
        job.input_config.instances_format = "bigquery"
        job.input_config.bigquery_source.input_uri = value
    else:
        job.input_config.instances_format = "jsonl"
        job.input_config.gcs_source.uris.extend(["gs://bpj-in/ok.jsonl", value])
    if field == "bigquery_destination":
        job.output_config.predictions_format = "bigquery"
        job.output_config.bigquery_destination.output_uri = value
    else:
        job.output_config.predictions_format = "jsonl"
        job.output_config.gcs_destination.output_uri_prefix = (
            value if field == "gcs_destination_prefix" else "gs://bpj-out/run"
        )
    return job


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


def test_valid_uris_still_pass(clients):
    jobs, models = clients
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


# -- values JSON cannot carry ------------------------------------------------------------------------------

NON_FINITE = [math.nan, math.inf, -math.inf]


def _value(x: float, where: str) -> tuple[types.Value, str]:
    v = types.Value()
    if where == "top":
        v.number_value = x
        return v, ""
    if where == "struct":
        v.struct_value.fields["scale"].number_value = x
        return v, "['scale']"
    inner = v.struct_value.fields["a"].list_value.values
    inner.add().number_value = 1.0
    inner.add().struct_value.fields["b"].number_value = x
    return v, "['a'][1]['b']"


def rest_post(stack, path: str, body: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{stack.rest_endpoint}/v1/{path}",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rest_list_works(stack) -> None:
    for what in ("batchPredictionJobs", "models"):
        with urllib.request.urlopen(f"{stack.rest_endpoint}/v1/{PARENT}/{what}", timeout=30) as response:
            assert response.status == 200
            json.loads(response.read())


@pytest.mark.parametrize("where", ["top", "struct", "nested"])
@pytest.mark.parametrize("x", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_model_parameters_over_grpc(stack, grpc, x, where):
    value, path = _value(x, where)
    job = a_job("gcs_source", "gs://bpj-in/more.jsonl")
    job.model_parameters.CopyFrom(value)
    jobs = JobServiceClient(grpc)
    with pytest.raises(errors.InvalidArgument) as info:
        jobs.create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
        )
    assert f"Field: batch_prediction_job.model_parameters{path};" in info.value.message
    rest_list_works(stack)


def test_non_finite_values_elsewhere_over_grpc(stack, grpc):
    transport = grpc
    job = a_job("gcs_source", "gs://bpj-in/more.jsonl")
    job.explanation_spec.metadata.inputs["x"].input_baselines.add().number_value = math.inf
    job.explanation_spec.parameters.output_indices.values.add().number_value = math.nan
    with pytest.raises(errors.InvalidArgument) as info:
        JobServiceClient(transport).create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
        )
    assert (
        "batch_prediction_job.explanation_spec.metadata.inputs['x'].input_baselines[0];" in info.value.message
    )
    assert "batch_prediction_job.explanation_spec.parameters.output_indices[0];" in info.value.message
    model = types.Model(display_name="m", artifact_uri="gs://bpj-models/m")
    model.container_spec.image_uri = SKLEARN_IMAGE
    model.metadata.list_value.values.add().number_value = -math.inf
    model.container_spec.deployment_timeout.seconds = 10**15  # out of a Duration's JSON range
    with pytest.raises(errors.InvalidArgument) as info:
        ModelServiceClient(transport).upload_model(types.UploadModelRequest(parent=PARENT, model=model))
    assert "Field: model.metadata[0];" in info.value.message
    assert "Field: model.container_spec.deployment_timeout;" in info.value.message
    rest_list_works(stack)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_over_rest(stack, token):
    job = {
        "displayName": "nan",
        "model": f"{PARENT}/models/does-not-exist",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://bpj-in/a.jsonl"]}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": "gs://bpj-out/r"},
        },
    }
    body = json.dumps(job)[:-1] + f', "modelParameters": {{"a": [1, {{"b": {token}}}]}}}}'
    status, answer = rest_post(stack, f"{PARENT}/batchPredictionJobs", body)
    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert "batch_prediction_job.model_parameters['a'][1]['b']" in answer["error"]["message"]
    model = json.dumps({"model": {"displayName": "m", "containerSpec": {"imageUri": "i"}, "metadata": 0}})
    model = model.replace('"metadata": 0', f'"metadata": {token}')
    status, answer = rest_post(stack, f"{PARENT}/models:upload", model)
    assert status == 400 and "Field: model.metadata;" in answer["error"]["message"]
    rest_list_works(stack)
    # A finite one is stored and served.
    status, answer = rest_post(stack, f"{PARENT}/batchPredictionJobs", body.replace(token, "1e308"))
    assert status == 200 and answer["modelParameters"] == {"a": [1, {"b": 1e308}]}
    rest_list_works(stack)


# -- artifact object names ---------------------------------------------------------------------------------


class FakeGcs:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def fetch(self, uri: str) -> bytes:
        return self.objects[uri]

    def list_dir(self, prefix: str) -> list[str]:
        return [u for u in self.objects if u.startswith(prefix)]


def _cpr(uri: str) -> types.Model:
    model = types.Model(display_name="cpr", artifact_uri=uri)
    model.container_spec.image_uri = CPR_IMAGE
    model.container_spec.env.append(types.EnvVar(name="BPJ_PREDICTOR", value="predictor:P"))
    return model


def _hostile_names(target: Path) -> st.SearchStrategy[str]:
    """Relative names (after the artifact prefix and its '/') that would write somewhere else."""
    segment = st.one_of(_SEGMENT, st.sampled_from(["..", ".", "", "ü", "a b"]))
    return st.one_of(
        st.builds(
            lambda s: f"/{target}/{s}", _SEGMENT
        ),  # object m//<abs path>: Path(dest) / "/..." is absolute
        st.builds(lambda s: f"//{target}/{s}", _SEGMENT),
        st.lists(segment, min_size=1, max_size=5)
        .map("/".join)
        .filter(lambda n: any(p in ("", ".", "..") for p in n.split("/"))),
        st.lists(st.sampled_from(["..", "x", "."]), min_size=1, max_size=4).map(
            lambda p: "\\".join(p) + "\\.."
        ),
        st.sampled_from(["..", ".", "", "../../x", "a/../../x", f"../{target.name}/x", "a/", "/"]),
    )


def test_copy_refuses_names_that_leave_the_directory(tmp_path_factory, sentinel):
    root = tmp_path_factory.mktemp("copy")
    workdir = root / "work"
    outside = listing(sentinel), set(os.listdir(root.parent))

    @settings(max_examples=30, deadline=None)
    @given(name=_hostile_names(sentinel))
    def check(name):
        prefix = "gs://bpj-models/m/"
        gcs = FakeGcs({prefix + "predictor.py": PREDICTOR.encode(), prefix + name: b"pwned = True\n"})
        before = listing(root)
        if name == "" or name.endswith("/"):  # a "directory" placeholder object: not an artifact, skipped
            load_predictor(_cpr("gs://bpj-models/m"), gcs.fetch, gcs.list_dir, workdir)
        else:
            with pytest.raises(FailedPrecondition) as info:
                load_predictor(_cpr("gs://bpj-models/m"), gcs.fetch, gcs.list_dir, workdir)
            assert repr(name) in info.value.message and "rename the object" in info.value.message
            new = listing(root) - before
            assert not [p for p in new if Path(p).is_file()]  # refused before writing anything
        assert (listing(sentinel), set(os.listdir(root.parent))) == outside
        assert all(
            Path(p).resolve().is_relative_to(workdir.resolve()) for p in listing(root) - {str(workdir)}
        )

    check()


def test_copy_keeps_ordinary_names(tmp_path):
    prefix = "gs://bpj-models/m/"
    objects = {
        prefix + "predictor.py": PREDICTOR.encode(),
        prefix + "data/ü b/x.txt": b"1",
        prefix + "a..b": b"2",
    }
    predictor = load_predictor(
        _cpr("gs://bpj-models/m"), FakeGcs(objects).fetch, FakeGcs(objects).list_dir, tmp_path
    )
    copied = {
        p.relative_to(tmp_path).as_posix().split("/", 1)[1]
        for p in tmp_path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert copied == {"predictor.py", "data/ü b/x.txt", "a..b"}
    assert predictor.predict([1, 2]) == [1, 2]


class NamePreservingGcs:
    """The two Cloud Storage JSON API calls a model load makes (list under a prefix, download an object), over a
    dict: unlike fake-gcs-server, which folds ``//`` in object names into ``/``, it keeps every name as given,
    as Cloud Storage does."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        import http.server
        import threading

        store = objects

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                params = urllib.parse.parse_qs(query)
                bucket, _, rest = urllib.parse.unquote(path.removeprefix("/storage/v1/b/")).partition("/")
                if rest == "o":
                    prefix = f"gs://{bucket}/" + params.get("prefix", [""])[0]
                    names = [u.split("/", 3)[3] for u in store if u.startswith(prefix)]
                    body = json.dumps({"items": [{"name": n} for n in names]}).encode()
                else:
                    uri = f"gs://{bucket}/" + urllib.parse.unquote(path.split("/o/", 1)[1])
                    if uri not in store:
                        self.send_error(404)
                        return
                    body = store[uri]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("rest", ["/{escape}", "//{escape}", "a//..//..//{escape}"])
def test_job_with_an_absolute_object_name_cannot_write_outside_its_workdir(tmp_path_factory, sentinel, rest):
    from bpj.local.stack import LocalStack

    escape = sentinel / "escaped.py"
    name = rest.format(escape=str(escape).lstrip("/"))
    gcs = NamePreservingGcs(
        {"gs://bpj-models/evil/predictor.py": PREDICTOR.encode(), f"gs://bpj-models/evil/{name}": b"pwned\n"}
    )
    try:
        with LocalStack(tmp_path_factory.mktemp("stack"), gcs_endpoint=gcs.endpoint) as stack:
            outside = Outside(stack, sentinel)
            assert f"gs://bpj-models/evil/{name}" in stack.gcs.list("gs://bpj-models/evil/")
            transport = GrpcTransport(stack.api_endpoint)
            op = ModelServiceClient(transport).upload_model(
                types.UploadModelRequest(parent=PARENT, model=_cpr("gs://bpj-models/evil"))
            )
            response = types.UploadModelResponse()
            op.response.Unpack(response)
            job = a_job("gcs_source", "gs://bpj-in/evil.jsonl")
            job.model = response.model
            jobs = JobServiceClient(transport)
            created = jobs.create_batch_prediction_job(
                types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job)
            )
            done = wait_for(
                lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)),
                created.name,
            )
            transport.close()
            assert done.state == S.JOB_STATE_FAILED, done
            assert repr(name) in done.error.message and "rename the object" in done.error.message
            assert not escape.exists()
            outside.unchanged()
            written = [p for p in listing(Path(stack.root) / "work") if Path(p).is_file()]
            assert not [p for p in written if p.endswith("escaped.py")]
    finally:
        gcs.close()


# -- the table store -------------------------------------------------------------------------------------


_NOT_A_COMPONENT = st.sampled_from(["", ".", "..", "../x", "a/b", "/etc", "a\\b", "..\\x", "x\x00", "t\n"])


def _with_a_bad_char(bad: str) -> st.SearchStrategy[str]:
    return st.builds(lambda a, c, b: a + c + b, _SEGMENT, st.sampled_from(list(bad)), _SEGMENT)


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
