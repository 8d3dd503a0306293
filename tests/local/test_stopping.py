"""A predictor that never returns can be stopped, one that dies fails its job, and ``bpj local start`` exits
with all its children within 10 s of SIGTERM or SIGINT, a hanging job running. Real stacks, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bpj import types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj.gcs import Gcs
from bpj.transport.grpc import GrpcTransport
from tests.local.conftest import S, wait_for

PARENT = "projects/bpj-local/locations/us-central1"
STOP_WITHIN = 10.0

# {pid_file} is where the predictor writes its pid when it starts to hang (or to die).
PREDICTORS = {
    "hang_in_predict": """
        class Predictor:
            def load(self, path):
                pass

            def predict(self, body):
                write_pid()
                while True:
                    time.sleep(1)
    """,
    "hang_in_load": """
        class Predictor:
            def load(self, path):
                write_pid()
                while True:
                    time.sleep(1)

            def predict(self, body):
                return body["instances"]
    """,
    "hang_ignoring_sigterm": """
        import signal

        class Predictor:
            def load(self, path):
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                write_pid()
                while True:
                    time.sleep(1)

            def predict(self, body):
                return body["instances"]
    """,
    "segfault": """
        class Predictor:
            def load(self, path):
                pass

            def predict(self, body):
                import ctypes

                write_pid()
                ctypes.string_at(0)
    """,
    "exit_3": """
        class Predictor:
            calls = 0

            def load(self, path):
                pass

            def predict(self, body):
                Predictor.calls += 1
                if Predictor.calls == 3:
                    write_pid()
                    os._exit(3)
                return [sum(i) for i in body["instances"]]
    """,
    "sum": """
        class Predictor:
            def load(self, path):
                pass

            def predict(self, body):
                return [sum(i) for i in body["instances"]]
    """,
}


def predictor_source(kind: str, pid_file: Path) -> bytes:
    head = f"""
        import os
        import time

        def write_pid():
            with open({str(pid_file)!r} + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
    """
    return (textwrap.dedent(head) + textwrap.dedent(PREDICTORS[kind])).encode()


class Vertex:
    """Clients of one stack: upload a custom predictor, create a job, get it."""

    def __init__(self, endpoint: str, gcs: Gcs) -> None:
        self.transport = GrpcTransport(endpoint)
        self.jobs = JobServiceClient(self.transport)
        self.models = ModelServiceClient(self.transport)
        self.gcs = gcs
        for bucket in ("stop-models", "stop-in", "stop-out"):
            gcs.create_bucket(bucket)
        lines = "".join(f"[{i}, 1, 2, 3]\n" for i in range(40))
        gcs.write("gs://stop-in/rows.jsonl", lines.encode())

    def upload(self, kind: str, pid_file: Path) -> str:
        uri = f"gs://stop-models/{kind}"
        self.gcs.write(f"{uri}/predictor.py", predictor_source(kind, pid_file))
        m = types.Model(display_name=kind, artifact_uri=uri)
        m.container_spec.image_uri = "europe-docker.pkg.dev/p/serving/cpr:1"
        m.container_spec.env.append(types.EnvVar(name="BPJ_PREDICTOR", value="predictor:Predictor"))
        op = self.models.upload_model(types.UploadModelRequest(parent=PARENT, model=m))
        response = types.UploadModelResponse()
        op.response.Unpack(response)
        return response.model

    def create(self, model: str) -> str:
        j = types.BatchPredictionJob(display_name="stopping", model=model)
        j.input_config.instances_format = "jsonl"
        j.input_config.gcs_source.uris.append("gs://stop-in/rows.jsonl")
        j.output_config.predictions_format = "jsonl"
        j.output_config.gcs_destination.output_uri_prefix = "gs://stop-out/run"
        j.manual_batch_tuning_parameters.batch_size = 2
        request = types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=j)
        return self.jobs.create_batch_prediction_job(request).name

    def get(self, name: str) -> types.BatchPredictionJob:
        return self.jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))


@pytest.fixture(scope="module")
def vertex(stack):
    v = Vertex(stack.api_endpoint, stack.gcs)
    yield v
    v.transport.close()


def read_pid(pid_file: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while not pid_file.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"the predictor never wrote {pid_file}")
        time.sleep(0.05)
    return int(pid_file.read_text())


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_gone(pids: set[int], deadline: float) -> None:
    while True:
        left = {p for p in pids if alive(p)}
        if not left:
            return
        if time.monotonic() > deadline:
            cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in left}
            raise AssertionError(f"still running after {STOP_WITHIN} s: {cmdlines}")
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["hang_in_predict", "hang_in_load", "hang_ignoring_sigterm"])
def test_cancel_stops_a_predictor_that_never_returns(vertex, tmp_path, kind):
    pid_file = tmp_path / "pid"
    name = vertex.create(vertex.upload(kind, pid_file))
    wait_for(vertex.get, name, states={S.JOB_STATE_RUNNING})
    pid = read_pid(pid_file)
    assert alive(pid)
    vertex.jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=name))
    cancelled_at = time.monotonic()
    job = wait_for(vertex.get, name, timeout=STOP_WITHIN)
    assert job.state == S.JOB_STATE_CANCELLED, job.error
    assert job.completion_stats.successful_count == 0
    assert not job.output_info.gcs_output_directory
    wait_gone({pid}, cancelled_at + STOP_WITHIN)


@pytest.mark.parametrize(
    ("kind", "how"), [("exit_3", "exited with code 3"), ("segfault", "was killed by signal SIGSEGV (11)")]
)
def test_a_predictor_that_dies_fails_its_job_saying_so(vertex, tmp_path, kind, how):
    pid_file = tmp_path / "pid"
    model = vertex.upload(kind, pid_file)
    job = wait_for(vertex.get, vertex.create(model))
    assert job.state == S.JOB_STATE_FAILED
    assert job.error.code == 13  # INTERNAL
    assert how in job.error.message
    assert f'"{kind}"' in job.error.message and model in job.error.message
    assert not job.output_info.gcs_output_directory
    assert job.completion_stats.successful_count < 40
    wait_gone({read_pid(pid_file)}, time.monotonic() + STOP_WITHIN)


def test_a_job_cancelled_while_it_waits_for_a_worker_ends_cancelled(vertex, stack, tmp_path):
    hang = vertex.upload("hang_in_predict", tmp_path / "pid")
    busy = [vertex.create(hang) for _ in range(stack.workers)]
    for name in busy:
        wait_for(vertex.get, name, states={S.JOB_STATE_RUNNING})
    queued = vertex.create(vertex.upload("sum", tmp_path / "pid-sum"))
    assert vertex.get(queued).state == S.JOB_STATE_PENDING  # every worker is busy
    for name in [queued, *busy]:
        vertex.jobs.cancel_batch_prediction_job(types.CancelBatchPredictionJobRequest(name=name))
    for name in [queued, *busy]:
        job = wait_for(vertex.get, name, timeout=2 * STOP_WITHIN)
        assert job.state == S.JOB_STATE_CANCELLED, (name, job.state, job.error)


def test_the_stack_runs_jobs_after_a_cancel_and_a_crash(vertex, tmp_path):
    job = wait_for(vertex.get, vertex.create(vertex.upload("sum", tmp_path / "pid")))
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.completion_stats.successful_count == 40


# -- bpj local start ------------------------------------------------------------------------------------


def descendants(root: int) -> set[int]:
    """Every process whose parent chain leads to ``root`` (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_bpj_local_start_exits_with_its_children_within_10_s(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpj.cli", "local", "start", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BPJ_")},
    )
    try:
        env: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                env[key] = value
            elif line.startswith("# data:"):
                break
        vertex = Vertex(env["BPJ_API_ENDPOINT"], Gcs(env["BPJ_GCS_ENDPOINT"]))
        pid_file = tmp_path / "pid"
        name = vertex.create(vertex.upload("hang_in_predict", pid_file))
        wait_for(vertex.get, name, states={S.JOB_STATE_RUNNING})
        predictor = read_pid(pid_file)
        vertex.transport.close()
        children = descendants(proc.pid)
        assert predictor in children

        proc.send_signal(sig)
        deadline = time.monotonic() + STOP_WITHIN
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bpj local start still runs {STOP_WITHIN} s after {sig.name}") from None
        wait_gone(children, deadline)
        assert proc.stderr is not None
        assert code == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
