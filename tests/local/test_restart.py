"""The stack as a user runs it: ``bpj local start`` in its own process. A ``kill -9`` mid-job and a start on the
same data dir keep every job and model; the job that was running ends FAILED saying why; a bearer token,
when set, is required on every call."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj._gen.services.model_service import ModelServiceClient
from bpj.gcs import Gcs
from bpj.local.executor import CRASHED
from bpj.transport.base import WithMetadata
from bpj.transport.grpc import GrpcTransport
from bpj.transport.rest import RestTransport
from tests.local.conftest import SKLEARN_IMAGE, S, joblib_bytes, wait_for

PARENT = "projects/bpj-local/locations/us-central1"


class Started:
    """A ``bpj local start`` process and the environment it printed."""

    def __init__(self, data_dir, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bpj.cli", "local", "start", "--data-dir", str(data_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.env: dict[str, str] = {}
        self.rest = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                self.env[key] = value
            elif line.startswith("# REST: "):
                self.rest = line.removeprefix("# REST: ").strip()
            elif line.startswith("# data:"):
                break
        assert self.env, "bpj local start printed no environment"

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


@pytest.fixture
def started(tmp_path):
    running: list[Started] = []

    def start(*extra: str) -> Started:
        s = Started(tmp_path / "data", *extra)
        running.append(s)
        return s

    yield start
    for s in running:
        if s.proc.poll() is None:
            s.stop(signal.SIGKILL)


def clients(env, token=None):
    transport = GrpcTransport(env["BPJ_API_ENDPOINT"])
    if token:
        transport = WithMetadata(transport, [("authorization", f"Bearer {token}")])
    return JobServiceClient(transport), ModelServiceClient(transport)


def upload_iris(env, models, iris) -> str:
    gcs = Gcs(env["BPJ_GCS_ENDPOINT"])
    for bucket in ("bpj-models", "bpj-in", "bpj-out"):
        gcs.create_bucket(bucket)
    gcs.write("gs://bpj-models/iris/model.joblib", joblib_bytes(iris[0]))
    m = types.Model(display_name="iris", artifact_uri="gs://bpj-models/iris")
    m.container_spec.image_uri = SKLEARN_IMAGE
    op = models.upload_model(types.UploadModelRequest(parent=PARENT, model=m))
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model


def job(model, uri, batch_size=0):
    j = types.BatchPredictionJob(display_name="restart", model=model)
    j.input_config.instances_format = "jsonl"
    j.input_config.gcs_source.uris.append(uri)
    j.output_config.predictions_format = "jsonl"
    j.output_config.gcs_destination.output_uri_prefix = "gs://bpj-out/run"
    j.manual_batch_tuning_parameters.batch_size = batch_size
    return j


def test_kill_9_then_restart_keeps_jobs_and_models(started, iris):
    first = started()
    jobs, models = clients(first.env)
    model = upload_iris(first.env, models, iris)
    gcs = Gcs(first.env["BPJ_GCS_ENDPOINT"])
    gcs.write("gs://bpj-in/small.jsonl", b"[5.1, 3.5, 1.4, 0.2]\n[6.2, 2.9, 4.3, 1.3]\n")
    gcs.write("gs://bpj-in/big.jsonl", b"\n".join([b"[5.1, 3.5, 1.4, 0.2]"] * 300_000))
    get = lambda c: lambda n: c.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n))  # noqa: E731
    create = lambda c, j: c.create_batch_prediction_job(  # noqa: E731
        types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=j)
    )
    done = wait_for(get(jobs), create(jobs, job(model, "gs://bpj-in/small.jsonl")).name)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    running = create(jobs, job(model, "gs://bpj-in/big.jsonl", batch_size=4)).name
    wait_for(get(jobs), running, states={S.JOB_STATE_RUNNING})

    first.proc.kill()  # kill -9: no clean shutdown
    first.proc.wait(10)

    second = started()
    jobs2, models2 = clients(second.env)
    assert models2.get_model(types.GetModelRequest(name=model)).display_name == "iris"
    assert get(jobs2)(done.name) == done
    crashed = get(jobs2)(running)
    assert crashed.state == S.JOB_STATE_FAILED
    assert crashed.error.message == CRASHED
    assert not crashed.output_info.gcs_output_directory  # partial outputs are not presented as complete
    listed = jobs2.list_batch_prediction_jobs(types.ListBatchPredictionJobsRequest(parent=PARENT))
    assert {j.name for j in listed.batch_prediction_jobs} == {done.name, running}
    # The stack still runs jobs after the restart, reading what the first one stored in GCS.
    again = wait_for(get(jobs2), create(jobs2, job(model, "gs://bpj-in/small.jsonl")).name)
    assert again.state == S.JOB_STATE_SUCCEEDED, again.error
    assert second.stop() == 0


def test_token_is_required_on_every_call(started):
    s = started("--token", "s3cret")
    assert s.env["BPJ_TOKEN"] == "s3cret"
    request = types.ListBatchPredictionJobsRequest(parent=PARENT)
    for transport in (GrpcTransport(s.env["BPJ_API_ENDPOINT"]), RestTransport(s.rest)):
        with pytest.raises(errors.Unauthenticated, match="bearer token"):
            JobServiceClient(transport).list_batch_prediction_jobs(request)
        with pytest.raises(errors.Unauthenticated):
            JobServiceClient(
                WithMetadata(transport, [("authorization", "Bearer wrong")])
            ).list_batch_prediction_jobs(request)
        ok = JobServiceClient(WithMetadata(transport, [("authorization", "Bearer s3cret")]))
        assert ok.list_batch_prediction_jobs(request).batch_prediction_jobs == []
    every_other_port_needs_it(s.env, "s3cret")
    assert s.stop() == 0


def every_other_port_needs_it(env: dict[str, str], token: str) -> None:
    """GCS, BigQuery REST and Storage Read refuse a request without the token and serve one with it."""
    import requests

    from bpj._gen.services.big_query_read import BigQueryReadClient

    with pytest.raises(errors.Unauthenticated):
        Gcs(env["BPJ_GCS_ENDPOINT"]).create_bucket("no-token")
    with pytest.raises(errors.Unauthenticated):
        Gcs(env["BPJ_GCS_ENDPOINT"], token="wrong").create_bucket("no-token")
    Gcs(env["BPJ_GCS_ENDPOINT"], token=token).create_bucket("with-token")
    datasets = f"{env['BPJ_BIGQUERY_ENDPOINT']}/bigquery/v2/projects/bpj-local/datasets"
    assert requests.get(datasets, timeout=10).status_code == 401
    assert requests.get(datasets, headers={"Authorization": f"bearer {token}"}, timeout=10).status_code == 200
    session = types.CreateReadSessionRequest(
        parent="projects/bpj-local",
        read_session=types.ReadSession(table="projects/bpj-local/datasets/d/tables/t"),
    )
    storage = GrpcTransport(env["BPJ_BIGQUERY_STORAGE_ENDPOINT"])
    with pytest.raises(errors.Unauthenticated):
        BigQueryReadClient(storage).create_read_session(session)
    with pytest.raises(errors.NotFound):  # past the token: the table does not exist
        authorized = WithMetadata(storage, [("authorization", f"Bearer {token}")])
        BigQueryReadClient(authorized).create_read_session(session)


def test_a_host_beyond_loopback_needs_a_token(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bpj.cli", "local", "start", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "--token" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "vertex.sqlite3").exists()  # refused before anything started


def test_a_host_beyond_loopback_warns_once(caplog):
    from bpj.local.stack import LocalStack

    with pytest.raises(errors.UsageError, match="give a token"):
        LocalStack(host="10.1.2.3")
    LocalStack(host="0.0.0.0", token="t")
    LocalStack(host="127.0.0.1")
    LocalStack(host="::1")
    warned = [r for r in caplog.records if "listens on 0.0.0.0" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"


def test_host_0_0_0_0_with_a_token_prints_endpoints_a_client_can_use(started):
    s = started("--host", "0.0.0.0", "--token", "t0k")
    for key in (
        "BPJ_API_ENDPOINT",
        "BPJ_GCS_ENDPOINT",
        "BPJ_BIGQUERY_ENDPOINT",
        "BPJ_BIGQUERY_STORAGE_ENDPOINT",
    ):
        assert "0.0.0.0" not in s.env[key] and "127.0.0.1" in s.env[key], s.env
    jobs, _ = clients(s.env, token="t0k")
    assert jobs.list_batch_prediction_jobs(types.ListBatchPredictionJobsRequest(parent=PARENT)) is not None
    every_other_port_needs_it(s.env, "t0k")
    assert s.stop() == 0


def test_fake_gcs_server_does_not_outlive_a_killed_stack(started):
    s = started()
    s.proc.kill()
    s.proc.wait(10)
    gcs = Gcs(s.env["BPJ_GCS_ENDPOINT"])
    deadline = time.monotonic() + 10
    while True:  # the child gets SIGTERM from the kernel when its parent dies; give it a moment to exit
        try:
            gcs.create_bucket("still-there")
        except errors.Unavailable:
            break
        if time.monotonic() > deadline:
            raise AssertionError("fake-gcs-server still answers after its stack was killed")
        time.sleep(0.1)


def test_an_unguarded_fake_gcs_server_does_not_outlive_its_process(tmp_path):
    """The engine started without the guard (GcsServer(guarded=False)) goes through a launcher that asks
    for the parent-death signal and then execs it: killing its process ends it too."""
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from bpj.local.gcs import GcsServer\n"
        "s = GcsServer(sys.argv[1], guarded=False)\n"
        "print(s.endpoint, s._proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        endpoint, pid = proc.stdout.readline().split()
        Gcs(endpoint).create_bucket("alive")  # it answers
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"fake-gcs-server" in f.read()  # the launcher became the engine (same pid)
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"fake-gcs-server {pid} still runs after its process was killed")
        time.sleep(0.1)


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
