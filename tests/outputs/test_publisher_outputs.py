"""Outputs of publisher models (Gemini, text embeddings) through the readers, on a real local stack: its
fake-gcs-server for ``predictions.jsonl`` objects and its table store behind the Storage Read server for
output tables, both written here in the layout Vertex AI documents (see bpj/local/publisher_job.py).

The expected values come from the rows as written (``json``), never from the code under test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import errors
from bpj.outputs import aio, embeddings, gemini_text, read_gcs
from bpj.outputs.bigquery import BigQueryReader
from bpj.outputs.json_columns import JSON_EXTENSION, parse
from bpj.outputs.reader import Reader

BUCKET = "publisher-outputs"
PROJECT, DATASET = "proj", "publisher_out"
JSON_META = {b"ARROW:extension:name": JSON_EXTENSION}
_names = itertools.count()
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("stack")) as s:
        s.gcs.create_bucket(BUCKET)
        s.tables.create_dataset(PROJECT, DATASET)
        yield s


def fresh_dir() -> str:
    return f"gs://{BUCKET}/out{next(_names)}/prediction-model-2026-12-01T00:00:00.000000Z"


def write_predictions(stack, rows: list[dict[str, Any]], directory: str | None = None) -> str:
    """``rows`` as the one ``predictions.jsonl`` of a job's output directory, with its marker object."""
    directory = directory or fresh_dir()
    stack.gcs.write(f"{directory}/", b"")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    stack.gcs.write(f"{directory}/predictions.jsonl", body)
    return directory


def gcs(stack, uri: str, **options: Any):
    return read_gcs(uri, endpoint=stack.gcs_endpoint, progress=False, **options)


def bigquery(stack, table: str, **options: Any) -> BigQueryReader:
    return BigQueryReader(
        f"bq://{PROJECT}.{DATASET}.{table}",
        endpoint=stack.bigquery_storage_endpoint,
        progress=False,
        **options,
    )


def without_nulls(value: Any) -> Any:
    """A value read back with the keys other rows brought in (null here) left out again."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# -- generated Gemini outputs -------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_count = st.integers(0, 10_000)
_part = st.one_of(
    st.fixed_dictionaries({"text": _text}),
    st.fixed_dictionaries(
        {"functionCall": st.fixed_dictionaries({"name": _text, "args": st.just({"q": "x"})})}
    ),
)
_candidate = st.one_of(
    st.fixed_dictionaries(
        {
            "content": st.fixed_dictionaries(
                {"role": st.just("model"), "parts": st.lists(_part, max_size=3)}
            ),
            "finishReason": st.sampled_from(["STOP", "MAX_TOKENS"]),
        },
        optional={"avgLogprobs": st.floats(-5, 0)},
    ),
    st.fixed_dictionaries({"finishReason": st.just("SAFETY")}),  # a blocked answer: no content
)
_usage = st.fixed_dictionaries(
    {}, optional={"promptTokenCount": _count, "candidatesTokenCount": _count, "totalTokenCount": _count}
)
_answered = st.fixed_dictionaries(
    {"candidates": st.lists(_candidate, min_size=1, max_size=2), "usageMetadata": _usage},
    optional={"modelVersion": st.just("gemini-2.0-flash-001"), "responseId": _text},
)
_blocked = st.fixed_dictionaries(
    {
        "promptFeedback": st.fixed_dictionaries({"blockReason": st.sampled_from(["SAFETY", "OTHER"])}),
        "usageMetadata": _usage,
    }
)
_request = st.fixed_dictionaries(
    {
        "contents": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "parts": st.lists(_part, max_size=2)}), max_size=2
        )
    },
    optional={"generationConfig": st.fixed_dictionaries({"temperature": st.floats(0, 2)})},
)


@st.composite
def gemini_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Output lines as a Gemini batch job writes them: successes, failed rows (status, no response),
    blocked prompts (promptFeedback, no candidates), in input order, each with the input's ``id``."""
    rows = []
    for i in range(draw(st.integers(0, 12))):
        row: dict[str, Any] = {"id": i}
        kind = draw(st.sampled_from(["answered", "answered", "blocked", "failed"]))
        row["status"] = (
            draw(st.sampled_from(["Bad Request: malformed", "INTERNAL: boom"])) if kind == "failed" else ""
        )
        row["processed_time"] = f"2026-12-01T00:00:{i % 60:02d}.123+00:00"
        row["request"] = draw(_request)
        if kind != "failed":
            row["response"] = draw(_answered if kind == "answered" else _blocked)
        rows.append(row)
    return rows


