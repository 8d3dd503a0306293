"""A real local stack for the tests of this folder, and real models trained on scikit-learn's bundled data."""

from __future__ import annotations

import io
import time

import pytest

from bpj import types

S = types.JobState
TERMINAL = {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED}
SKLEARN_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    """A directory outside the data dir holding what an attacker would like the stack to load."""
    from tests.local.hostile import PREDICTOR

    d = tmp_path_factory.mktemp("sentinel")
    (d / "model.pkl").write_bytes(b"never loaded")
    (d / "predictor.py").write_text(PREDICTOR)
    return d


@pytest.fixture(scope="module", params=["grpc", "rest"])
def clients(request, stack):
    """JobService and ModelService clients on the module's stack, over gRPC and over REST."""
    from bpj._gen.services.job_service import JobServiceClient
    from bpj._gen.services.model_service import ModelServiceClient
    from bpj.transport.grpc import GrpcTransport
    from bpj.transport.rest import RestTransport

    transport = (
        GrpcTransport(stack.api_endpoint) if request.param == "grpc" else RestTransport(stack.rest_endpoint)
    )
    yield JobServiceClient(transport), ModelServiceClient(transport)
    transport.close()


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    return model, data.data.tolist()


def joblib_bytes(model) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def wait_for(get_job, name: str, *, states=TERMINAL, timeout: float = 120.0):
    """Poll Get until the job reaches one of ``states``; fail the test with the job if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(name)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not reach {states} in {timeout}s: {job}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def official_env(stack):
    """The environment the official clients read their endpoints from (GCS, BigQuery), for one module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", stack.gcs_endpoint)
        mp.setenv("BIGQUERY_EMULATOR_HOST", stack.bigquery_endpoint)
        yield mp


@pytest.fixture(scope="module")
def official_sdk(stack, official_env):
    """google-cloud-aiplatform, unmodified, pointed at the stack's REST endpoint for one module; its global
    config is reset afterwards."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    aiplatform.init(
        project=stack.project,
        location=stack.location,
        api_endpoint=stack.rest_endpoint,
        api_transport="rest",
        credentials=AnonymousCredentials(),
    )
    yield aiplatform
    initializer.global_config.__init__()
