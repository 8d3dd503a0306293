"""The main job: a real model, a batch prediction job of meaningful size on the local stack, both outputs read
back with the fast readers and every prediction checked.

    python examples/main_job.py [--instances N] [--batch-size B] [--data-dir D] [--transport grpc|rest]

Steps (each one timed): start a LocalStack (a temporary data dir unless ``--data-dir``); train a
LogisticRegression on scikit-learn's bundled iris data; upload ``model.joblib`` and the model; write N
instances (iris rows drawn with a fixed seed, with a little noise, each with an ``id``) as JSONL to GCS,
streamed, and as a table of the stack's BigQuery table store; run one job from GCS to GCS and one from BigQuery
to BigQuery with ``bpj.BatchPredictionJob.create(..., sync=True)``; read both outputs with
``job.outputs().to_arrow()``; check every prediction against ``model.predict`` on the same rows.

Both jobs use ``instance_config`` ``key_field="id"``, so every output row carries its instance's id as ``key``
and the check matches by key, whatever order the rows come back in: each id must appear exactly once with the
prediction ``model.predict`` gives for that row. Exit status: 0 when there are no mismatches, 1 when there
are (or a job fails), 130 on Ctrl-C; the stack is stopped in every case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from bpj.local.stack import LocalStack

__all__ = ["Check", "check_predictions", "main", "make_instances", "train"]

SEED = 20240601
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SKLEARN_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"
MODEL_BUCKET = "bpj-main-models"
INPUT_BUCKET = "bpj-main-input"
OUTPUT_BUCKET = "bpj-main-output"
MODEL_DIR = f"gs://{MODEL_BUCKET}/iris"
INPUT_URI = f"gs://{INPUT_BUCKET}/iris.jsonl"
INPUT_DATASET = "main_job"
INPUT_TABLE = "iris_instances"
CHUNK_ROWS = 100_000
# Noise added to each sampled row, as a fraction of each feature's standard deviation; values are rounded to
# DECIMALS so the JSONL stays small (the rounded float is exactly what both the job and the check see).
NOISE = 0.05
DECIMALS = 6
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


# -- progress and timing --------------------------------------------------------------------------------------


def say(message: str) -> None:
    """One progress line on stderr (the summary goes to stdout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    instances: int | None = None  # what the phase processed, for its throughput


@dataclass
class Phases:
    done: list[Phase] = field(default_factory=list)

    @contextlib.contextmanager
    def __call__(self, name: str, instances: int | None = None) -> Iterator[Phase]:
        phase = Phase(name, instances=instances)
        say(f"-> {name}...")
        start = time.perf_counter()
        yield phase
        phase.seconds = time.perf_counter() - start
        self.done.append(phase)
        say(f"   {name}: {phase.seconds:.2f} s")


# -- model and instances --------------------------------------------------------------------------------------


def train() -> tuple[Any, np.ndarray]:
    """A LogisticRegression fitted on iris, and the iris feature rows."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    return model, data.data


def make_instances(rows: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` rows drawn from ``rows`` with a fixed seed, each feature moved by a little Gaussian noise and
    rounded to DECIMALS places; row ``i`` is the instance with id ``i``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picked = rows[rng.integers(0, len(rows), size=n)]
    noise = rng.normal(0.0, NOISE, size=picked.shape) * rows.std(axis=0)
    return np.round(np.clip(picked + noise, 0.0, None), DECIMALS)


def jsonl_chunks(x: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, bytes]]:
    """(rows so far, JSONL bytes) per chunk: ``{"id": i, "sepal_length": ..., ...}`` a line, built by Arrow
    in C++ (five times Python's formatting). Arrow writes a double as its shortest round-trip text, as
    Python's ``repr`` does, so the JSON parses back to exactly the values in ``x`` (a test checks); a whole
    number is written without ".0" (``5``, not ``5.0``), the same number to JSON and to the model."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for start in range(0, len(x), chunk_rows):
        block = x[start : start + chunk_rows]
        ids = pa.array(np.arange(start, start + len(block), dtype=np.int64))
        parts: list[Any] = [pa.scalar('{"id": '), pc.cast(ids, pa.string())]
        for j, name in enumerate(FEATURES):
            parts += [pa.scalar(f", {json.dumps(name)}: "), pc.cast(pa.array(block[:, j]), pa.string())]
        parts.append(pa.scalar("}\n"))
        lines = pc.binary_join_element_wise(*parts, "")
        yield start + len(block), _concatenated(lines)


def _concatenated(strings: pa.Array) -> bytes:
    """The values of a string array back to back: its data buffer between the first and last offsets."""
    import numpy as np
    import pyarrow as pa

    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(strings.buffers()[1], dtype=offset_type)
    first, last = int(offsets[strings.offset]), int(offsets[strings.offset + len(strings)])
    return strings.buffers()[2][first:last].to_pybytes()


def arrow_chunks(x: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    import numpy as np
    import pyarrow as pa

    for start in range(0, len(x), chunk_rows):
        block = x[start : start + chunk_rows]
        columns = [pa.array(np.arange(start, start + len(block), dtype=np.int64))]
        columns += [pa.array(block[:, j]) for j in range(block.shape[1])]
        yield pa.Table.from_arrays(columns, schema=input_schema())


def input_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field("id", pa.int64()), *(pa.field(f, pa.float64()) for f in FEATURES)])


class Reporter:
    """Progress of an upload in tenths: at most eleven lines, whatever N."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.shown = what, total, -1

    def __call__(self, done: int) -> None:
        tenth = done * 10 // max(self.total, 1)
        if tenth > self.shown:
            self.shown = tenth
            say(f"   {self.what}: {done:,} / {self.total:,} instances")


# -- uploads ----------------------------------------------------------------------------------------------------


def upload_model(stack: LocalStack, model: Any) -> str:
    """model.joblib to GCS, then the model through bpj's ModelService; returns the (versioned) model name."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    stack.gcs.create_bucket(MODEL_BUCKET)
    stack.gcs.write(f"{MODEL_DIR}/model.joblib", buf.getvalue())
    try:
        from bpj.models import Model
    except ImportError:  # a checkout without the Model layer: the generated client does the same call
        return _upload_with_client()
    uploaded = Model.upload(
        display_name="iris",
        artifact_uri=MODEL_DIR,
        serving_container_image_uri=SKLEARN_IMAGE,
        labels={"created_by": "bpj-main-job"},
    )
    return uploaded.versioned_resource_name


def _upload_with_client() -> str:
    from bpj import clients, config, types
    from bpj.lro import wait_operation

    model = types.Model(display_name="iris", artifact_uri=MODEL_DIR)
    model.container_spec.image_uri = SKLEARN_IMAGE
    model.labels["created_by"] = "bpj-main-job"
    request = types.UploadModelRequest(parent=config.settings().parent, model=model)
    op = wait_operation(
        clients.operations(), clients.model_service().upload_model(request), what="ModelService.UploadModel"
    )
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return (
        f"{response.model}@{response.model_version_id}" if response.model_version_id else str(response.model)
    )


def upload_gcs_input(stack: LocalStack, x: np.ndarray) -> int:
    """The instances as one JSONL object, streamed in chunks; returns its size in bytes."""
    stack.gcs.create_bucket(INPUT_BUCKET)
    stack.gcs.create_bucket(OUTPUT_BUCKET)
    report = Reporter("GCS", len(x))
    size = 0
    with stack.gcs.writer(INPUT_URI, content_type="application/jsonl") as w:
        for done, data in jsonl_chunks(x):
            w.write(data)
            size += len(data)
            report(done)
    return size


def upload_bigquery_input(stack: LocalStack, x: np.ndarray) -> str:
    """The instances as a table of the stack's table store (a fresh one each run); returns its bq:// URI."""
    tables, project = stack.tables, stack.project
    tables.create_dataset(project, INPUT_DATASET, exists_ok=True)
    if tables.table_exists(project, INPUT_DATASET, INPUT_TABLE):
        tables.delete_table(project, INPUT_DATASET, INPUT_TABLE)
    tables.create_table(project, INPUT_DATASET, INPUT_TABLE, input_schema())
    report = Reporter("BigQuery", len(x))
    done = 0
    for chunk in arrow_chunks(x):
        tables.append(project, INPUT_DATASET, INPUT_TABLE, chunk)
        done += chunk.num_rows
        report(done)
    return f"bq://{project}.{INPUT_DATASET}.{INPUT_TABLE}"


# -- the check --------------------------------------------------------------------------------------------------


@dataclass
class Check:
    """How an output compares with ``model.predict``, by key. ``mismatches`` counts every way it can differ."""

    rows: int
    expected: int
    wrong: int = 0  # a key whose prediction differs from model.predict's
    missing: int = 0  # an instance id with no output row
    duplicates: int = 0  # output rows beyond the first for an id
    unknown: int = 0  # output rows whose key is null or not an instance id
    examples: list[str] = field(default_factory=list)
    what: str = "prediction"  # what each row is checked for

    @property
    def mismatches(self) -> int:
        return self.wrong + self.missing + self.duplicates + self.unknown

    def describe(self) -> str:
        if not self.mismatches:
            return f"{self.rows:,} rows, every {self.what} matches"
        parts = [
            f"{count:,} {what}"
            for count, what in (
                (self.wrong, f"wrong {self.what}s"),
                (self.missing, "instances missing"),
                (self.duplicates, "duplicate rows"),
                (self.unknown, "rows with an unknown key"),
            )
            if count
        ]
        more = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return f"{self.rows:,} rows: " + ", ".join(parts) + more


def _predictions(column: pa.ChunkedArray) -> np.ndarray:
    """The prediction column as numbers: numeric as it is, or parsed from JSON text (BigQuery's STRING
    holding JSON). A value that is not a number becomes NaN, so it never equals an expected class."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        import pyarrow.compute as pc

        # When every value is a JSON number (Arrow's own parser is laxer: "+1", ".5", "inf"), parse in C++.
        if pc.all(pc.match_substring_regex(column, _JSON_NUMBER)).as_py() is not False:
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    out = np.full(len(column), np.nan)
    for i, value in enumerate(column.to_pylist()):
        with contextlib.suppress(TypeError, ValueError):
            parsed = json.loads(value) if isinstance(value, str) else value
            if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
                out[i] = parsed
    return out


def check_predictions(table: pa.Table, expected: np.ndarray, *, examples: int = 3) -> Check:
    """Compare an output table (columns ``key`` and ``prediction``) with ``expected``, the prediction for
    instance id ``i`` at index ``i``: exactly one row per id, each with that id's prediction."""
    import numpy as np

    n = len(expected)
    check = Check(rows=table.num_rows, expected=n)
    keys_col = table.column("key")
    null_keys = keys_col.null_count
    keys = np.asarray(keys_col.fill_null(-1).to_numpy(), dtype=np.float64)
    predictions = _predictions(table.column("prediction"))
    valid = (keys >= 0) & (keys < n) & (keys == np.floor(keys))
    check.unknown = int((~valid).sum())
    ids = keys[valid].astype(np.int64)
    counts = np.bincount(ids, minlength=n)
    check.missing = int((counts == 0).sum())
    check.duplicates = int((counts[counts > 1] - 1).sum())
    want = np.asarray(expected, dtype=np.float64)[ids]
    got = predictions[valid]
    wrong = got != want
    check.wrong = int(wrong.sum())
    for i in np.flatnonzero(wrong)[:examples]:
        check.examples.append(f"id {ids[i]}: got {got[i]:g}, model.predict gives {want[i]:g}")
    if check.missing and len(check.examples) < examples:
        first = np.flatnonzero(counts == 0)[: examples - len(check.examples)]
        check.examples += [f"id {i} missing" for i in first]
    if null_keys and len(check.examples) < examples:
        check.examples.append(f"{null_keys} rows with a null key")
    return check


# -- publisher models and explanations ----------------------------------------------------------------------

GEMINI = "publishers/google/models/gemini-2.0-flash-001"
SIDE_ROWS = 2000  # requests of the Gemini job, instances of the explanation job


def _quick_job() -> Any:
    from bpj.jobs import BatchPredictionJob

    class Job(BatchPredictionJob):
        poll_interval = 0.1
        max_poll_interval = 0.5

    return Job


def gemini_job(stack: LocalStack, rows: np.ndarray) -> tuple[Any, Check]:
    """A Gemini-style batch job on the stack's stand-in (it says what it is), its outputs read back: every
    request answered with the stand-in's documented answer (bpj.local.publisher.stand_in_response)."""
    from bpj.local.publisher import stand_in_response

    requests = [
        {"request": {"contents": [{"role": "user", "parts": [{"text": f"Which iris is {list(r)}? (#{i})"}]}]}}
        for i, r in enumerate(rows[i % len(rows)] for i in range(SIDE_ROWS))
    ]
    source = f"gs://{INPUT_BUCKET}/gemini/requests.jsonl"
    stack.gcs.write(source, "".join(json.dumps(r) + "\n" for r in requests).encode())
    job = _quick_job().create(
        job_display_name="main-job-gemini",
        model_name=GEMINI,
        gcs_source=source,
        gcs_destination_prefix=f"gs://{OUTPUT_BUCKET}/gemini",
        labels={"created_by": "bpj-main-job"},
    )
    check = Check(rows=0, expected=len(requests), what="answer")
    seen = 0
    want = {
        json.dumps(r["request"], sort_keys=True): stand_in_response(r["request"], GEMINI.rsplit("/", 1)[1])
        for r in requests
    }
    for record in job.outputs().records():
        seen += 1
        answer = want.pop(json.dumps(record["request"], sort_keys=True), None)
        if answer is None:
            check.unknown += 1
        elif record.get("status") or record["response"]["candidates"] != answer["candidates"]:
            check.wrong += 1
            if len(check.examples) < 3:
                check.examples.append(f"status {record.get('status')!r}")
    check.rows, check.missing = seen, len(want)
    return job, check


def explanation_job(stack: LocalStack, model: Any, rows: np.ndarray, model_name: str) -> tuple[Any, Check]:
    """Sampled Shapley attributions for SIDE_ROWS instances: each row's instance output is the model's
    probability of its predicted class, and its attributions sum to that output minus the baseline's."""
    import numpy as np

    x = make_instances(rows, SIDE_ROWS, seed=SEED + 1)
    source = f"gs://{INPUT_BUCKET}/explain/instances.jsonl"
    stack.gcs.write(source, "".join(json.dumps([float(v) for v in r]) + "\n" for r in x).encode())
    job = _quick_job().create(
        job_display_name="main-job-explain",
        model_name=model_name,
        gcs_source=source,
        gcs_destination_prefix=f"gs://{OUTPUT_BUCKET}/explain",
        generate_explanation=True,
        explanation_metadata={
            "inputs": {"features": {"index_feature_mapping": list(FEATURES)}},
            "outputs": {"probability": {}},
        },
        explanation_parameters={"sampled_shapley_attribution": {"path_count": 10}},
        labels={"created_by": "bpj-main-job"},
    )
    probabilities = {
        tuple(np.round(r, DECIMALS)): p.max() for r, p in zip(x, model.predict_proba(x), strict=True)
    }
    check = Check(rows=0, expected=len(x), what="attribution")
    for record in job.outputs().records():
        check.rows += 1
        attribution = record["explanation"]["attributions"][0]
        total = sum(attribution["featureAttributions"].values())
        gap = attribution["instanceOutputValue"] - attribution["baselineOutputValue"]
        output = probabilities.get(tuple(np.round(record["instance"], DECIMALS)))
        if output is None:
            check.unknown += 1
        elif abs(total - gap) > 1e-6 or abs(attribution["instanceOutputValue"] - output) > 1e-6:
            check.wrong += 1
            if len(check.examples) < 3:
                check.examples.append(f"sum {total:.6f} vs {gap:.6f}, output {output:.6f}")
    check.missing = max(0, check.expected - check.rows)
    return job, check


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    instances: int
    phases: list[Phase]
    checks: dict[str, Check]
    locations: dict[str, str]
    input_bytes: int = 0
    data_dir: Path | None = None

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.checks.values())


