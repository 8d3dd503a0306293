"""The ``bpj`` command against a real local stack: every command, in-process (``bpj.cli.main``) and as
``python -m bpj.cli``; a wrong flag, a missing job or model and an unreachable endpoint each print one line
on stderr and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import config, validation
from bpj.cli import main, parser
from bpj.cli.common import globals_parent
from tests.conftest import use_environment
from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes

N_ROWS = 150  # iris


def _commands(ap) -> list[list[str]]:
    """Every command path of the parser: [], ["jobs"], ["jobs", "create"], ..."""
    import argparse

    paths = [[]]
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [[name, *rest] for rest in _commands(sub)]
    return paths


COMMANDS = _commands(parser())


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    return LogisticRegression(max_iter=500).fit(data.data, data.target), data.data.tolist()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, iris):
    from bpj.local.stack import LocalStack

    model, rows = iris
    with LocalStack(tmp_path_factory.mktemp("cli-stack")) as s:
        for bucket in ("cli-models", "cli-in", "cli-out"):
            s.gcs.create_bucket(bucket)
        s.gcs.write("gs://cli-models/iris/model.joblib", joblib_bytes(model))
        s.gcs.write("gs://cli-in/iris.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        big = "".join(json.dumps(rows[i % N_ROWS]) + "\n" for i in range(200_000)).encode()
        s.gcs.write("gs://cli-in/big.jsonl", big)
        yield s


@pytest.fixture(autouse=True)
def clean_config():
    config.reset()
    yield
    config.reset()


@pytest.fixture
def env(stack, monkeypatch):
    use_environment(monkeypatch, stack.env())
    return stack.env()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def one_line_failure(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bpj: ")
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(stack, iris):
    """A finished job created with ``bpj jobs create --sync --json``: (resource dict, model name)."""
    import contextlib
    import io

    config.reset()
    saved = dict(os.environ)
    os.environ.update(stack.env())
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert (
                main(
                    ["models", "upload", "--display-name", "iris", "--artifact-uri", "gs://cli-models/iris"]
                    + ["--image", SKLEARN_IMAGE, "--labels", "team=cli", "--json"]
                )
                == 0
            )
        model = json.loads(out.getvalue())
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(
                ["jobs", "create", "--display-name", "cli-iris", "--model", model["name"]]
                + ["--gcs-source", "gs://cli-in/iris.jsonl", "--gcs-destination-prefix", "gs://cli-out/iris"]
                + ["--batch-size", "32", "--labels", "team=cli", "--labels", "run=1", "--sync", "--json"]
            )
        assert code == 0
        return json.loads(out.getvalue()), model
    finally:
        os.environ.clear()
        os.environ.update(saved)
        config.reset()


# -- help -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "bpj")
def test_every_command_has_help(capsys, path):
    code, out, err = run(capsys, *path, "--help")
    assert code == 0
    assert out.startswith("usage: bpj") and not err


def test_the_tree_is_complete():
    names = {" ".join(p) for p in COMMANDS}
    assert {
        "local start",
        "local status",
        "models upload",
        "models list",
        "models describe",
        "models delete",
        "jobs create",
        "jobs describe",
        "jobs list",
        "jobs wait",
        "jobs cancel",
        "jobs delete",
        "outputs read",
        "outputs export",
        "bench",
    } <= names


# -- models -----------------------------------------------------------------------------------------------


def test_models_describe_and_list(env, capsys, job):
    _, model = job
    assert model["displayName"] == "iris" and model["labels"] == {"team": "cli"}
    out = ok(capsys, "models", "describe", model["name"])
    assert "name:" in out and model["name"] in out and "gs://cli-models/iris" in out
    described = json.loads(ok(capsys, "models", "describe", model["name"].rsplit("/", 1)[1], "--json"))
    assert described["name"] == model["name"]
    listed = json.loads(ok(capsys, "models", "list", "--filter", 'labels.team="cli"', "--json"))
    assert model["name"] in [m["name"] for m in listed]
    table = ok(capsys, "models", "list")
    assert table.splitlines()[0].split()[:2] == ["ID", "VERSION"]
    assert model["name"].rsplit("/", 1)[1] in table


def test_models_delete(env, capsys):
    upload = ["models", "upload", "--display-name", "doomed", "--artifact-uri", "gs://cli-models/iris"]
    made = json.loads(ok(capsys, *upload, "--image", SKLEARN_IMAGE, "--json"))
    assert ok(capsys, "models", "delete", made["name"]).strip() == f"deleted {made['name']}"
    line = one_line_failure(*run(capsys, "models", "describe", made["name"])[::2])
    assert "NOT_FOUND" in line


# -- jobs -------------------------------------------------------------------------------------------------


def test_jobs_create_sync(job):
    resource, model = job
    assert resource["state"] == "JOB_STATE_SUCCEEDED"
    assert resource["model"].startswith(model["name"])
    assert resource["completionStats"]["successfulCount"] == str(N_ROWS)
    assert resource["labels"]["team"] == "cli" and resource["labels"]["run"] == "1"
    assert resource["manualBatchTuningParameters"]["batchSize"] == 32


def test_jobs_describe_list_wait(env, stack, capsys, job):
    resource, _ = job
    name, job_id = resource["name"], resource["name"].rsplit("/", 1)[1]
    out = ok(capsys, "jobs", "describe", job_id)
    assert "JOB_STATE_SUCCEEDED" in out and f"{N_ROWS} ok, 0 failed" in out
    assert json.loads(ok(capsys, "jobs", "describe", name, "--json"))["name"] == name
    listed = json.loads(ok(capsys, "jobs", "list", "--filter", 'labels.team="cli"', "--json"))
    assert name in [j["name"] for j in listed]
    table = ok(capsys, "jobs", "list", "--limit", "5")
    assert table.splitlines()[0].split()[:2] == ["ID", "STATE"] and job_id in table
    assert ok(capsys, "jobs", "wait", job_id).strip() == f"{name} JOB_STATE_SUCCEEDED"
    assert json.loads(ok(capsys, "jobs", "wait", job_id, "--json", "--timeout", "30"))["state"] == (
        "JOB_STATE_SUCCEEDED"
    )
    # global options after the command, over REST
    rest_endpoint = stack.rest_endpoint
    rest = json.loads(
        ok(capsys, "jobs", "describe", job_id, "--json", "--endpoint", rest_endpoint, "--transport", "rest")
    )
    assert rest["name"] == name


def test_jobs_no_sync_cancel_delete(env, capsys, job):
    _, model = job
    out = ok(
        capsys,
        "jobs",
        "create",
        "--display-name",
        "cli-cancel",
        "--model",
        model["name"],
        "--gcs-source",
        "gs://cli-in/big.jsonl",
        "--gcs-destination-prefix",
        "gs://cli-out/cancel",
        "--instance-type",
        "array",
        "--no-sync",
    )
    name, state = out.split()
    assert state in ("JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
    # Ctrl-C while waiting: exit 130, one line, and the job goes on.
    waiting = subprocess.Popen(
        [sys.executable, "-m", "bpj.cli", "jobs", "wait", name],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=30)
    if waiting.returncode != 0:  # 0: the job ended first
        assert waiting.returncode == 130 and err == "bpj: interrupted\n"
    code, out, err = run(capsys, "jobs", "cancel", name, "--wait", "--json")
    if code == 0:
        assert json.loads(out)["state"] in ("JOB_STATE_CANCELLED", "JOB_STATE_SUCCEEDED")
    else:  # it ended before the cancel arrived
        assert "FAILED_PRECONDITION" in one_line_failure(code, err)
    assert ok(capsys, "jobs", "delete", name).strip() == f"deleted {name}"
    line = one_line_failure(*run(capsys, "jobs", "describe", name)[::2])
    assert "NOT_FOUND" in line and name in line


# -- outputs ----------------------------------------------------------------------------------------------


def test_outputs_read(env, capsys, job, iris):
    resource, _ = job
    model, rows = iris
    expected = {tuple(r): p for r, p in zip(rows, model.predict(rows).tolist(), strict=True)}
    lines = ok(capsys, "outputs", "read", resource["name"], "-n", "3").splitlines()
    assert len(lines) == 3
    for line in lines:
        record = json.loads(line)
        assert record["prediction"] == expected[tuple(record["instance"])]
    assert ok(capsys, "outputs", "read", resource["name"], "--count").strip() == str(N_ROWS)
    assert json.loads(ok(capsys, "outputs", "read", resource["name"], "--count", "--json")) == {
        "rows": N_ROWS
    }
    records = json.loads(ok(capsys, "outputs", "read", resource["name"], "--all", "--json"))
    assert len(records) == N_ROWS
    assert all(r["prediction"] == expected[tuple(r["instance"])] for r in records)
    directory = resource["outputInfo"]["gcsOutputDirectory"]
    assert ok(capsys, "outputs", "read", directory, "--count").strip() == str(N_ROWS)
    assert ok(capsys, "outputs", "read", resource["name"], "--errors", "--count").strip() == "0"


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_outputs_export(env, capsys, job, iris, tmp_path, ext):
    resource, _ = job
    model, rows = iris
    expected = model.predict(rows).tolist()
    path = tmp_path / f"predictions.{ext}"
    assert ok(capsys, "outputs", "export", resource["name"], str(path)).strip() == f"{N_ROWS} rows -> {path}"
    if ext == "jsonl":
        got = [json.loads(line) for line in path.read_text().splitlines()]
        instances, predictions = [g["instance"] for g in got], [g["prediction"] for g in got]
    elif ext == "csv":
        with open(path, newline="") as f:
            got = list(csv.DictReader(f))
        instances = [json.loads(g["instance"]) for g in got]
        predictions = [int(g["prediction"]) for g in got]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        instances, predictions = table.column("instance").to_pylist(), table.column("prediction").to_pylist()
    assert len(predictions) == N_ROWS
    by_row = {tuple(r): p for r, p in zip(rows, expected, strict=True)}
    assert [by_row[tuple(i)] for i in instances] == predictions


# -- local status, bench ----------------------------------------------------------------------------------


def test_local_status(env, capsys):
    report = json.loads(ok(capsys, "local", "status", "--json"))
    assert [r["service"] for r in report] == ["vertex", "gcs", "bigquery", "bigquery-storage"]
    assert all(r["answers"] for r in report), report
    code, out, err = run(capsys, "local", "status", "--endpoint", f"127.0.0.1:{closed_port()}")
    assert "NO ANSWER" in out and "vertex" in one_line_failure(code, err)


def test_bench(env, capsys, job):
    _, model = job
    report = json.loads(
        ok(
            capsys,
            "bench",
            "--model",
            model["name"],
            "--gcs-prefix",
            "gs://cli-bench/runs",
            "-n",
            "500",
            "--json",
        )
    )
    assert report["instances"] == 500 and report["predictions_read"] == 500 and report["failed"] == 0
    assert [p["phase"] for p in report["phases"]] == [
        "write input",
        "create",
        "run (create to end)",
        "read outputs",
    ]
    assert all(p["seconds"] > 0 for p in report["phases"])
    assert [p["unit"] for p in report["phases"]] == ["MB/s", None, "instances/s", "rows/s"]
    assert all(p["rate"] > 0 for p in report["phases"] if p["unit"])
    assert report["input"].startswith("gs://cli-bench/runs/bench-")
    out = ok(capsys, "bench", "--model", model["name"], "--gcs-prefix", "gs://cli-bench", "-n", "100")
    assert "PHASE" in out and "instances/s" in out


# -- failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "list", "--bogus"],
        ["--bogus", "jobs", "list"],
        ["jobs"],
        ["nonsense"],
        ["jobs", "create", "--model", "1"],  # --display-name is required
        ["jobs", "list", "--limit", "many"],
        ["--transport", "carrier-pigeon", "jobs", "list"],
    ],
)
def test_wrong_flag(env, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_failure(code, err)


def test_bad_values_fail_in_one_line(env, capsys, job):
    _, model = job
    create = ["jobs", "create", "--display-name", "x", "--model", model["name"]]
    for argv, says in (
        ([*create, "--labels", "novalue"], "--labels takes KEY=VALUE"),
        (
            [*create, "--gcs-source", "/local/file", "--gcs-destination-prefix", "gs://cli-out/x"],
            "--gcs-source",
        ),  # create()'s words, as flags
        (
            [*create, "--gcs-source", "gs://cli-in/iris.jsonl", "--gcs-destination-prefix", "gs://cli-out/x"]
            + ["--batch-size", "0"],
            "--batch-size",
        ),
        ([*create, "--gcs-source", "gs://cli-in/iris.jsonl"], "--gcs-destination-prefix"),
        (["--location", "Not A Region", "jobs", "list"], "location"),
        (["outputs", "export", "1", "out.xlsx"], "cannot tell the format"),
        (["bench", "--model", "1", "--gcs-prefix", "s3://x"], "--gcs-prefix"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert says in one_line_failure(code, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "describe", "424242"],
        ["jobs", "wait", "424242"],
        ["jobs", "cancel", "424242"],
        ["jobs", "delete", "424242"],
        ["outputs", "read", "424242"],
        ["models", "describe", "424242"],
        ["models", "delete", "424242"],
    ],
)
def test_missing_job_or_model(env, capsys, argv):
    line = one_line_failure(*run(capsys, *argv)[::2])
    assert "NOT_FOUND" in line and "424242" in line


@pytest.mark.parametrize("transport", ["grpc", "rest"])
@pytest.mark.parametrize(
    "argv", [["jobs", "list"], ["jobs", "describe", "1"], ["models", "list"], ["outputs", "read", "1"]]
)
def test_unreachable_endpoint(env, capsys, transport, argv):
    port = closed_port()
    code, _, err = run(capsys, "--endpoint", f"127.0.0.1:{port}", "--transport", transport, *argv)
    line = one_line_failure(code, err)
    assert "cannot reach" in line and f"127.0.0.1:{port}" in line


def test_unreachable_gcs_for_outputs(env, capsys, monkeypatch):
    monkeypatch.setenv("BPJ_GCS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    line = one_line_failure(*run(capsys, "outputs", "read", "gs://cli-out/x")[::2])
    assert "cannot reach the Cloud Storage endpoint" in line


# -- usage errors name the flags -------------------------------------------------------------------------


def _subparser(ap: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        ap = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return ap


CREATE = _subparser(parser(), "jobs", "create")
CREATE_FLAGS = {s for a in CREATE._actions for s in a.option_strings if s.startswith("--")}
# Where a call goes: a closed port, so that arguments that pass every check end in one quick "cannot reach".
OFFLINE = ["--project", "p", "--location", "us-central1", "--endpoint", "127.0.0.1:9"]
FLAG = re.compile(r"(?<![\w-])-{2,}[A-Za-z][\w-]*")

# Per flag, values that pass its own check (so that drawn commands reach the checks behind it) and values
# that fail one; any flag also gets arbitrary text now and then.
GOOD = {
    "--display-name": ["nightly", "x"],
    "--model": [
        "1",
        "iris@2",
        "projects/p/locations/us-central1/models/1",
        "publishers/google/models/gemini-2.0-flash",
    ],
    "--gcs-source": ["gs://bpj-in/a.jsonl", "gs://bpj-in/b.csv"],
    "--bigquery-source": ["bq://p.d.t"],
    "--gcs-destination-prefix": ["gs://bpj-out", "gs://bpj-out/run"],
    "--bigquery-destination-prefix": ["bq://p", "bq://p.d", "p.d"],
    "--instances-format": ["jsonl", "csv", "bigquery", "tf-record", "file-list"],
    "--predictions-format": ["jsonl", "csv", "bigquery"],
    "--labels": ["team=ml", "run=1"],
    "--model-parameters": ['{"t": 0.5}', "null", '"x"'],
    "--machine-type": ["n1-standard-4"],
    "--accelerator-type": ["NVIDIA_TESLA_T4"],
    "--service-account": ["sa@p.iam.gserviceaccount.com"],
    "--encryption-spec-key-name": ["projects/p/locations/l/keyRings/r/cryptoKeys/k"],
    "--instance-type": ["object", "array"],
    "--key-field": ["id"],
    "--included-field": ["a"],
    "--excluded-field": ["b"],
    "--create-request-timeout": ["30", "0.5"],
}
BAD = {
    "--display-name": ["", "x" * 129],
    "--model": ["projects/p/locations/europe-west4/models/1", "not a model", ""],
    "--gcs-source": ["gs://b/x", "/local/file", "gs://bpj-in/"],
    "--bigquery-source": ["bq://p.d", "bq://P.d.t"],
    "--gcs-destination-prefix": ["s3://x"],
    "--bigquery-destination-prefix": ["bq://p.d.t"],
    "--instances-format": ["parquet"],
    "--predictions-format": ["avro"],
    "--labels": ["Team=x", "novalue", "=x", "k=V"],
    "--model-parameters": ["[1,"],
    "--machine-type": ["N1", ""],
    "--accelerator-type": ["GPU"],
    "--service-account": ["nobody"],
    "--encryption-spec-key-name": ["key"],
    "--instance-type": ["table"],
    "--key-field": [""],
    "--included-field": [""],
    "--excluded-field": [""],
    "--create-request-timeout": ["0", "-1", "inf", "nan"],
}


def _mostly(common: st.SearchStrategy[str], rare: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``common`` nine times in ten: most drawn commands get past argparse and the first checks."""
    return st.integers(0, 9).flatmap(lambda i: rare if i == 0 else common)


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    flag = action.option_strings[0]
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
    if action.type is int:
        return _mostly(st.integers(1, 4).map(str), st.integers(-3, 2**31 + 3).map(str) | text)
    bad = st.sampled_from(BAD[flag]) | text if flag in BAD else text
    values = _mostly(st.sampled_from(GOOD[flag]), bad) if flag in GOOD else text
    # a value that writes a flag of its own would be echoed back as one: not a name the message chose
    return values.filter(lambda v: "--" not in v)


