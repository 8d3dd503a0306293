"""Errors that code written for the official SDK catches: bpj's ApiErrors are also the matching
``google.api_core.exceptions`` classes once that module is imported (and ``import bpj`` never imports it),
and a job that ends FAILED, CANCELLED or EXPIRED raises a RuntimeError."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap

import grpc
import pytest
from google.api_core import exceptions as gexc
from hypothesis import given
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj.jobs import BatchPredictionJob, JobCancelled, JobExpired, JobFailed, WaitTimeout
from tests import test_jobs
from tests.servicers import job_name

S = types.JobState
CODES = [c for c in errors.Code if c != errors.Code.OK]
# FakeVertex reached in memory, or through a real gRPC or REST server on 127.0.0.1 (test_jobs' fixture).
fake = test_jobs.fake
submit = test_jobs.submit
ERROR_INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "QUOTA",
    "domain": "aiplatform.googleapis.com",
    "metadata": {"region": "us-central1"},
}


def run(code: str) -> str:
    """Runs a script in a fresh interpreter; its assertions fail the test with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def official_class(code: errors.Code) -> type[BaseException]:
    return gexc.exception_class_for_grpc_status(grpc.StatusCode[code.name])


# -- import cost ----------------------------------------------------------------------------------------


def test_import_bpj_loads_no_api_core_and_no_grpc() -> None:
    run(
        """
        import importlib.util, sys
        assert importlib.util.find_spec("google.api_core") is not None  # installed, so it could load
        import bpj
        from bpj import errors
        err = errors.from_status(5, "gone", rpc="JobService.GetBatchPredictionJob")
        assert isinstance(err, errors.NotFound) and err.http_status == 404
        loaded = [m for m in sys.modules if m.startswith(("google.api_core", "grpc"))]
        assert not loaded, loaded
        """
    )


def test_classes_follow_api_core_whenever_it_is_imported() -> None:
    run(
        """
        from bpj import errors
        before = errors.NotFound("made before api_core was imported")
        from google.api_core import exceptions as gexc
        assert not isinstance(before, gexc.NotFound)  # nothing created since: not bound yet
        errors.from_status(5, "the next error binds every class")
        assert isinstance(before, gexc.NotFound) and type(before) is errors.NotFound
        """
    )
    run(
        """
        from google.api_core import exceptions as gexc
        from bpj import errors  # bound as it loads
        assert issubclass(errors.Unreachable, gexc.ServiceUnavailable)
        assert issubclass(errors.DataCorruption, gexc.DataLoss)
        assert not issubclass(errors.UsageError, gexc.GoogleAPIError)
        """
    )


# -- the class mapping ----------------------------------------------------------------------------------


@given(code=st.sampled_from(list(errors.Code)), message=st.text(max_size=50), direct=st.booleans())
def test_every_code_maps_as_api_core_maps_it(code, message, direct) -> None:
    mapped = errors.Code.UNKNOWN if code == errors.Code.OK else code  # from_status's rule for OK
    err = errors.ApiError(message, code=mapped) if direct else errors.from_status(code, message)
    theirs = gexc.from_grpc_status(int(mapped), message)
    assert type(err) is errors.error_class(mapped) and err.code == mapped
    assert isinstance(err, type(theirs)) and type(theirs) is official_class(mapped)
    # The most specific api_core class it is, is that one: NotFound is no Unknown, Aborted no AlreadyExists.
    assert [c for c in type(err).__mro__ if c.__module__ == gexc.__name__][0] is type(theirs)
    assert err.grpc_status_code == theirs.grpc_status_code
    # api_core gives UNKNOWN and DATA_LOSS no HTTP status; google.rpc.Code maps both to 500.
    assert err.http_status == (theirs.code or 500)
    assert err.message == theirs.message == message


def test_api_core_tables_are_untouched() -> None:
    errors.from_status(errors.Code.NOT_FOUND, "bind")
    for code in CODES:
        assert official_class(code).__module__ == gexc.__name__
        assert gexc.exception_class_for_http_status(int(code)) is gexc.GoogleAPICallError