def expected_text(row: dict[str, Any]) -> dict[str, Any]:
    response = row.get("response") or {}
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates else None
    usage = response.get("usageMetadata") or {}
    return {
        "text": None
        if first is None
        else "".join(p["text"] for p in (first.get("content") or {}).get("parts", []) if "text" in p),
        "finish_reason": None if first is None else first.get("finishReason"),
        "block_reason": (response.get("promptFeedback") or {}).get("blockReason"),
        "prompt_token_count": usage.get("promptTokenCount"),
        "candidates_token_count": usage.get("candidatesTokenCount"),
        "total_token_count": usage.get("totalTokenCount"),
        "status": row["status"],
        "id": row["id"],
    }


def gemini_table(stack, rows: list[dict[str, Any]], *, json_type: bool) -> str:
    """The rows as Vertex AI's output table: the input's columns (``id``, ``request``), then ``status``,
    ``processed_time`` and ``response``; ``request``/``response`` of BigQuery's JSON type when
    ``json_type``, else JSON text in STRING columns (as the local stack writes them)."""
    name = f"predictions_{next(_names)}"
    meta = JSON_META if json_type else None
    schema = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("request", pa.string(), metadata=meta),
            pa.field("status", pa.string()),
            pa.field("processed_time", pa.timestamp("us", tz="UTC")),
            pa.field("response", pa.string(), metadata=meta),
        ]
    )
    stack.tables.create_table(PROJECT, DATASET, name, schema)
    if rows:
        data = {
            "id": [r["id"] for r in rows],
            "request": [json.dumps(r["request"]) for r in rows],
            "status": [r["status"] for r in rows],
            "processed_time": [dt.datetime.fromisoformat(r["processed_time"]) for r in rows],
            "response": [json.dumps(r["response"]) if "response" in r else None for r in rows],
        }
        stack.tables.append(PROJECT, DATASET, name, pa.table(data, schema=schema))
    return name


@SETTINGS
@given(rows=gemini_rows())
def test_gemini_lines_read_nested_from_gcs(stack, rows):
    directory = write_predictions(stack, rows)
    reader = gcs(stack, directory, ordered=True)
    table = reader.to_arrow()
    assert [without_nulls(r) for r in table.to_pylist()] == rows
    if any("response" in r for r in rows):
        assert pa.types.is_struct(table.schema.field("response").type)
        assert pa.types.is_struct(table.schema.field("request").type)
    assert reader.texts(keep=["id"]).to_pylist() == [expected_text(r) for r in rows]
    if rows:
        frame = reader.to_pandas()
        assert list(frame["status"]) == [r["status"] for r in rows]


@SETTINGS
@given(rows=gemini_rows(), json_type=st.booleans())
def test_gemini_tables_read_nested_from_bigquery(stack, rows, json_type):
    name = gemini_table(stack, rows, json_type=json_type)
    reader = bigquery(stack, name, ordered=True)
    table = reader.to_arrow()
    got = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [without_nulls(r["response"]) for r in got] == [r.get("response") for r in rows]
    assert [without_nulls(r["request"]) for r in got] == [r["request"] for r in rows]
    assert [r["processed_time"] for r in got] == [
        dt.datetime.fromisoformat(r["processed_time"]) for r in rows
    ]
    if any("response" in r for r in rows):
        assert pa.types.is_struct(table.schema.field("response").type)
    texts = sorted(reader.texts(keep=["id"]).to_pylist(), key=lambda r: r["id"])
    assert texts == [expected_text(r) for r in rows]
    # The session's schema keeps BigQuery's types; parse_json=False keeps the text.
    assert reader.schema.field("response").type == pa.string()
    raw = bigquery(stack, name, parse_json=False).to_arrow()
    assert sorted(
        zip(raw.column("id").to_pylist(), raw.column("response").to_pylist(), strict=True)
    ) == sorted((r["id"], json.dumps(r["response"]) if "response" in r else None) for r in rows)


