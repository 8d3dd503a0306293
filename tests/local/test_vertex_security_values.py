"""Nothing a client sends to the Vertex emulator breaks what REST serves or writes outside the data dir: Values
and Durations JSON cannot carry (over gRPC and REST), and model artifact object names that would leave the copy
(the copy directly with a fake GCS, and a whole job against a GCS that keeps every name as given). Hostile URIs
are in test_vertex_security.py."""

from __future__ import annotations

import json
import math
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj.errors import FailedPrecondition
from bpj.local.models import load_predictor
from bpj.transport.grpc import GrpcTransport
from tests.local.conftest import SKLEARN_IMAGE, S, wait_for
from tests.local.hostile import PARENT, PREDICTOR, SEGMENT, Outside, a_job, listing

CPR_IMAGE = "europe-docker.pkg.dev/my-project/serving/model-server:1"


@pytest.fixture(scope="module")
def grpc(stack):
    transport = GrpcTransport(stack.api_endpoint)
    yield transport
    transport.close()


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
    segment = st.one_of(SEGMENT, st.sampled_from(["..", ".", "", "ü", "a b"]))
    return st.one_of(
        st.builds(
            lambda s: f"/{target}/{s}", SEGMENT
        ),  # object m//<abs path>: Path(dest) / "/..." is absolute
        st.builds(lambda s: f"//{target}/{s}", SEGMENT),
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