def test_attributes_of_both_families() -> None:
    err = errors.from_status(
        errors.Code.RESOURCE_EXHAUSTED,
        "no quota",
        [ERROR_INFO, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
        rpc="JobService.CreateBatchPredictionJob",
        resource="projects/p/locations/l",
    )
    assert err.code == errors.Code.RESOURCE_EXHAUSTED and err.http_status == 429
    assert err.grpc_status_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (err.reason, err.domain, err.metadata) == (
        "QUOTA",
        "aiplatform.googleapis.com",
        {"region": "us-central1"},
    )
    assert err.retry_delay == 2.0 and err.details[0] == ERROR_INFO
    assert (err.errors, err.response) == ([], None)
    assert str(err) == (
        "RESOURCE_EXHAUSTED from JobService.CreateBatchPredictionJob on projects/p/locations/l: no quota"
    )
    plain = errors.NotFound("gone")
    assert (plain.reason, plain.domain, plain.metadata, plain.details) == (None, None, None, [])


def test_usage_errors_stay_value_errors() -> None:
    assert not issubclass(errors.UsageError, gexc.GoogleAPIError)
    assert issubclass(errors.UsageTypeError, TypeError) and issubclass(errors.UsageError, ValueError)


# -- real calls through each transport ----------------------------------------------------------------


@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
def test_transport_errors_are_caught_by_either_family(sync_transports, kind, code) -> None:
    jobs = JobServiceClient(sync_transports[kind])
    request = types.GetBatchPredictionJobRequest(name=job_name(f"err-{code.name}"))
    with pytest.raises(official_class(code)) as caught:
        jobs.get_batch_prediction_job(request, retry=None)
    err = caught.value
    assert type(err) is errors.error_class(code) and err.code == code
    assert str(err) == f"{code.name} from JobService.GetBatchPredictionJob on {request.name}: {err.message}"


def test_a_missing_job_is_caught_as_not_found_by_either_family(fake) -> None:
    name = f"{fake.parent}/batchPredictionJobs/404"
    try:
        BatchPredictionJob(name)
    except gexc.NotFound as e:
        caught: BaseException = e
    assert isinstance(caught, errors.NotFound) and caught.resource == name
    with pytest.raises(errors.NotFound):
        BatchPredictionJob(name)


def test_error_info_crosses_the_wire(fake) -> None:
    job = submit()
    fake.inject("GetBatchPredictionJob", errors.PermissionDenied("not yours", details=[ERROR_INFO]))
    with pytest.raises(gexc.PermissionDenied) as caught:
        BatchPredictionJob(job.resource_name)
    err = caught.value
    assert (err.reason, err.domain, err.metadata) == (
        "QUOTA",
        "aiplatform.googleapis.com",
        {"region": "us-central1"},
    )
    assert err.code == errors.Code.PERMISSION_DENIED and err.http_status == 403 == gexc.PermissionDenied.code


# -- failed jobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "raises"),
    [
        (S.JOB_STATE_FAILED, JobFailed),
        (S.JOB_STATE_CANCELLED, JobCancelled),
        (S.JOB_STATE_EXPIRED, JobExpired),
    ],
)
def test_a_job_that_did_not_succeed_is_a_runtime_error(fake, state, raises) -> None:
    job = submit()
    fake.finish(job.resource_name, state, error=(errors.Code.INTERNAL, "disk full"))
    try:
        job.wait()
    except RuntimeError as e:
        caught: BaseException = e
    assert type(caught) is raises and isinstance(caught, JobFailed) and caught.job is job
    assert f"ended {S.Name(state)}: INTERNAL: disk full" in str(caught)
    with pytest.raises(JobFailed):
        job.wait()


def test_a_wait_that_runs_out_is_a_timeout_not_a_runtime_error(fake) -> None:
    job = submit()
    with pytest.raises(WaitTimeout) as caught:
        job.wait(timeout=0.05)
    assert isinstance(caught.value, TimeoutError) and not isinstance(caught.value, RuntimeError)


# -- pickling -------------------------------------------------------------------------------------------

details = st.lists(
    st.one_of(
        st.just(ERROR_INFO),
        st.builds(
            lambda s: {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{s}s"},
            st.integers(0, 99),
        ),
    ),
    max_size=2,
)


@given(
    code=st.sampled_from(CODES),
    message=st.text(max_size=40),
    rpc=st.sampled_from(["", "JobService.GetBatchPredictionJob"]),
    resource=st.text(max_size=40),
    details=details,
)
def test_errors_pickle_and_copy(code, message, rpc, resource, details) -> None:
    err = errors.from_status(code, message, details, rpc=rpc, resource=resource)
    for back in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(back) is type(err) and isinstance(back, official_class(code))
        assert (back.code, back.message, back.rpc, back.resource, back.details, str(back)) == (
            err.code,
            err.message,
            err.rpc,
            err.resource,
            err.details,
            str(err),
        )


def test_errors_cross_processes_with_or_without_api_core() -> None:
    sent = errors.Unreachable.of(errors.Unavailable("refused", rpc="JobService.GetBatchPredictionJob"), "h:1")
    out = run(
        f"""
        import pickle, sys
        data = {pickle.dumps(sent)!r}
        err = pickle.loads(data)
        from bpj import errors
        assert type(err) is errors.Unreachable and "nothing accepts connections at h:1" in str(err)
        assert "google.api_core" not in sys.modules
        from google.api_core import exceptions as gexc
        assert isinstance(pickle.loads(data), gexc.ServiceUnavailable)
        sys.stdout.write(pickle.dumps(errors.from_status(6, "twice", rpc="JobService.CreateBatchPredictionJob")).hex())
        """
    )
    back = pickle.loads(bytes.fromhex(out))
    assert isinstance(back, gexc.AlreadyExists) and isinstance(back, errors.AlreadyExists)
    assert str(back) == "ALREADY_EXISTS from JobService.CreateBatchPredictionJob: twice"
