"""One behaviour suite, three transports: a real gRPC server, a real HTTP server (both on 127.0.0.1) and the
in-memory transport, all serving the same servicers. What a caller sees must not depend on the transport."""

from __future__ import annotations

import dataclasses
import itertools
import uuid

import pytest

from bpj import errors, types
from bpj._gen.services.big_query_read import READ_ROWS, BigQueryReadClient
from bpj._gen.services.job_service import GET_BATCH_PREDICTION_JOB, JobServiceClient
from bpj.transport.base import RetryPolicy
from tests.conftest import TRANSPORTS
from tests.servicers import PARENT, job_name, stream_name

FAST_RETRY = RetryPolicy(
    initial=0.01, maximum=0.02, multiplier=2.0, deadline=5.0, codes=frozenset({"UNAVAILABLE"})
)
CODES = [c for c in errors.Code if c != errors.Code.OK]


@pytest.fixture
def jobs(sync_transports, kind):
    return JobServiceClient(sync_transports[kind])


@pytest.fixture
def reads(sync_transports, kind):
    return BigQueryReadClient(sync_transports[kind])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_unary_round_trip(jobs):
    name = job_name(unique("plain"))
    job = jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))
    assert isinstance(job, types.BatchPredictionJob)
    assert (job.name, job.state, dict(job.labels)) == (
        name,
        types.JobState.JOB_STATE_RUNNING,
        {"team": "bpj"},
    )


def test_routing_header_reaches_the_servicer(jobs, servicers):
    name = job_name(unique("routed"))
    jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name), metadata=[("x-trace", "t1")])
    seen = [dict(md) for md in servicers[0].metadata if dict(md).get("x-trace") == "t1"]
    assert any(md.get("x-goog-request-params") == f"name={name}" for md in seen)


def test_body_and_query_fields_arrive(jobs):
    created = jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(
            parent=PARENT,
            batch_prediction_job=types.BatchPredictionJob(display_name="nightly", labels={"a": "b"}),
        )
    )
    assert (created.name, created.display_name, dict(created.labels)) == (
        f"{PARENT}/batchPredictionJobs/123",
        "nightly",
        {"a": "b"},
    )
    page = jobs.list_batch_prediction_jobs(
        types.ListBatchPredictionJobsRequest(parent=PARENT, filter='state="JOB_STATE_RUNNING"', page_size=2)
    )
    assert [j.name.rsplit("/", 1)[-1] for j in page.batch_prediction_jobs] == ["0", "1"]
    assert page.batch_prediction_jobs[0].display_name == 'state="JOB_STATE_RUNNING"'
    assert page.next_page_token == "2"


@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
def test_server_error_maps_to_the_same_exception(jobs, code):
    name = job_name(f"err-{code.name}")
    with pytest.raises(errors.ApiError) as info:
        jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name), retry=None)
    err = info.value
    assert type(err) is errors.error_class(code)
    assert err.code == code
    assert err.message == f"{code.name.lower()} for err-{code.name}"
    assert err.rpc == "JobService.GetBatchPredictionJob"
    assert err.resource == name
    assert str(err) == f"{code.name} from JobService.GetBatchPredictionJob on {name}: {err.message}"


@pytest.mark.parametrize("code", ["NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"])
def test_context_abort_maps_like_a_raised_error(jobs, code):
    with pytest.raises(errors.error_class(errors.Code[code])) as info:
        jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name(f"abort-{code}")))
    assert info.value.message == f"aborted abort-{code}"


def test_retry_info_detail_survives(jobs):
    with pytest.raises(errors.ResourceExhausted) as info:
        jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("hint")), retry=None)
    assert info.value.retry_delay == pytest.approx(0.05)


def test_unimplemented_method(jobs):
    with pytest.raises(errors.Unimplemented):
        jobs.delete_batch_prediction_job(types.DeleteBatchPredictionJobRequest(name=job_name("x")))


def test_idempotent_call_is_retried_on_unavailable(jobs, servicers):
    name = job_name(unique("flaky-2"))
    job = jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name), retry=FAST_RETRY)
    assert job.name == name
    assert servicers[0].calls[name] == 3


def test_retry_gives_up_with_the_last_error(jobs, servicers):
    name = job_name(unique("flaky-1000"))
    policy = RetryPolicy(
        initial=0.01, maximum=0.01, multiplier=1.0, deadline=0.3, codes=frozenset({"UNAVAILABLE"})
    )
    with pytest.raises(errors.Unavailable):
        jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name), retry=policy)
    assert 2 <= servicers[0].calls[name] < 1000