def run_job(kind: str, model_name: str, batch_size: int | None, **source_and_destination: Any) -> Any:
    from bpj.jobs import BatchPredictionJob

    class Job(BatchPredictionJob):
        # The job's seconds are a measurement here: poll often enough that the end is seen within 0.5 s
        # (the default grows to 30 s between polls, fine for a service, not for a stopwatch).
        poll_interval = 0.1
        max_poll_interval = 0.5

    return Job.create(
        job_display_name=f"main-job-{kind}",
        model_name=model_name,
        batch_size=batch_size,
        instance_config={
            "instance_type": "array",
            "key_field": "id",
            "included_fields": list(FEATURES),
        },
        labels={"created_by": "bpj-main-job"},
        sync=True,
        **source_and_destination,
    )


def _job_line(job: Any) -> str:
    c = job.completion_stats
    return f"   {job.resource_name}: {c.successful_count:,} ok, {c.failed_count:,} failed"


def run(args: argparse.Namespace) -> Result:
    from bpj.local.stack import LocalStack

    n = args.instances
    phases = Phases()
    locations: dict[str, str] = {}
    checks: dict[str, Check] = {}
    with phases("stack start"):
        stack = LocalStack(args.data_dir)
        stack.start()
    try:
        stack.init(transport=args.transport)
        say(f"   local stack on 127.0.0.1 (Vertex {args.transport}, data in {stack.root})")
        with phases("train"):
            model, rows = train()
            say(f"   LogisticRegression on iris ({len(rows)} rows, {rows.shape[1]} features)")
        with phases("upload model"):
            model_name = upload_model(stack, model)
            say(f"   {model_name}")
        with phases("upload input", instances=n):
            x = make_instances(rows, n)
            input_bytes = upload_gcs_input(stack, x)
            bq_input = upload_bigquery_input(stack, x)
            say(f"   {INPUT_URI} ({input_bytes / 1e6:.1f} MB), {bq_input}")

        with phases("job GCS", instances=n):
            gcs_job = run_job(
                "gcs",
                model_name,
                args.batch_size,
                instances_format="jsonl",
                gcs_source=INPUT_URI,
                predictions_format="jsonl",
                gcs_destination_prefix=f"gs://{OUTPUT_BUCKET}/main-job",
            )
            say(_job_line(gcs_job))
        locations["GCS"] = gcs_job.output_info.gcs_output_directory
        with phases("read GCS", instances=n):
            gcs_table = gcs_job.outputs().to_arrow()
            say(f"   {gcs_table.num_rows:,} rows from {locations['GCS']}")

        with phases("job BigQuery", instances=n):
            bq_job = run_job(
                "bigquery",
                model_name,
                args.batch_size,
                instances_format="bigquery",
                bigquery_source=bq_input,
                predictions_format="bigquery",
                bigquery_destination_prefix=f"bq://{stack.project}",
            )
            say(_job_line(bq_job))
        info = bq_job.output_info
        locations["BigQuery"] = f"{info.bigquery_output_dataset}.{info.bigquery_output_table}"
        with phases("read BigQuery", instances=n):
            bq_table = bq_job.outputs().to_arrow()
            say(f"   {bq_table.num_rows:,} rows from {locations['BigQuery']}")

        with phases("check", instances=2 * n):
            expected = model.predict(x)
            for kind, table in (("GCS", gcs_table), ("BigQuery", bq_table)):
                checks[kind] = check_predictions(table, expected)
                say(f"   {kind}: {checks[kind].describe()}")

        with phases("job Gemini (stand-in)", instances=SIDE_ROWS):
            job, checks["Gemini"] = gemini_job(stack, rows)
            say(_job_line(job))
            say(f"   Gemini: {checks['Gemini'].describe()}")
        locations["Gemini"] = job.output_info.gcs_output_directory
        with phases("job explanations", instances=SIDE_ROWS):
            job, checks["explanations"] = explanation_job(stack, model, rows, model_name)
            say(_job_line(job))
            say(f"   explanations: {checks['explanations'].describe()}")
        locations["explanations"] = job.output_info.gcs_output_directory
    finally:
        say("-> stopping the local stack")
        from bpj import config

        config.close_transports()  # the client side first: no channel sees its server go away
        stack.stop()
    return Result(n, phases.done, checks, locations, input_bytes, args.data_dir)