def test_the_same_output_reads_alike_from_gcs_and_bigquery(stack):
    rows = [
        {
            "id": 1,
            "status": "",
            "processed_time": "2026-12-01T00:00:01.000+00:00",
            "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            "response": {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "he"}, {"text": "llo"}]},
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3},
                "modelVersion": "gemini-2.0-flash-001",
            },
        },
        {
            "id": 2,
            "status": "Bad Request: no contents",
            "processed_time": "2026-12-01T00:00:02.000+00:00",
            "request": {"contents": []},
        },
        {
            "id": 3,
            "status": "",
            "processed_time": "2026-12-01T00:00:03.000+00:00",
            "request": {"contents": [{"role": "user", "parts": [{"text": "?"}]}]},
            "response": {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1},
            },
        },
    ]
    from_gcs = gcs(stack, write_predictions(stack, rows), ordered=True)
    from_bq = bigquery(stack, gemini_table(stack, rows, json_type=True), ordered=True)
    texts = from_gcs.texts(keep=["id"])
    assert texts.to_pylist() == from_bq.texts(keep=["id"]).sort_by("id").to_pylist()
    assert texts.column("text").to_pylist() == ["hello", None, None]
    assert texts.column("block_reason").to_pylist() == [None, None, "SAFETY"]
    assert texts.column("total_token_count").to_pylist() == [3, None, 1]
    assert texts.to_pandas()["status"].tolist() == ["", "Bad Request: no contents", ""]
    for reader in (from_gcs, from_bq):
        response = reader.to_arrow().sort_by("id").column("response")
        assert response.type.field("candidates").type.value_type.field("content").type.field(
            "parts"
        ).type == pa.list_(pa.struct([("text", pa.string())]))
    # texts() on BigQuery reads only the columns it needs.
    assert sorted(from_bq.only(["response", "status", "id", "nope"]).schema.names) == [
        "id",
        "response",
        "status",
    ]
    assert from_gcs.only(["response"]) is from_gcs
    # The function works on a table already read, and on a record batch.
    assert gemini_text(from_gcs.to_arrow(), keep=["id"]).to_pylist() == texts.to_pylist()
    batch = from_gcs.to_arrow().combine_chunks().to_batches()[0]
    assert gemini_text(batch).column("text").to_pylist() == ["hello", None, None]
    with pytest.raises(errors.UsageError, match="keep: no column 'nope'"):
        gemini_text(batch, keep=["nope"])


def test_async_texts_and_embeddings(stack):
    rows = [
        {
            "id": 7,
            "status": "",
            "processed_time": "2026-12-01T00:00:00.000+00:00",
            "request": {"contents": []},
            "response": {"candidates": [{"content": {"parts": [{"text": "x"}]}}]},
        }
    ]
    directory = write_predictions(stack, rows)
    table = gemini_table(stack, rows, json_type=False)
    vectors = write_predictions(stack, embedding_rows(3, 2))

    async def main():
        from_gcs = await aio.read_gcs(directory, endpoint=stack.gcs_endpoint, progress=False)
        from_bq = aio.AsyncBigQueryReader(bigquery(stack, table))
        embedded = await aio.read_gcs(vectors, endpoint=stack.gcs_endpoint, progress=False)
        return await from_gcs.texts(), await from_bq.texts(keep=["id"]), await embedded.embeddings()

    texts, bq_texts, vectors_read = asyncio.run(main())
    assert texts.column("text").to_pylist() == ["x"]
    assert bq_texts.select(["text", "id"]).to_pylist() == [{"text": "x", "id": 7}]
    assert vectors_read.column("values").to_pylist() == expected_vectors(embedding_rows(3, 2))


def test_responses_of_different_kinds_still_give_texts(stack):
    # A value of another kind somewhere in ``response`` keeps the column JSON text (one Arrow type cannot
    # hold both); texts() reads that text.
    rows = [
        {"status": "", "response": {"candidates": [{"content": {"parts": [{"text": "a"}]}}], "x": 1}},
        {"status": "", "response": {"candidates": [{"content": {"parts": [{"text": "b"}]}}], "x": "one"}},
        {"status": "err"},
    ]
    reader = gcs(stack, write_predictions(stack, rows), ordered=True)
    assert reader.to_arrow().schema.field("response").type == pa.string()
    assert reader.texts().column("text").to_pylist() == ["a", "b", None]
    assert reader.texts().column("status").to_pylist() == ["", "", "err"]


# -- a read that matches nothing, and an empty output --------------------------------------------------------