def test_non_idempotent_call_is_never_retried_blindly(jobs, servicers):
    before = servicers[0].calls["create"]
    request = types.CreateBatchPredictionJobRequest(
        parent=PARENT, batch_prediction_job=types.BatchPredictionJob(display_name="unavailable")
    )
    with pytest.raises(errors.Unavailable):
        jobs.create_batch_prediction_job(request, retry=FAST_RETRY)
    assert servicers[0].calls["create"] == before + 1


def test_deadline(jobs):
    with pytest.raises(errors.DeadlineExceeded) as info:
        jobs.get_batch_prediction_job(
            types.GetBatchPredictionJobRequest(name=job_name("slow")), timeout=0.2, retry=None
        )
    assert info.value.rpc == "JobService.GetBatchPredictionJob"


def test_server_stream_yields_every_message_in_order(reads):
    responses = list(reads.read_rows(types.ReadRowsRequest(read_stream=stream_name("5"))))
    assert [r.row_count for r in responses] == [1, 2, 3, 4, 5]
    assert responses[3].arrow_record_batch.serialized_record_batch == bytes([3]) * 10


def test_server_stream_from_an_offset(reads):
    responses = list(reads.read_rows(types.ReadRowsRequest(read_stream=stream_name("5"), offset=3)))
    assert [r.row_count for r in responses] == [4, 5]


def test_error_mid_stream_after_the_messages_before_it(reads):
    got = []
    with pytest.raises(errors.Unavailable) as info:
        for r in reads.read_rows(types.ReadRowsRequest(read_stream=stream_name("broken-3"))):
            got.append(r.row_count)
    assert got == [1, 2, 3]
    assert info.value.message == "stream broken-3 reset"
    assert info.value.rpc == "BigQueryRead.ReadRows"


def wire(data: bytes) -> tuple[str, bytes]:
    assert type(data) is bytes
    return "wire", data


def test_a_method_variant_with_decode_gets_the_wire_form_of_each_response(reads):
    request = types.ReadRowsRequest(read_stream=stream_name("3"))
    variant = dataclasses.replace(READ_ROWS, decode=wire)
    got = list(reads.transport.server_stream(variant, request))
    assert [tag for tag, _ in got] == ["wire"] * 3
    assert [types.ReadRowsResponse.FromString(data) for _, data in got] == list(reads.read_rows(request))
    # The plain method on the same transport still returns messages (the variant is bound apart).
    assert [r.row_count for r in reads.read_rows(request)] == [1, 2, 3]


def test_a_unary_method_variant_with_decode_gets_the_wire_form(jobs):
    request = types.GetBatchPredictionJobRequest(name=job_name(unique("wire")))
    variant = dataclasses.replace(GET_BATCH_PREDICTION_JOB, decode=wire)
    tag, data = jobs.transport.unary(variant, request)
    assert tag == "wire"
    assert types.BatchPredictionJob.FromString(data) == jobs.get_batch_prediction_job(request)


def test_stopping_a_stream_early_ends_the_server_side(reads, servicers):
    finished = servicers[1].finished
    finished.clear()
    stream = reads.read_rows(types.ReadRowsRequest(read_stream=stream_name("100000")))
    first = list(itertools.islice(stream, 2))
    stream.close()
    assert [r.row_count for r in first] == [1, 2]
    assert finished.wait(10)


def test_same_error_everywhere(sync_transports):
    seen = set()
    for kind in TRANSPORTS:
        client = JobServiceClient(sync_transports[kind])
        with pytest.raises(errors.ApiError) as info:
            client.get_batch_prediction_job(
                types.GetBatchPredictionJobRequest(name=job_name("err-NOT_FOUND"))
            )
        e = info.value
        seen.add((type(e), e.code, e.message, e.rpc, e.resource, str(e)))
    assert len(seen) == 1


def test_request_from_another_pool_is_refused_before_the_network(sync_transports):
    from google.cloud.aiplatform_v1.types import GetBatchPredictionJobRequest as Official

    client = JobServiceClient(sync_transports["memory"])
    with pytest.raises(errors.UsageError, match="bpj.types"):
        client.get_batch_prediction_job(Official.pb()(name=job_name("x")))