def summary(result: Result) -> str:
    rows: list[tuple[str, ...]] = []
    for p in result.phases:
        rate = f"{p.instances / p.seconds:,.0f}" if p.instances and p.seconds > 0 else "-"
        rows.append((p.name, f"{p.seconds:.2f}", rate))
    total = sum(p.seconds for p in result.phases)
    rows.append(("total", f"{total:.2f}", "-"))
    header = ("phase", "seconds", "instances/s")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    out = [
        f"instances    {result.instances:,}  ({result.input_bytes / 1e6:.1f} MB of JSONL)",
        "",
        line(header),
        line(tuple("-" * w for w in widths)),
        *(line(r) for r in rows),
        "",
    ]
    width = max(len(k) for k in (*result.checks, *result.locations, "total"))
    for kind, check in result.checks.items():
        out.append(f"mismatches {kind:<{width}}  {check.mismatches}  ({check.describe()})")
    out.append(f"mismatches {'total':<{width}}  {result.mismatches}")
    for kind, where in result.locations.items():
        out.append(f"output     {kind:<{width}}  {where}")
    if result.data_dir is None:
        out.append("(the stack's data dir was temporary and is gone: pass --data-dir to keep the outputs)")
    else:
        out.append(
            f"data dir         {result.data_dir} (`bpj local start --data-dir {result.data_dir}` serves it)"
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python examples/main_job.py",
        description="Run the main job on the local stack: train, upload, predict N instances through GCS "
        "and BigQuery, read the outputs back and check every prediction.",
    )
    parser.add_argument(
        "--instances", type=_positive, default=1_000_000, help="instances (default 1,000,000)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="instances per model call (default: the service's, 64)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep the stack's data here (default: a temp dir)"
    )
    parser.add_argument(
        "--transport", choices=("grpc", "rest"), default="grpc", help="to the Vertex emulator"
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the stack stops as on Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from bpj import errors, states

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args)
    except KeyboardInterrupt as e:
        say("main job: interrupted; the local stack is stopped")
        return 143 if isinstance(e, _Terminated) else 130
    except (states.JobFailed, states.JobCancelled, states.JobExpired) as e:
        say(f"main job: {e}")
        return 1
    except errors.ApiError as e:
        say(f"main job: {e}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary(result), flush=True)
    if result.mismatches:
        say(f"main job: {result.mismatches} mismatches between the outputs and model.predict")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