def test_a_uri_that_matches_nothing_is_not_found(stack):
    missing = fresh_dir()
    for uri in (missing, missing + "/", missing + "/predictions.jsonl", missing + "/*.jsonl"):
        with pytest.raises(errors.NotFound, match=f"NOT_FOUND on {uri.replace('*', '[*]')}:"):
            gcs(stack, uri).to_arrow()
    with pytest.raises(errors.NotFound, match="no object matches this pattern"):
        gcs(stack, write_predictions(stack, [{"status": ""}]) + "/*.csv").to_arrow()


def test_an_empty_output_is_an_empty_table(stack):
    # A finished job whose output has no rows: the directory exists, its predictions.jsonl is empty.
    directory = write_predictions(stack, [])
    reader = gcs(stack, directory)
    assert reader.to_arrow().num_rows == 0
    assert list(reader.records()) == []
    assert reader.texts().num_rows == 0
    assert reader.texts().schema.names[:2] == ["text", "finish_reason"]
    assert reader.errors().to_arrow().num_rows == 0  # no errors file there: no errors
    # Only an errors file: no predictions, no error either. (A ``dir/`` marker alone counts as well where the
    # server keeps one; the stack's on-disk fake-gcs-server does not list it.)
    errors_only = fresh_dir()
    stack.gcs.write(errors_only + "/errors_0001.jsonl", b'{"instance": 1, "error": {"message": "x"}}\n')
    assert gcs(stack, errors_only).to_arrow().num_rows == 0
    assert gcs(stack, errors_only).errors().to_arrow().num_rows == 1
    # An empty table in BigQuery reads as no rows too.
    assert bigquery(stack, gemini_table(stack, [], json_type=True)).texts().num_rows == 0


def test_custom_and_publisher_file_names_are_both_read(stack):
    directory = fresh_dir()
    stack.gcs.write(f"{directory}/predictions_0001.jsonl", b'{"n": 1}\n')
    stack.gcs.write(f"{directory}/predictions.jsonl", b'{"n": 2}\n')
    stack.gcs.write(f"{directory}/predictions_0002.jsonl", b'{"n": 3}\n')
    stack.gcs.write(f"{directory}/predictionsX.jsonl", b'{"n": 4}\n')  # not an output file
    stack.gcs.write(f"{directory}/errors.jsonl", b'{"n": 5}\n')
    reader = gcs(stack, directory, ordered=True)
    assert [o.name.rpartition("/")[2] for o in reader.objects()] == [
        "predictions.jsonl",
        "predictions_0001.jsonl",
        "predictions_0002.jsonl",
    ]
    assert reader.to_arrow().column("n").to_pylist() == [2, 1, 3]
    assert reader.errors().to_arrow().column("n").to_pylist() == [5]


# -- embeddings -------------------------------------------------------------------------------------------------