GLOBAL_FLAGS = {s for a in globals_parent()._actions for s in a.option_strings}


@st.composite
def create_argv(draw: st.DrawFn) -> list[str]:
    """``bpj jobs create`` with its required flags and some of the others, each with a drawn value."""
    argv = ["jobs", "create"]
    # One source and one destination, mostly: with neither or both, every command fails at the same check.
    pairs = {}
    for pair in (
        ("--gcs-source", "--bigquery-source"),
        ("--gcs-destination-prefix", "--bigquery-destination-prefix"),
    ):
        chosen = draw(_mostly(st.sampled_from([{pair[0]}, {pair[1]}]), st.sampled_from([set(), set(pair)])))
        pairs.update((flag, flag in chosen) for flag in pair)
    for action in CREATE._actions:
        flag = next((s for s in action.option_strings if s.startswith("--")), None)
        if flag is None or flag in GLOBAL_FLAGS or flag in ("--help", "--json"):
            continue
        if flag in pairs:
            if not pairs[flag]:
                continue
        elif not action.required and draw(st.integers(0, 9)) >= 3:
            continue
        if action.nargs == 0:  # --generate-explanation, --disable-container-logging, --sync/--no-sync
            argv.append(draw(st.sampled_from([s for s in action.option_strings if s.startswith("--")])))
            continue
        count = draw(st.integers(1, 3)) if isinstance(action, argparse._AppendAction) else 1
        argv += [f"{flag}={draw(_value(action))}" for _ in range(count)]
    return [*OFFLINE, *argv]


