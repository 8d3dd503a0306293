"""Batch jobs on publisher models (Gemini, text embeddings) on the local stack, through bpj's own clients.

The stand-in's answers are pure functions of the request (bpj.local.publisher), so every output line or row is
checked request for request against them; the layout is the one bpj/local/publisher_job.py documents.
Malformed requests become per-row errors; a plug-in answers instead of the stand-in; cancel stops a plug-in
that never returns. Property tests cover the request checks and the stand-in's invariants.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import secrets
import time

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors, types
from bpj.local.publisher import (
    bad_request,
    embedding_problem,
    parse_model,
    request_problem,
    stand_in_embedding,
    stand_in_response,
    with_parameters,
)
from tests.local.conftest import wait_for

S = types.JobState
GEMINI = "publishers/google/models/gemini-2.0-flash-001"
EMBEDDING = "publishers/google/models/text-embedding-005"
IN, OUT = "pub-in", "pub-out"
PROCESSED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

# -- requests ----------------------------------------------------------------------------------------------

texts = st.text(max_size=80)
parts = st.lists(st.builds(lambda t: {"text": t}, texts), min_size=1, max_size=3)
contents = st.lists(
    st.builds(lambda r, p: {"role": r, "parts": p}, st.sampled_from(["user", "model"]), parts),
    min_size=1,
    max_size=3,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "maxOutputTokens": st.integers(1, 100),
        "candidateCount": st.integers(1, 4),
        "temperature": st.floats(0, 2),
    },
)
requests = st.builds(
    lambda c, g, s: {
        "contents": c,
        **({"generationConfig": g} if g else {}),
        **({"systemInstruction": s} if s else {}),
    },
    contents,
    configs,
    st.none() | st.builds(lambda p: {"parts": p}, parts),
)


def _drop_contents(r):
    return {k: v for k, v in r.items() if k != "contents"}


def _text_not_string(r):
    return {**r, "contents": [{"role": "user", "parts": [{"text": 3}]}]}


BREAKERS = [
    _drop_contents,
    lambda r: {**r, "contents": {}},
    lambda r: {**r, "contents": []},
    _text_not_string,
    lambda r: {**r, "contents": [{"role": "robot", "parts": [{"text": "hi"}]}]},
    lambda r: {**r, "contents": [{"role": "user", "parts": []}]},
    lambda r: {**r, "contents": [{"role": "user", "parts": [{"text": "a", "fileData": {}}]}]},
    lambda r: {**r, "unknownField": 1},
    lambda r: {**r, "generationConfig": {"maxOutputTokens": 0}},
    lambda r: {**r, "generationConfig": {"candidateCount": "2"}},
    lambda r: {**r, "generationConfig": []},
    lambda r: [r],
    lambda r: "text",
]


@given(requests)
def test_valid_requests_pass_and_the_stand_in_is_a_pure_documented_function(request):
    assert request_problem(request) is None
    a, b = (
        stand_in_response(request, "gemini-x"),
        stand_in_response(json.loads(json.dumps(request)), "gemini-x"),
    )
    assert a == b
    config = request.get("generationConfig", {})
    assert len(a["candidates"]) == config.get("candidateCount", 1)
    usage = a["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert a["modelVersion"] == "gemini-x@bpj-local-stand-in"
    for c in a["candidates"]:
        text = c["content"]["parts"][0]["text"]
        assert c["content"]["role"] == "model"
        if c["finishReason"] == "STOP":
            assert text.startswith("bpj local stand-in for gemini-x, not a real model.")
        else:
            assert c["finishReason"] == "MAX_TOKENS" and len(text) <= 4 * config["maxOutputTokens"]


@given(requests, st.sampled_from(BREAKERS))
def test_malformed_requests_are_refused(request, breaker):
    assert request_problem(breaker(request)) is not None


@given(st.text(max_size=300), st.sampled_from([None, "RETRIEVAL_QUERY", "CLUSTERING"]), st.integers(1, 768))
def test_stand_in_embeddings_are_unit_vectors_of_the_asked_dimension(content, task, size):
    instance = {"content": content, **({"task_type": task} if task else {})}
    assert embedding_problem(instance, None, "text-embedding-005") is None
    full = stand_in_embedding(instance, None, "text-embedding-005")
    assert len(full["values"]) == 768
    assert math.isclose(math.fsum(v * v for v in full["values"]), 1.0, rel_tol=1e-9)
    assert full == stand_in_embedding(dict(instance), {}, "text-embedding-005")
    short = stand_in_embedding(instance, {"outputDimensionality": size}, "text-embedding-005")
    assert len(short["values"]) == size
    assert math.isclose(math.fsum(v * v for v in short["values"]), 1.0, rel_tol=1e-9)
    assert short["statistics"] == {"token_count": math.ceil(len(content) / 4), "truncated": False}


def test_embedding_problems():
    assert embedding_problem({"content": 1}, None, "text-embedding-005")
    assert embedding_problem({"content": "a", "task_type": "NOPE"}, None, "text-embedding-005")
    assert embedding_problem({"content": "a", "title": "t"}, None, "text-embedding-005")
    assert not embedding_problem({"content": "a", "title": "t", "task_type": "RETRIEVAL_DOCUMENT"}, None, "m")
    assert embedding_problem({"content": "a"}, {"outputDimensionality": 769}, "text-embedding-005")
    assert embedding_problem({"content": "a" * 9000}, {"autoTruncate": False}, "text-embedding-005")
    cut = stand_in_embedding({"content": "a" * 9000}, None, "text-embedding-005")
    assert cut["statistics"] == {"token_count": 2048, "truncated": True}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
keyed = st.dictionaries(
    st.sampled_from(["request", "content", "task_type", "title", "contents", "parts", "text", "x"]),
    json_values | requests,
    max_size=4,
)


@given(st.lists(json_values | keyed | requests.map(lambda r: {"request": r}), max_size=5), json_values)
def test_the_predictor_answers_every_payload_with_a_response_or_a_status(payloads, parameters):
    from bpj.local.publisher import PublisherPredictor

    for model in (GEMINI, EMBEDDING):
        answers = PublisherPredictor(model).predict(payloads, parameters)
        assert len(answers) == len(payloads)
        for answer in answers:
            done = "response" in answer or "predictions" in answer
            assert done != ("status" in answer)
            json.dumps(answer, allow_nan=False)


@pytest.mark.parametrize(
    "name, parsed",
    [
        (GEMINI, ("google", "gemini-2.0-flash-001", None, None)),
        ("projects/p/locations/l/publishers/meta/models/llama@001", ("meta", "llama", "001", "l")),
        ("projects/p/locations/l/models/1", None),
        ("publishers/google/models/", None),
        ("publishers//models/x", None),
    ],
)
def test_parse_model(name, parsed):
    got = parse_model(name)
    assert (got and (got.publisher, got.model, got.version, got.location)) == parsed


# -- jobs on the stack -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def buckets(stack):
    for bucket in (IN, OUT):
        stack.gcs.create_bucket(bucket)


def good_request(i: int) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": f"prompt number {i}"}]}]}


LINES = [
    json.dumps({"id": 0, "request": good_request(0)}),
    "{not json",
    json.dumps({"id": 2, "request": {"contents": "hello"}}),
    json.dumps({"id": 3, "request": good_request(3)}),
    json.dumps({"id": 4}),
    json.dumps({"id": 5, "request": {**good_request(5), "generationConfig": {"candidateCount": 2}}}),
]
GOOD = {0, 3, 5}


def create(
    clients,
    stack,
    model,
    source,
    destination,
    *,
    fmt="jsonl",
    out_fmt="jsonl",
    parameters=None,
    explain=False,
):
    jobs, _ = clients
    job = types.BatchPredictionJob(display_name="publisher", model=model, generate_explanation=explain)
    if source.startswith("gs://"):
        job.input_config.instances_format = fmt
        job.input_config.gcs_source.uris.append(source)
    else:
        job.input_config.instances_format = "bigquery"
        job.input_config.bigquery_source.input_uri = source
    if destination.startswith("gs://"):
        job.output_config.predictions_format = out_fmt
        job.output_config.gcs_destination.output_uri_prefix = destination
    else:
        job.output_config.predictions_format = "bigquery"
        job.output_config.bigquery_destination.output_uri = destination
    if parameters is not None:
        job.model_parameters.struct_value.update(parameters)
    parent = f"projects/{stack.project}/locations/{stack.location}"
    return jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
    )


def finished(clients, name):
    jobs, _ = clients
    get = lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n))  # noqa: E731
    return wait_for(get, name)


def read_lines(stack, job):
    directory = job.output_info.gcs_output_directory
    listed = sorted(u for u in stack.gcs.list(directory + "/") if not u.endswith("/"))
    assert listed == [f"{directory}/predictions.jsonl"]
    return [json.loads(x) for x in stack.gcs.read(listed[0]).decode().split("\n") if x]


def test_gemini_gcs_job_writes_predictions_jsonl_request_for_request(stack, clients, buckets):
    stack.gcs.write(f"gs://{IN}/gemini.jsonl", "\n".join(LINES).encode())
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/gemini.jsonl", f"gs://{OUT}/g").name)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert re.fullmatch(
        rf"gs://{OUT}/g/prediction-model-\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}}Z",
        job.output_info.gcs_output_directory,
    )
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (3, 3)
    assert [f.code for f in job.partial_failures] == [3, 3, 3]
    lines = read_lines(stack, job)
    assert len(lines) == len(LINES)
    for n, (line, source) in enumerate(zip(lines, LINES, strict=True)):
        assert PROCESSED.match(line["processed_time"])
        if n in GOOD:
            sent = json.loads(source)
            assert line["status"] == ""
            assert line["id"] == sent["id"] and line["request"] == sent["request"]
            assert line["response"] == stand_in_response(sent["request"], "gemini-2.0-flash-001")
        else:
            assert line["status"].startswith("Bad Request: ") and "response" not in line
    assert "not valid JSON" in lines[1]["status"] and "request" not in lines[1]
    assert (
        lines[2]["request"] == {"contents": "hello"}
        and "contents must be a non-empty array" in lines[2]["status"]
    )
    assert "needs a request field" in lines[4]["status"] and lines[4]["id"] == 4


def test_full_publisher_name_and_its_location(stack, clients, buckets):
    stack.gcs.write(f"gs://{IN}/one.jsonl", LINES[0].encode())
    full = f"projects/{stack.project}/locations/{stack.location}/{GEMINI}"
    job = finished(clients, create(clients, stack, full, f"gs://{IN}/one.jsonl", f"gs://{OUT}/full").name)
    assert job.state == S.JOB_STATE_SUCCEEDED and job.model == full
    with pytest.raises(errors.InvalidArgument, match="publisher model must be in location"):
        create(
            clients,
            stack,
            f"projects/p/locations/elsewhere/{GEMINI}",
            f"gs://{IN}/one.jsonl",
            f"gs://{OUT}/x",
        )
    with pytest.raises(errors.InvalidArgument, match="reads jsonl"):
        create(clients, stack, GEMINI, f"gs://{IN}/one.jsonl", f"gs://{OUT}/x", fmt="csv")
    with pytest.raises(errors.InvalidArgument, match="writes jsonl"):
        create(clients, stack, GEMINI, f"gs://{IN}/one.jsonl", f"gs://{OUT}/x", out_fmt="csv")
    with pytest.raises(errors.InvalidArgument, match="do not give explanations"):
        create(clients, stack, GEMINI, f"gs://{IN}/one.jsonl", f"gs://{OUT}/x", explain=True)


def test_output_lines_are_strict_json_even_when_a_line_held_nan(stack, clients, buckets):
    # Python's JSON parser takes NaN and Infinity from a line; what is written back has null there.
    line = '{"n": NaN, "request": {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": NaN}}}'
    stack.gcs.write(f"gs://{IN}/nan.jsonl", f"{line}\n{LINES[0]}".encode())
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/nan.jsonl", f"gs://{OUT}/nan").name)
    text = stack.gcs.read(f"{job.output_info.gcs_output_directory}/predictions.jsonl").decode()

    def refuse(name):
        raise AssertionError(f"{name} in the output")

    first, _ = [json.loads(x, parse_constant=refuse) for x in text.split("\n") if x]
    assert first["n"] is None and first["request"]["generationConfig"] == {"temperature": None}
    assert "temperature must be a number from 0 to 2" in first["status"]


def test_model_parameters_fill_in_each_requests_generation_config(stack, clients, buckets):
    own = {**good_request(8), "generationConfig": {"maxOutputTokens": 50}}
    lines = [json.dumps({"request": good_request(7)}), json.dumps({"request": own})]
    stack.gcs.write(f"gs://{IN}/params.jsonl", "\n".join(lines).encode())
    params = {"maxOutputTokens": 2, "temperature": 0.5}
    job = create(clients, stack, GEMINI, f"gs://{IN}/params.jsonl", f"gs://{OUT}/params", parameters=params)
    first, second = read_lines(stack, finished(clients, job.name))
    assert first["request"] == good_request(7) and second["request"] == own
    assert first["response"]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert second["response"]["candidates"][0]["finishReason"] == "STOP"
    for line in (first, second):
        expected = stand_in_response(with_parameters(line["request"], params), "gemini-2.0-flash-001")
        assert line["response"] == expected


def test_a_job_whose_every_request_fails_fails(stack, clients, buckets):
    stack.gcs.write(f"gs://{IN}/bad.jsonl", b'{"request": {}}\n{"request": 1}\n')
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/bad.jsonl", f"gs://{OUT}/bad").name)
    assert job.state == S.JOB_STATE_FAILED
    assert job.error.message.startswith("All 2 requests failed.")
    assert job.completion_stats.failed_count == 2


def make_table(stack, dataset, table, schema, rows):
    stack.tables.create_dataset(stack.project, dataset, exists_ok=True)
    if stack.tables.table_exists(stack.project, dataset, table):  # the other transport's run made it
        stack.tables.delete_table(stack.project, dataset, table)
    stack.tables.create_table(stack.project, dataset, table, schema)
    stack.tables.append(stack.project, dataset, table, pa.Table.from_pylist(rows, schema))


def table_rows(stack, job):
    dataset = job.output_info.bigquery_output_dataset.removeprefix(f"bq://{stack.project}.")
    table = job.output_info.bigquery_output_table
    return stack.tables.read(stack.project, dataset, table)


def test_gemini_bigquery_in_and_out(stack, clients, buckets):
    schema = pa.schema([("id", pa.int64()), ("request", pa.string()), ("note", pa.string())])
    rows = [
        {"id": 1, "request": json.dumps(good_request(1)), "note": "a"},
        {"id": 2, "request": "{nope", "note": "b"},
        {"id": 3, "request": json.dumps({"contents": [{"parts": [{"text": 5}]}]}), "note": None},
        {"id": 4, "request": json.dumps(good_request(4)), "note": "d"},
    ]
    make_table(stack, "pub_src", "gemini", schema, rows)
    job = create(
        clients, stack, GEMINI, f"bq://{stack.project}.pub_src.gemini", f"bq://{stack.project}.pub_dst"
    )
    job = finished(clients, job.name)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.output_info.bigquery_output_dataset == f"bq://{stack.project}.pub_dst"
    assert re.fullmatch(
        r"predictions_\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z", job.output_info.bigquery_output_table
    )
    table = table_rows(stack, job)
    assert table.schema.names == ["id", "request", "note", "status", "processed_time", "response"]
    assert table.schema.field("processed_time").type == pa.timestamp("us", tz="UTC")
    got = sorted(table.to_pylist(), key=lambda r: r["id"])
    for row, sent in zip(got, rows, strict=True):
        assert (row["id"], row["request"], row["note"]) == (sent["id"], sent["request"], sent["note"])
        if sent["id"] in (1, 4):
            assert row["status"] == ""
            assert json.loads(row["response"]) == stand_in_response(
                json.loads(sent["request"]), "gemini-2.0-flash-001"
            )
        else:
            assert row["status"].startswith("Bad Request: ") and row["response"] is None
    assert (job.completion_stats.successful_count, job.completion_stats.failed_count) == (2, 2)


def test_gemini_across_stores(stack, clients, buckets):
    """JSONL in, BigQuery out: the lines' keys become columns (request as JSON text); BigQuery in, JSONL out:
    the row's values in their JSON form, the request as an object."""
    stack.gcs.write(f"gs://{IN}/cross.jsonl", "\n".join(LINES).encode())
    job = create(clients, stack, GEMINI, f"gs://{IN}/cross.jsonl", f"bq://{stack.project}.pub_cross")
    job = finished(clients, job.name)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    table = table_rows(stack, job)
    assert table.schema.names == ["id", "request", "status", "processed_time", "response"]
    assert table.schema.field("request").type == pa.string()
    rows = table.to_pylist()
    assert len(rows) == len(LINES)
    for n, (row, source) in enumerate(zip(rows, LINES, strict=True)):
        if n in GOOD:
            sent = json.loads(source)
            assert row["id"] == sent["id"] and json.loads(row["request"]) == sent["request"]
            assert json.loads(row["response"]) == stand_in_response(sent["request"], "gemini-2.0-flash-001")
        else:
            assert row["status"].startswith("Bad Request: ") and row["response"] is None

    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC")), ("request", pa.string())])
    make_table(stack, "pub_src", "cross", schema, [{"at": when, "request": json.dumps(good_request(7))}])
    job = finished(
        clients, create(clients, stack, GEMINI, f"bq://{stack.project}.pub_src.cross", f"gs://{OUT}/x").name
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    (line,) = read_lines(stack, job)
    assert line["at"] == when.isoformat() and line["request"] == good_request(7)
    assert line["response"] == stand_in_response(good_request(7), "gemini-2.0-flash-001")


def test_explicit_output_table_is_used_and_never_overwritten(stack, clients, buckets):
    schema = pa.schema([("request", pa.string())])
    make_table(stack, "pub_src", "one", schema, [{"request": json.dumps(good_request(9))}])
    table = f"answers_{secrets.token_hex(4)}"
    target = f"bq://{stack.project}.pub_explicit.{table}"
    job = finished(clients, create(clients, stack, GEMINI, f"bq://{stack.project}.pub_src.one", target).name)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.output_info.bigquery_output_table == table
    assert table_rows(stack, job).num_rows == 1
    again = finished(
        clients, create(clients, stack, GEMINI, f"bq://{stack.project}.pub_src.one", target).name
    )
    assert again.state == S.JOB_STATE_FAILED and "Already Exists" in again.error.message


def test_embeddings_gcs_and_bigquery(stack, clients, buckets):
    instances = [
        {"content": "banana bread"},
        {"content": "a query", "task_type": "RETRIEVAL_QUERY"},
        {"content": "doc", "task_type": "RETRIEVAL_DOCUMENT", "title": "T"},
        {"content": 7},
    ]
    stack.gcs.write(f"gs://{IN}/emb.jsonl", "\n".join(json.dumps(i) for i in instances).encode())
    params = {"outputDimensionality": 16}
    job = finished(
        clients,
        create(clients, stack, EMBEDDING, f"gs://{IN}/emb.jsonl", f"gs://{OUT}/e", parameters=params).name,
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    lines = read_lines(stack, job)
    for line, instance in zip(lines, instances, strict=True):
        assert line["instance"] == instance
        if isinstance(instance["content"], str):
            assert line["status"] == ""
            expected = stand_in_embedding(instance, params, "text-embedding-005")
            assert line["predictions"] == [{"embeddings": expected}] and len(expected["values"]) == 16
        else:
            assert line["status"] == bad_request("content is required and must be a string")
            assert "predictions" not in line

    schema = pa.schema([("content", pa.string()), ("k", pa.int64())])
    make_table(stack, "pub_src", "emb", schema, [{"content": "x", "k": 1}, {"content": "y", "k": 2}])
    job = finished(
        clients,
        create(clients, stack, EMBEDDING, f"bq://{stack.project}.pub_src.emb", f"bq://{stack.project}").name,
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.output_info.bigquery_output_dataset.startswith(f"bq://{stack.project}.prediction_model_")
    table = table_rows(stack, job)
    assert table.schema.names == ["content", "k", "predictions", "status"]
    for row in table.to_pylist():
        expected = stand_in_embedding({"content": row["content"]}, None, "text-embedding-005")
        assert json.loads(row["predictions"]) == [{"embeddings": expected}] and row["status"] == ""


PLUGIN = """
import time

class Echo:
    def __init__(self, model_name):
        self.model_name = model_name

    def generate(self, request):
        text = request["contents"][0]["parts"][0]["text"]
        if text == "boom":
            raise RuntimeError("the plug-in refused")
        if text == "hang":
            time.sleep(3600)
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text[::-1]}]}}],
                "modelVersion": "echo:" + self.model_name}

    def embed(self, instance, parameters):
        return [1.0, 0.0]
"""


@pytest.fixture
def plugin(stack, tmp_path):
    path = tmp_path / "echo_plugin.py"
    path.write_text(PLUGIN)
    stack.publisher_model = f"{path}:Echo"
    yield
    stack.publisher_model = None


def text_request(text):
    return json.dumps({"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}})


def test_a_plugged_in_model_answers_and_its_errors_stay_in_their_rows(stack, clients, buckets, plugin):
    stack.gcs.write(f"gs://{IN}/plug.jsonl", "\n".join([text_request("abc"), text_request("boom")]).encode())
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/plug.jsonl", f"gs://{OUT}/p").name)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    first, second = read_lines(stack, job)
    assert first["response"]["candidates"][0]["content"]["parts"][0]["text"] == "cba"
    assert first["response"]["modelVersion"] == f"echo:{GEMINI}"
    assert (
        second["status"].startswith("Internal Server Error: ") and "the plug-in refused" in second["status"]
    )
    assert job.partial_failures[0].code == int(errors.Code.INTERNAL)

    stack.gcs.write(f"gs://{IN}/plug-emb.jsonl", b'{"content": "x"}\n')
    job = finished(
        clients, create(clients, stack, EMBEDDING, f"gs://{IN}/plug-emb.jsonl", f"gs://{OUT}/pe").name
    )
    (line,) = read_lines(stack, job)
    assert line["predictions"][0]["embeddings"] == {
        "statistics": {"token_count": 1, "truncated": False},
        "values": [1.0, 0.0],
    }


def test_the_environment_variable_plugs_a_model_in_too(stack, clients, buckets, tmp_path, monkeypatch):
    path = tmp_path / "env_plugin.py"
    path.write_text(PLUGIN)
    monkeypatch.setenv("BPJ_PUBLISHER_MODEL", f"{path}:Echo")  # read by the stack when a job starts
    stack.gcs.write(f"gs://{IN}/env.jsonl", text_request("xyz").encode())
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/env.jsonl", f"gs://{OUT}/env").name)
    (line,) = read_lines(stack, job)
    assert line["response"]["candidates"][0]["content"]["parts"][0]["text"] == "zyx"


def test_a_plugin_that_cannot_load_fails_the_job_naming_it(stack, clients, buckets):
    stack.publisher_model = "no_such_module_here:Model"
    try:
        stack.gcs.write(f"gs://{IN}/one.jsonl", LINES[0].encode())
        job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/one.jsonl", f"gs://{OUT}/nl").name)
    finally:
        stack.publisher_model = None
    assert job.state == S.JOB_STATE_FAILED
    assert "BPJ_PUBLISHER_MODEL='no_such_module_here:Model'" in job.error.message


def test_cancel_stops_a_plugin_that_never_returns(stack, clients, buckets, plugin):
    jobs, _ = clients
    stack.gcs.write(f"gs://{IN}/hang.jsonl", text_request("hang").encode())
    job = create(clients, stack, GEMINI, f"gs://{IN}/hang.jsonl", f"gs://{OUT}/h")
    finished_running = wait_for(
        lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)),
        job.name,
        states={S.JOB_STATE_RUNNING},
    )
    time.sleep(0.5)  # into generate()
    started = time.monotonic()
    jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=finished_running.name))
    job = wait_for(
        lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)),
        job.name,
        timeout=15,
    )
    assert job.state == S.JOB_STATE_CANCELLED
    assert time.monotonic() - started < 10