def embedding_rows(dim: int, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if i % 4 == 3:
            rows.append({"instance": {"content": f"t{i}"}, "status": "INVALID_ARGUMENT: empty"})
            continue
        values = [round(i + k / 8, 3) for k in range(dim)]
        rows.append(
            {
                "instance": {"content": f"t{i}"},
                "predictions": [
                    {
                        "embeddings": {
                            "statistics": {"token_count": i, "truncated": i % 2 == 1},
                            "values": values,
                        }
                    }
                ],
                "status": "",
            }
        )
    return rows


def expected_vectors(rows: list[dict[str, Any]]) -> list[Any]:
    return [r["predictions"][0]["embeddings"]["values"] if "predictions" in r else None for r in rows]


@pytest.mark.parametrize("dim", [1, 5])
def test_embeddings_as_fixed_size_vectors_from_gcs_and_bigquery(stack, dim):
    rows = embedding_rows(dim, 9)
    from_gcs = gcs(stack, write_predictions(stack, rows), ordered=True).embeddings(keep=["instance"])
    assert from_gcs.schema.field("values").type == pa.list_(pa.float32(), dim)
    assert from_gcs.column("values").to_pylist() == expected_vectors(rows)
    assert from_gcs.column("status").to_pylist() == [r["status"] for r in rows]
    assert from_gcs.column("token_count").to_pylist() == [
        r["predictions"][0]["embeddings"]["statistics"]["token_count"] if "predictions" in r else None
        for r in rows
    ]
    matrix = from_gcs.filter(pa.compute.is_valid(from_gcs.column("values"))).column("values").combine_chunks()
    assert matrix.flatten().to_numpy().reshape(-1, dim).shape == (7, dim)

    # BigQuery: the input's columns, then predictions (JSON text in a STRING column) and status.
    name = f"embeddings_{next(_names)}"
    schema = pa.schema([("content", pa.string()), ("predictions", pa.string()), ("status", pa.string())])
    stack.tables.create_table(PROJECT, DATASET, name, schema)
    stack.tables.append(
        PROJECT,
        DATASET,
        name,
        pa.table(
            {
                "content": [r["instance"]["content"] for r in rows],
                "predictions": [json.dumps(r["predictions"]) if "predictions" in r else None for r in rows],
                "status": [r["status"] for r in rows],
            },
            schema=schema,
        ),
    )
    reader = bigquery(stack, name, ordered=True)
    assert pa.types.is_list(reader.to_arrow().schema.field("predictions").type)
    from_bq = reader.embeddings(keep=["content"], dtype="float64").sort_by("content")
    assert from_bq.schema.field("values").type == pa.list_(pa.float64(), dim)
    by_content = {r["instance"]["content"]: r for r in rows}
    assert from_bq.column("values").to_pylist() == expected_vectors(
        [by_content[c] for c in from_bq.column("content").to_pylist()]
    )


def test_embeddings_of_different_sizes_are_refused(stack):
    rows = embedding_rows(3, 3) + embedding_rows(4, 3)
    with pytest.raises(errors.InvalidArgument, match="different lengths"):
        gcs(stack, write_predictions(stack, rows)).embeddings()
    with pytest.raises(errors.UsageError, match="dtype"):
        embeddings(pa.table({"status": [""]}), dtype="int8")


def test_rows_of_another_model_are_refused(stack):
    custom = fresh_dir()
    stack.gcs.write(f"{custom}/predictions_0001.jsonl", b'{"instance": [1, 2], "prediction": 0.5}\n')
    with pytest.raises(
        errors.UsageError, match=r"gemini_text: the rows have none of the columns \['response'"
    ):
        gcs(stack, custom).texts()
    with pytest.raises(errors.UsageError, match="not an embedding model's output"):
        gcs(stack, custom).embeddings()


# -- JSON text to nested values -------------------------------------------------------------------------------

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), _text)
_json_values = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    shape=_json_values,
    values=st.lists(_json_values, max_size=6),
    pretty=st.booleans(),
    text_type=st.sampled_from([pa.string(), pa.large_string()]),
)
def test_parse_gives_the_values_or_the_text_unchanged(shape, values, pretty, text_type):
    # Rows of one shape (which usually parse) and rows of any shape (which often mix kinds).
    texts = [
        None if v is None else json.dumps(v, indent=1 if pretty else None) for v in [shape, shape, *values]
    ]
    array = pa.array(texts, text_type)
    parsed = parse(array)
    if parsed is array:
        return
    assert len(parsed) == len(texts)
    for got, text in zip(parsed.to_pylist(), texts, strict=True):
        want = None if text is None else json.loads(text)
        assert without_nulls(got) == without_nulls(want)


def test_json_columns_of_any_table(stack):
    # A column of BigQuery's JSON type is parsed wherever it is; a STRING column only when named (outside the
    # publisher output tables).
    name = f"any_{next(_names)}"
    schema = pa.schema(
        [
            pa.field("doc", pa.string(), metadata=JSON_META),
            pa.field("note", pa.string()),
            pa.field("n", pa.int64()),
        ]
    )
    stack.tables.create_table(PROJECT, DATASET, name, schema)
    docs = [{"a": [1, 2], "b": {"c": "é"}}, None, {"a": [], "b": {"c": None}}]
    stack.tables.append(
        PROJECT,
        DATASET,
        name,
        pa.table(
            {
                "doc": [None if d is None else json.dumps(d) for d in docs],
                "note": ['{"x": 1}'] * 3,
                "n": [0, 1, 2],
            },
            schema=schema,
        ),
    )
    reader = bigquery(stack, name, ordered=True)
    assert reader.json_columns == ["doc"]
    table = reader.to_arrow().sort_by("n")
    assert table.schema.field("doc").type == pa.struct(
        [("a", pa.list_(pa.int64())), ("b", pa.struct([("c", pa.string())]))]
    )
    assert table.column("note").to_pylist() == ['{"x": 1}'] * 3
    assert [without_nulls(d) for d in table.column("doc").to_pylist()] == [
        {"a": [1, 2], "b": {"c": "é"}},
        None,
        {"a": [], "b": {}},
    ]
    named = bigquery(stack, name, parse_json=["note"]).to_arrow()
    assert named.column("note").to_pylist() == [{"x": 1}] * 3
    assert named.schema.field("doc").type == pa.string()
    parts = bigquery(stack, name).partitions()
    assert sum(p.read().num_rows for p in parts) == 3
    assert all(pa.types.is_struct(p.read().schema.field("doc").type) for p in parts if p.read().num_rows)
    with pytest.raises(errors.UsageError, match="parse_json"):
        bigquery(stack, name, parse_json="doc")