def test_a_bad_label_names_its_flag_once(capsys):
    for argv, says in (
        (["--labels", "team"], "--labels takes KEY=VALUE, got 'team'"),
        (["--labels", "Team=x"], "--labels['Team']: label key 'Team'"),
    ):
        code, _, err = run(
            capsys,
            *OFFLINE,
            *["jobs", "create", "--display-name", "x", "--model", "1", "--gcs-source", "gs://bpj-in/a.jsonl"],
            *["--gcs-destination-prefix", "gs://bpj-out", *argv],
        )
        assert code == 2
        line = one_line_failure(code, err)
        assert says in line
        assert line.count("--labels") == 1 and "----" not in line


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=create_argv())
def test_every_usage_error_of_create_names_a_flag_of_create(capsys, argv):
    code, _, err = run(capsys, *argv)
    if code != 2:
        assert code == 1 and "cannot reach" in err, err  # every argument passed: the call was next
        return
    line = one_line_failure(code, err).removeprefix("bpj: ")
    flags = FLAG.findall(line)
    assert flags, line
    assert set(flags) <= CREATE_FLAGS, line  # no ----labels, no flag of another command
    assert FLAG.search(line.split(": ", 1)[0]), line  # the subject of the message is a flag
    python_names = [*validation.CREATE_ARGUMENTS, "create_request_timeout"]
    assert not [n for n in python_names if f"{n}=" in line], line  # advice speaks in flags too