# A line of a Gemini input: a request (valid or broken) with its number, or any text at all.
mixed_lines = st.one_of(
    (requests | st.sampled_from(BREAKERS).map(lambda b: b(good_request(1)))).map(lambda r: ("request", r)),
    st.text(max_size=40).filter(lambda t: "\n" not in t).map(lambda t: ("text", t)),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mixed_lines, min_size=1, max_size=6).filter(lambda m: any(k == "request" for k, _ in m)))
def test_any_mix_of_lines_comes_back_line_for_line(stack, clients, buckets, mix):
    lines = [json.dumps({"n": i, "request": v}) if k == "request" else v for i, (k, v) in enumerate(mix)]
    stack.gcs.write(f"gs://{IN}/mix.jsonl", "\n".join(lines).encode())
    job = finished(clients, create(clients, stack, GEMINI, f"gs://{IN}/mix.jsonl", f"gs://{OUT}/mix").name)
    kept = [
        (k, v) for (k, v), line in zip(mix, lines, strict=True) if line.strip()
    ]  # blank lines are skipped
    good = [k == "request" and request_problem(v) is None for k, v in kept]
    assert job.completion_stats.successful_count == sum(good)
    assert job.completion_stats.failed_count == len(kept) - sum(good)
    if not any(good):
        assert job.state == S.JOB_STATE_FAILED
        return
    out = read_lines(stack, job)
    assert len(out) == len(kept)
    requests_out = [x for x in out if "n" in x]
    assert [mix[x["n"]][1] for x in requests_out] == [v for k, v in kept if k == "request"]
    for x, (kind, value), ok in zip(out, kept, good, strict=True):
        assert PROCESSED.match(x["processed_time"]) and (x["status"] == "") == ok
        if kind == "request":
            assert x["request"] == value
        if ok:
            assert x["response"] == stand_in_response(value, "gemini-2.0-flash-001")


def test_fake_vertex_takes_publisher_models():
    from bpj.testing.fake import FakeVertex

    with FakeVertex() as fake:
        parent = fake.parent
        job = types.BatchPredictionJob(display_name="g", model=GEMINI)
        job.input_config.instances_format = "jsonl"
        job.input_config.gcs_source.uris.append("gs://bkt/in.jsonl")
        job.output_config.predictions_format = "jsonl"
        job.output_config.gcs_destination.output_uri_prefix = "gs://bkt/out"
        from bpj._gen.services.job_service import JobServiceClient

        created = JobServiceClient(fake.transport).create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
        )
        assert created.model == GEMINI
        done = fake.finish(created.name, successful=1)
        assert re.fullmatch(r"gs://bkt/out/prediction-model-\S+Z", done.output_info.gcs_output_directory)
        job.output_config.ClearField("gcs_destination")
        job.output_config.predictions_format = "bigquery"
        job.output_config.bigquery_destination.output_uri = "bq://proj.d"
        created = JobServiceClient(fake.transport).create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
        )
        done = fake.finish(created.name, successful=1)
        assert done.output_info.bigquery_output_dataset == "bq://proj.d"
        assert done.output_info.bigquery_output_table.startswith("predictions_")