# -- end to end: publisher jobs on the local stack, read back ------------------------------------------------

GEMINI = "publishers/google/models/gemini-2.0-flash-001"
EMBEDDING = "publishers/google/models/text-embedding-005"


def run_job(stack, model: str, source: str, destination: str):
    """A batch prediction job on ``model`` from ``source`` to ``destination`` (gs:// or bq://), finished."""
    from bpj import types
    from bpj._gen.services.job_service import JobServiceClient
    from bpj.transport.grpc import GrpcTransport
    from tests.local.conftest import wait_for

    job = types.BatchPredictionJob(display_name="read-back", model=model)
    if source.startswith("gs://"):
        job.input_config.instances_format = "jsonl"
        job.input_config.gcs_source.uris.append(source)
    else:
        job.input_config.instances_format = "bigquery"
        job.input_config.bigquery_source.input_uri = source
    if destination.startswith("gs://"):
        job.output_config.predictions_format = "jsonl"
        job.output_config.gcs_destination.output_uri_prefix = destination
    else:
        job.output_config.predictions_format = "bigquery"
        job.output_config.bigquery_destination.output_uri = destination
    transport = GrpcTransport(stack.api_endpoint)
    try:
        jobs = JobServiceClient(transport)
        parent = f"projects/{stack.project}/locations/{stack.location}"
        created = jobs.create_batch_prediction_job(
            types.CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
        )
        get = lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n))  # noqa: E731
        done = wait_for(get, created.name)
    finally:
        transport.close()
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED, done.error
    return done


def prompt(i: int) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": f"prompt number {i}"}]}]}


E2E_LINES = [
    {"id": 0, "request": prompt(0)},
    {"id": 1, "request": {"contents": []}},  # a per-row error: status set, no response
    {"id": 2, "request": {**prompt(2), "generationConfig": {"candidateCount": 2}}},
    {"id": 3, "request": {**prompt(3), "generationConfig": {"maxOutputTokens": 3}}},
]