# -- the real entry point ---------------------------------------------------------------------------------


def _python_m(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BPJ_")}
    return subprocess.run(
        [sys.executable, "-m", "bpj.cli", *argv],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_bpj_cli(stack, job):
    resource, _ = job
    done = _python_m(stack.env(), "jobs", "describe", resource["name"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    done = _python_m(stack.env(), "--endpoint", f"127.0.0.1:{closed_port()}", "jobs", "list")
    assert done.returncode == 1 and not done.stdout
    one_line_failure(done.returncode, done.stderr)
    done = _python_m(stack.env(), "jobs", "describe", "424242")
    assert done.returncode == 1 and "NOT_FOUND" in one_line_failure(done.returncode, done.stderr)


# -- exit statuses, --version, errors under --json, logging -------------------------------------------------


def test_version_prints_the_package_version(capsys):
    import bpj

    assert run(capsys, "--version")[:2] == (0, f"bpj {bpj.__version__}\n")


def test_a_wait_that_runs_out_exits_3_and_a_failed_job_1(env, capsys, job):
    _, model = job
    out = ok(
        capsys,
        "jobs",
        "create",
        "--display-name",
        "cli-timeout",
        "--model",
        model["name"],
        "--gcs-source",
        "gs://cli-in/big.jsonl",
        "--gcs-destination-prefix",
        "gs://cli-out/timeout",
        "--instance-type",
        "array",
        "--no-sync",
    )
    name = out.split()[0]
    code, _, err = run(capsys, "jobs", "wait", name, "--timeout", "0.01", "--json")
    if code != 0:  # 0: it ended within 10 ms
        failure = json.loads(err)["error"]
        assert (code, failure["exit"], failure["status"]) == (3, 3, "DEADLINE_EXCEEDED")
        assert name in failure["message"]
    run(capsys, "jobs", "cancel", name, "--wait")
    code, _, err = run(capsys, "jobs", "wait", name)
    if code != 0:  # CANCELLED (it did not end first): a job that did not succeed exits 1
        assert code == 1 and "JOB_STATE_CANCELLED" in one_line_failure(code, err)


def test_errors_are_one_json_object_under_json(env, capsys):
    code, out, err = run(capsys, "jobs", "describe", "424242", "--json")
    failure = json.loads(err)["error"]
    assert code == 1 and out == "" and failure["status"] == "NOT_FOUND" and failure["exit"] == 1
    assert "424242" in failure["message"]
    code, _, err = run(
        capsys, "jobs", "create", "--display-name", "x", "--model", "1", "--json", "--labels", "team"
    )
    failure = json.loads(err)["error"]
    assert code == 2 and failure["status"] == "INVALID_ARGUMENT" and "--labels" in failure["message"]
    code, _, err = run(capsys, "jobs", "create", "--display-name", "x", "--json")
    failure = json.loads(err)["error"]
    assert code == 2 and "--model" in failure["message"]


def test_the_library_prints_no_log_unless_the_application_asks():
    script = (
        "import logging, sys\n"
        "from bpj import retry\n"
        "retry.log.warning('quiet')\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s %(message)s')\n"
        "retry.log.warning('shown')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "bpj shown\n"


# -- gcs and bq ---------------------------------------------------------------------------------------------


def test_gcs_mb_ls_cp_both_ways(env, capsys, tmp_path):
    tree = tmp_path / "data"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    assert ok(capsys, "gcs", "mb", "gs://cli-copies").strip() == "gs://cli-copies"
    ok(capsys, "gcs", "cp", "-r", str(tree), "gs://cli-copies/up")
    ok(capsys, "gcs", "cp", str(tree / "a.txt"), "gs://cli-copies/one/renamed.txt")
    listed = json.loads(ok(capsys, "gcs", "ls", "gs://cli-copies", "--json"))
    assert sorted(o["uri"] for o in listed) == [
        "gs://cli-copies/one/renamed.txt",
        "gs://cli-copies/up/data/a.txt",
        "gs://cli-copies/up/data/sub/b.bin",
    ]
    back = tmp_path / "back"
    ok(capsys, "gcs", "cp", "-r", "gs://cli-copies/up/", str(back))
    assert (back / "data" / "a.txt").read_bytes() == b"alpha"
    assert (back / "data" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 100
    ok(capsys, "gcs", "cp", "gs://cli-copies/one/renamed.txt", str(tmp_path / "single.txt"))
    assert (tmp_path / "single.txt").read_bytes() == b"alpha"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["gcs", "cp", "a", "b"], "one side must be each"),
        (["gcs", "cp", "gs://cli-x/a", "gs://cli-x/b"], "one side must be each"),
        (["gcs", "cp", "gs://cli-x/a", "/tmp/x/", "nope.txt"], "not both"),
        (["gcs", "cp", "no-such-file.txt", "gs://cli-x/"], "no such file"),
        (["gcs", "cp", ".", "gs://cli-x/"], "is a directory: add -r"),
        (["gcs", "cp", "gs://cli-x/dir/", "."], "is a prefix: add -r"),
        (["gcs", "cp", "only-one"], "at least two paths"),
        (["gcs", "mb", "gs://cli-x/not/a/bucket"], "a bucket alone"),
        (["gcs", "mb", "gs://UPPER"], "BUCKET"),
        (["bq", "load", "bq://p.d", "x.jsonl"], "TABLE"),
        (["bq", "load", "bq://p.d.t", "x.txt"], "cannot tell the format"),
        (["bq", "load", "bq://p.d.t", "missing.jsonl"], "no such file"),
    ],
)
def test_gcs_and_bq_refuse_bad_arguments_before_connecting(capsys, argv, says, monkeypatch):
    monkeypatch.setenv("BPJ_GCS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert says in one_line_failure(code, err)


def test_bq_load_makes_the_table_and_appends(env, capsys, tmp_path):
    rows = [{"a": 1.5, "b": "x", "c": [1, 2]}, {"a": 2.5, "b": "y", "c": []}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    project = env["BPJ_PROJECT"]
    assert ok(capsys, "bq", "load", f"bq://{project}.cli_loads.rows", str(src)).strip().startswith("2 rows")
    assert (
        json.loads(ok(capsys, "bq", "load", f"bq://{project}.cli_loads.rows", str(src), "--json"))["rows"]
        == 2
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    code, _, err = run(capsys, "bq", "load", f"bq://{project}.cli_loads.rows", str(bad))
    assert code == 2 and "not valid JSONL" in one_line_failure(code, err)


@pytest.mark.parametrize("fmt", [None, "csv", "parquet"])
def test_outputs_export_to_stdout_is_the_file_export(env, capsys, job, tmp_path, fmt):
    resource, _ = job
    ext = fmt or "jsonl"
    path = tmp_path / f"file.{ext}"
    ok(capsys, "outputs", "export", resource["name"], str(path), *(["--format", fmt] if fmt else []))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bpj.cli",
            "outputs",
            "export",
            resource["name"],
            "-",
            *(["--format", fmt] if fmt else []),
        ],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr.decode() == f"{N_ROWS} rows -> stdout\n", done.stderr
    if ext == "parquet":
        import io

        import pyarrow.parquet as pq

        assert pq.read_table(io.BytesIO(done.stdout)).to_pylist() == pq.read_table(path).to_pylist()
    elif ext == "csv":
        assert done.stdout == path.read_bytes()
    else:
        assert [json.loads(x) for x in done.stdout.splitlines()] == [
            json.loads(x) for x in path.read_bytes().splitlines()
        ]


def test_export_to_stdout_refuses_json_output(capsys):
    code, _, err = run(capsys, "outputs", "export", "gs://bucket-x/dir", "-", "--json")
    assert code == 2 and "--json and -" in json.loads(err)["error"]["message"]


COMPLETE = """
eval "$(bpj completion {shell})"
complete_words() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _bpj_complete; echo "${{COMPREPLY[*]}}"; }}
complete_words bpj jo
complete_words bpj --project p jobs c
complete_words bpj jobs create --dis
complete_words bpj outputs export --
"""


def test_shell_completion_comes_from_the_parser():
    from bpj.cli import parser
    from bpj.cli.completion import words

    table = words(parser())
    assert "jobs create" in table and "--display-name" in table["jobs create"]
    assert set(table[""]) >= {"jobs", "models", "outputs", "local", "gcs", "bq", "bench", "--version"}
    done = subprocess.run(
        ["bash", "-c", COMPLETE.format(shell="bash")],
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "jobs"
    assert lines[1] == "cancel create"  # --project's value is not taken for a command
    assert lines[2] == "--disable-container-logging --display-name"
    assert set(lines[3].split()) == {w for w in table["outputs export"] if w.startswith("--")}
