"""The main job (``make run``): end to end in a subprocess as a user runs it, the checker on tampered outputs,
and the exit status when the outputs do not match ``model.predict``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from examples import main_job

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_main_job_runs_checks_and_prints_the_summary(transport, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPJ_")}
    proc = subprocess.run(
        [sys.executable, "examples/main_job.py", "--instances", "2000", "--transport", transport],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^instances\s+2,000\b", out, re.M), out
    assert re.search(r"^mismatches total\s+0$", out, re.M), out
    assert re.search(r"^mismatches Gemini\s+0\s+\(2,000 rows, every answer matches\)", out, re.M), out
    assert re.search(
        r"^mismatches explanations\s+0\s+\(2,000 rows, every attribution matches\)", out, re.M
    ), out
    assert re.search(r"^mismatches GCS\s+0\b", out, re.M), out
    assert re.search(r"^mismatches BigQuery\s+0\b", out, re.M), out
    for phase in (
        "stack start",
        "train",
        "upload input",
        "job GCS",
        "read GCS",
        "job BigQuery",
        "read BigQuery",
        r"job Gemini \(stand-in\)",
        "job explanations",
    ):
        assert re.search(rf"^{phase}\s+\d+\.\d\d\s", out, re.M), (phase, out)
    assert re.search(r"^output\s+GCS\s+gs://bpj-main-output/main-job/prediction-iris-\S+$", out, re.M), out
    assert re.search(r"^output\s+BigQuery\s+bq://bpj-local\.prediction_iris_\S+\.predictions$", out, re.M), (
        out
    )
    assert "Traceback" not in proc.stderr


def test_a_bad_flag_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "examples/main_job.py", "--instances", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


def outputs(keys, predictions):
    return pa.table({"key": pa.array(keys, pa.int64()), "prediction": predictions})


def test_checker_passes_exact_outputs_in_any_order():
    expected = np.array([0, 1, 2, 1, 0])
    shuffled = [3, 0, 4, 1, 2]
    as_ints = outputs(shuffled, pa.array(expected[shuffled]))
    as_json = outputs(shuffled, pa.array([str(v) for v in expected[shuffled]]))  # BigQuery's STRING of JSON
    for table in (as_ints, as_json):
        check = main_job.check_predictions(table, expected)
        assert check.mismatches == 0 and check.rows == 5


def test_checker_reports_every_kind_of_mismatch():
    expected = np.array([0, 1, 2, 1, 0, 2])
    # id 1 predicted wrong, id 2 twice, id 4 missing, one row with an unknown id, one with a null key,
    # id 5's prediction not a number.
    keys = [0, 1, 2, 2, 3, 99, None, 5]
    predictions = pa.array(["0", "2", "2", "2", "1", "0", "0", '"two"'])
    check = main_job.check_predictions(outputs(keys, predictions), expected)
    assert (check.wrong, check.missing, check.duplicates, check.unknown) == (2, 1, 1, 2)
    assert check.mismatches == 6
    text = check.describe()
    assert "2 wrong predictions" in text and "1 instances missing" in text and "id 1: got 2" in text


def test_checker_sees_a_single_tampered_prediction_in_a_million():
    rng = np.random.default_rng(1)
    expected = rng.integers(0, 3, 1_000_000)
    tampered = expected.copy()
    tampered[123_456] = (tampered[123_456] + 1) % 3
    check = main_job.check_predictions(outputs(np.arange(len(expected)), pa.array(tampered)), expected)
    assert check.mismatches == check.wrong == 1
    assert "id 123456" in check.describe()


@pytest.fixture
def fresh_config():
    from bpj import config

    config.reset()
    yield
    config.reset()


def test_outputs_that_differ_from_model_predict_exit_non_zero(monkeypatch, capsys, fresh_config):
    """The job runs a different model from the one the check asks: every disagreement is a mismatch, the
    summary says how many, and the exit status is 1."""
    from sklearn.dummy import DummyClassifier

    upload = main_job.upload_model

    def upload_another_model(stack, model):
        _, rows = main_job.train()
        always_two = DummyClassifier(strategy="constant", constant=2).fit(rows, [0, 1, 2] * (len(rows) // 3))
        return upload(stack, always_two)

    monkeypatch.setattr(main_job, "upload_model", upload_another_model)
    assert main_job.main(["--instances", "600"]) == 1
    out, err = capsys.readouterr()

    def mismatches(kind):
        return int(re.search(rf"^mismatches {kind}\s+(\d+)", out, re.M).group(1))

    x = main_job.make_instances(main_job.train()[1], 600)
    differs = int((main_job.train()[0].predict(x) != 2).sum())
    assert differs > 0 and mismatches("GCS") == mismatches("BigQuery") == differs
    # The explanations are the uploaded model's, not the trained one's: they differ too.
    assert mismatches("explanations") > 0
    assert mismatches("total") == 2 * differs + mismatches("explanations") + mismatches("Gemini")
    assert "mismatches between the outputs and model.predict" in err


def test_the_jsonl_input_parses_back_to_exactly_the_instances():
    import json

    _, rows = main_job.train()
    x = main_job.make_instances(rows, 2500)
    x[:6] = [[0.0, 1e-7, 5e-324, 1.7976931348623157e308], [0.1, 0.2, 0.3, 1 / 3], *x[2:6]]
    lines = b"".join(data for _, data in main_job.jsonl_chunks(x, chunk_rows=1000)).decode().splitlines()
    assert len(lines) == len(x)
    parsed = [json.loads(line) for line in lines]
    assert [p["id"] for p in parsed] == list(range(len(x)))
    assert [list(p) for p in parsed[:1]] == [["id", *main_job.FEATURES]]
    back = np.array([[p[f] for f in main_job.FEATURES] for p in parsed])
    assert back.dtype == np.float64 and np.array_equal(back, x)
    assert (
        lines[1]
        == '{"id": 1, "sepal_length": 0.1, "sepal_width": 0.2, "petal_length": 0.3, "petal_width": 0.3333333333333333}'
    )


def test_distinct_instances_from_a_fixed_seed():
    _, rows = main_job.train()
    a, b = main_job.make_instances(rows, 10_000), main_job.make_instances(rows, 10_000)
    assert np.array_equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) == len(a)


def test_the_upload_without_the_model_layer_names_the_same_kind_of_model(stack, iris, fresh_config):
    from examples.main_job import MODEL_BUCKET, MODEL_DIR, _upload_with_client
    from tests.local.conftest import joblib_bytes

    stack.init()
    stack.gcs.create_bucket(MODEL_BUCKET)
    stack.gcs.write(f"{MODEL_DIR}/model.joblib", joblib_bytes(iris[0]))
    name = _upload_with_client()
    assert re.fullmatch(r"projects/bpj-local/locations/us-central1/models/\d+@1", name)