def stand_in_texts(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    from bpj.local.publisher import request_problem, stand_in_response

    out = []
    for line in lines:
        if request_problem(line["request"]) is not None:
            out.append((line["id"], None, None, False))
            continue
        response = stand_in_response(line["request"], "gemini-2.0-flash-001")
        first = response["candidates"][0]
        usage = response["usageMetadata"]
        out.append((line["id"], first["content"]["parts"][0]["text"], usage["totalTokenCount"], True))
    return out


def as_tuples(texts: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(
        (r["id"], r["text"], r["total_token_count"], r["status"] == "")
        for r in texts.select(["id", "text", "total_token_count", "status"]).to_pylist()
    )


def test_a_gemini_job_on_the_stack_reads_back_from_gcs_and_bigquery(stack):
    source = f"gs://{BUCKET}/e2e/gemini.jsonl"
    stack.gcs.write(source, "".join(json.dumps(x) + "\n" for x in E2E_LINES).encode())
    expected = stand_in_texts(E2E_LINES)

    job = run_job(stack, GEMINI, source, f"gs://{BUCKET}/e2e/gemini-out")
    reader = gcs(stack, job.output_info.gcs_output_directory, ordered=True)
    assert [o.name.rpartition("/")[2] for o in reader.objects()] == ["predictions.jsonl"]
    table = reader.to_arrow()
    assert pa.types.is_struct(table.schema.field("response").type)
    assert table.column("id").to_pylist() == [0, 1, 2, 3]
    assert as_tuples(reader.texts(keep=["id"])) == expected
    assert reader.texts().column("finish_reason").to_pylist() == ["STOP", None, "STOP", "MAX_TOKENS"]

    job = run_job(stack, GEMINI, source, f"bq://{stack.project}")
    uri = f"{job.output_info.bigquery_output_dataset}.{job.output_info.bigquery_output_table}"
    from_bq = BigQueryReader(uri, endpoint=stack.bigquery_storage_endpoint, progress=False)
    rows = from_bq.to_arrow()
    assert pa.types.is_struct(rows.schema.field("response").type)
    assert pa.types.is_timestamp(rows.schema.field("processed_time").type)
    assert as_tuples(from_bq.texts(keep=["id"])) == expected


def test_an_embedding_job_on_the_stack_reads_back_as_vectors(stack):
    from bpj.local.publisher import stand_in_embedding

    instances = [{"content": f"text {i}"} for i in range(5)] + [{"content": ""}, {"nope": 1}]
    source = f"gs://{BUCKET}/e2e/embed.jsonl"
    stack.gcs.write(source, "".join(json.dumps(x) + "\n" for x in instances).encode())
    job = run_job(stack, EMBEDDING, source, f"gs://{BUCKET}/e2e/embed-out")
    vectors = gcs(stack, job.output_info.gcs_output_directory, ordered=True).embeddings(keep=["instance"])
    for row in vectors.to_pylist():
        if row["status"]:
            assert row["values"] is None
            continue
        want = stand_in_embedding(row["instance"], None, "text-embedding-005")["values"]
        assert row["values"] == pytest.approx(want, rel=1e-6)
    assert sum(1 for s in vectors.column("status").to_pylist() if s == "") >= 5
    assert pa.types.is_fixed_size_list(vectors.schema.field("values").type)

    job = run_job(stack, EMBEDDING, source, f"bq://{stack.project}")
    uri = f"{job.output_info.bigquery_output_dataset}.{job.output_info.bigquery_output_table}"
    from_bq = BigQueryReader(uri, endpoint=stack.bigquery_storage_endpoint, progress=False)
    assert pa.types.is_list(from_bq.to_arrow().schema.field("predictions").type)
    assert sorted(map(str, from_bq.embeddings().column("values").to_pylist())) == sorted(
        map(str, vectors.column("values").to_pylist())
    )


def test_export_of_json_columns_whose_batches_differ_in_shape(stack, tmp_path):
    # A Storage Read server that sends each row as a response of its own: every batch parses to its own
    # nested shape. JSONL gets the nested values; Parquet and CSV the JSON text, as BigQuery holds it.
    import pyarrow.parquet as pq

    from bpj import clients
    from bpj.local.bigquery.read_server import StorageReadServicer
    from bpj.local.servers.serve import serve_grpc
    from bpj.transport.grpc import GrpcTransport

    rows = [
        {
            "id": 0,
            "status": "",
            "request": {"contents": []},
            "response": {"candidates": [{"finishReason": "STOP"}]},
        },
        {
            "id": 1,
            "status": "",
            "request": {"contents": []},
            "response": {"promptFeedback": {"blockReason": "SAFETY"}},
        },
        {"id": 2, "status": "boom", "request": {"contents": []}},
    ]
    for r in rows:
        r["processed_time"] = "2026-12-01T00:00:00.000+00:00"
    name = gemini_table(stack, rows, json_type=True)
    server = serve_grpc(StorageReadServicer(stack.tables, stream_rows=1, response_bytes=64))
    client = clients.bigquery_read(transport=GrpcTransport(server.endpoint))
    try:
        reader = BigQueryReader(
            f"bq://{PROJECT}.{DATASET}.{name}", client=client, ordered=True, progress=False
        )
        assert len(reader.streams) == 3
        assert reader.export(tmp_path / "out.jsonl") == 3
        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [without_nulls(x.get("response")) for x in lines] == [r.get("response") for r in rows]
        with pytest.raises(errors.UsageError, match="widen"):  # the nested values themselves do not fit
            Reader.export(reader, tmp_path / "nested.parquet")
        assert reader.export(tmp_path / "out.parquet") == 3
        written = pq.read_table(tmp_path / "out.parquet")
        assert written.schema.field("response").type == pa.string()
        assert [None if v is None else json.loads(v) for v in written.column("response").to_pylist()] == [
            r.get("response") for r in rows
        ]
        assert reader.export(tmp_path / "out.csv") == 3
    finally:
        client.close()
        server.stop(None)
