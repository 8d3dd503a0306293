"""The REST transport against a real gateway on 127.0.0.1: round trips, query and body fields, streams,
errors, deadlines and connection failures."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from wsgiref.util import setup_testing_defaults

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from bpj import errors, types
from bpj._gen.services import big_query_read, job_service
from bpj._gen.services.big_query_read import BigQueryReadServicer
from bpj._gen.services.job_service import JobServiceServicer
from bpj.local.servers.gateway import RestGateway, serve_rest
from bpj.transport.rest import RestTransport, base_url, json_array

PARENT = "projects/p/locations/us-central1"


def job(job_id: str) -> str:
    return f"{PARENT}/batchPredictionJobs/{job_id}"


def stream(stream_id: str) -> str:
    return f"{PARENT}/sessions/s/streams/{stream_id}"


class Jobs(JobServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], float | None]] = []

    def GetBatchPredictionJob(self, request, context):
        self.seen.append((dict(context.invocation_metadata()), context.time_remaining()))
        job_id = request.name.rsplit("/", 1)[-1]
        if job_id == "missing":
            raise errors.NotFound("job missing does not exist")
        if job_id == "bad":
            context.abort(errors.Code.INVALID_ARGUMENT, "bad job id")
        if job_id == "later":
            context.set_code(errors.Code.FAILED_PRECONDITION)
            context.set_details("not yet")
            return types.BatchPredictionJob()
        if job_id == "quota":
            hint = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"}
            raise errors.ResourceExhausted("slow down", details=[hint])
        if job_id == "boom":
            raise RuntimeError("the servicer broke")
        if job_id == "wrong-type":
            return types.Empty()
        if job_id.startswith("slow"):
            time.sleep(0.5)
        return types.BatchPredictionJob(
            name=request.name,
            display_name=f"job {job_id}",
            state=types.JobState.JOB_STATE_SUCCEEDED,
            labels={"team": "bpj"},
        )

    def ListBatchPredictionJobs(self, request, context):
        echo = types.BatchPredictionJob(display_name=request.filter, model=",".join(request.read_mask.paths))
        return types.ListBatchPredictionJobsResponse(
            batch_prediction_jobs=[echo], next_page_token=f"{request.page_size}|{request.page_token}"
        )

    def CreateBatchPredictionJob(self, request, context):
        created = types.BatchPredictionJob()
        created.CopyFrom(request.batch_prediction_job)
        created.name = f"{request.parent}/batchPredictionJobs/1"
        return created

    def CancelBatchPredictionJob(self, request, context):
        if not request.name.endswith("/running"):
            raise errors.FailedPrecondition(f"{request.name} is not running")
        return types.Empty()


class Reads(BigQueryReadServicer):
    def __init__(self) -> None:
        self.finished = threading.Event()
        self.go_on = threading.Event()

    def ReadRows(self, request, context):
        stream_id = request.read_stream.rsplit("/", 1)[-1]
        if stream_id == "missing":
            raise errors.NotFound("no such stream")
        return self._rows(stream_id, request.offset, context)

    def _rows(self, stream_id, offset, context):
        kind, _, count = stream_id.rpartition("-")
        try:
            for i in range(offset, int(count)):
                if kind == "wait" and i == 1:
                    self.go_on.wait(10)
                if kind == "slow":
                    time.sleep(0.1)
                yield types.ReadRowsResponse(
                    row_count=i + 1,
                    arrow_record_batch=types.ArrowRecordBatch(
                        serialized_record_batch=bytes([i % 256, 0, 255])
                    ),
                )
            if kind == "broken":
                raise errors.Unavailable(f"stream {stream_id} reset")
            if kind == "aborted":
                context.abort(errors.Code.ABORTED, "session expired")
        finally:
            self.finished.set()

    def SplitReadStream(self, request, context):
        return types.SplitReadStreamResponse(
            primary_stream=types.ReadStream(name=f"{request.name}/{request.fraction}")
        )


@pytest.fixture(scope="module")
def servicers():
    return Jobs(), Reads()


@pytest.fixture(scope="module")
def server(servicers):
    with serve_rest(*servicers) as running:
        yield running


@pytest.fixture(scope="module")
def transport(server):
    with RestTransport(server.url) as t:
        yield t


def get(transport, name, **kwargs):
    request = types.GetBatchPredictionJobRequest(name=name)
    return transport.unary(job_service.GET_BATCH_PREDICTION_JOB, request, **kwargs)


def read(transport, stream_id, **kwargs):
    request = types.ReadRowsRequest(read_stream=stream(stream_id), offset=kwargs.pop("offset", 0))
    return transport.server_stream(big_query_read.READ_ROWS, request, **kwargs)


# -- unary ------------------------------------------------------------------------------------------------


def test_unary_round_trip(transport):
    got = get(transport, job("j1"))
    assert isinstance(got, types.BatchPredictionJob)
    assert got == types.BatchPredictionJob(
        name=job("j1"),
        display_name="job j1",
        state=types.JobState.JOB_STATE_SUCCEEDED,
        labels={"team": "bpj"},
    )


def test_metadata_routing_headers_and_deadline_reach_the_servicer(transport, servicers):
    get(transport, job("j2"), metadata=[("x-goog-user-project", "billing")], timeout=30)
    metadata, remaining = servicers[0].seen[-1]
    assert metadata["x-goog-user-project"] == "billing"
    assert metadata["x-goog-request-params"] == f"name={job('j2')}"
    assert metadata["x-goog-api-client"].startswith("gl-python/")
    assert metadata["user-agent"].startswith("bpj/")
    assert remaining is not None and 25 < remaining <= 30


def test_query_string_fields(transport):
    request = types.ListBatchPredictionJobsRequest(
        parent=PARENT, filter='display_name="a & b = c/ü?#"', page_size=7, page_token="tok en+1"
    )
    request.read_mask.paths.extend(["display_name", "state"])
    page = transport.unary(job_service.LIST_BATCH_PREDICTION_JOBS, request)
    echo = page.batch_prediction_jobs[0]
    assert echo.display_name == 'display_name="a & b = c/ü?#"'
    assert echo.model == "display_name,state"
    assert page.next_page_token == "7|tok en+1"


def test_body_field(transport):
    job_in = types.BatchPredictionJob(
        display_name="nightly",
        model="projects/p/locations/l/models/m@2",
        labels={"a": "b", "c": ""},
        state=types.JobState.JOB_STATE_PENDING,
    )
    job_in.input_config.instances_format = "jsonl"
    job_in.input_config.gcs_source.uris.extend(["gs://b/x.jsonl", "gs://b/y.jsonl"])
    request = types.CreateBatchPredictionJobRequest(parent=PARENT, batch_prediction_job=job_in)
    created = transport.unary(job_service.CREATE_BATCH_PREDICTION_JOB, request)
    expected = types.BatchPredictionJob()
    expected.CopyFrom(job_in)
    expected.name = f"{PARENT}/batchPredictionJobs/1"
    assert created == expected


def test_empty_response_and_body_star(transport):
    cancel = job_service.CANCEL_BATCH_PREDICTION_JOB
    assert (
        transport.unary(cancel, types.CancelBatchPredictionJobRequest(name=job("running"))) == types.Empty()
    )


def test_many_threads_share_one_transport(transport):
    def call(i):
        return get(transport, job(f"t{i}")).name

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(call, range(64)))
    assert names == [job(f"t{i}") for i in range(64)]


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "cls", "message"),
    [
        ("missing", errors.NotFound, "job missing does not exist"),
        ("bad", errors.InvalidArgument, "bad job id"),
        ("later", errors.FailedPrecondition, "not yet"),
        ("boom", errors.Internal, "the servicer broke"),
    ],
)
def test_server_errors_map_to_their_class_with_the_servers_message(transport, job_id, cls, message):
    with pytest.raises(errors.ApiError) as info:
        get(transport, job(job_id))
    err = info.value
    assert type(err) is cls
    assert (err.message, err.rpc, err.resource) == (message, "JobService.GetBatchPredictionJob", job(job_id))
    assert str(err) == f"{cls.code.name} from JobService.GetBatchPredictionJob on {job(job_id)}: {message}"


def test_error_details_survive(transport):
    with pytest.raises(errors.ResourceExhausted) as info:
        get(transport, job("quota"))
    assert info.value.retry_delay == pytest.approx(1.5)


def test_wrong_response_type_is_internal(transport):
    with pytest.raises(errors.Internal, match="not a google.cloud.aiplatform.v1.BatchPredictionJob"):
        get(transport, job("wrong-type"))


def test_unimplemented(transport):
    with pytest.raises(errors.Unimplemented, match="DeleteBatchPredictionJob is not implemented"):
        transport.unary(
            job_service.DELETE_BATCH_PREDICTION_JOB, types.DeleteBatchPredictionJobRequest(name=job("x"))
        )


def test_bad_request_fails_before_the_network():
    with RestTransport("http://127.0.0.1:9") as t, pytest.raises(errors.UsageError, match="name must match"):
        get(t, "j1")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_unavailable_naming_the_endpoint():
    port = _closed_port()
    with RestTransport(f"127.0.0.1:{port}") as t, pytest.raises(errors.Unavailable) as info:
        get(t, job("j1"))
    assert f"http://127.0.0.1:{port}" in info.value.message
    assert info.value.rpc == "JobService.GetBatchPredictionJob"
    assert type(info.value) is errors.Unreachable  # never reached


def test_a_stopped_server_is_unavailable(servicers):
    running = serve_rest(*servicers)
    with RestTransport(running.url) as t:
        assert get(t, job("j1")).name == job("j1")
        running.stop()
        with pytest.raises(errors.Unavailable) as info:
            get(t, job("j1"))
        assert type(info.value) is errors.Unavailable  # it answered once: a restart, retried in full


def test_a_client_resetting_its_connection_is_not_reported(servicers, capfd):
    with serve_rest(*servicers) as running:
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        for request in (b"", b"GET /v1/proj"):  # reset before a request line, and in the middle of one
            sock = socket.create_connection((host, int(port)))
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # linger 0: RST, not FIN
        with RestTransport(running.url) as t:  # the server still serves, and the resets are behind it
            assert get(t, job("after")).name == job("after")
    assert "Exception occurred" not in capfd.readouterr().err


def test_raw_http_errors_are_google_status_json(server):
    r = requests.get(f"{server.url}/v1/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"
    r = requests.post(f"{server.url}/v1/{PARENT}/batchPredictionJobs", data=b"{not json")
    assert (r.status_code, r.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    r = requests.get(f"{server.url}/v1/{PARENT}/batchPredictionJobs", params={"pageSize": "many"})
    assert (r.status_code, r.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert "pageSize" in r.json()["error"]["message"]


def test_integer_enums_on_request(server):
    r = requests.get(f"{server.url}/v1/{job('j1')}", params={"$alt": "json;enum-encoding=int"})
    assert r.json()["state"] == int(types.JobState.JOB_STATE_SUCCEEDED)


# -- deadlines ----------------------------------------------------------------------------------------------


def test_client_deadline(transport):
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded) as info:
        get(transport, job("slow-1"), timeout=0.1)
    assert time.monotonic() - started < 0.4
    assert (info.value.rpc, info.value.resource) == ("JobService.GetBatchPredictionJob", job("slow-1"))


def test_server_honours_x_server_timeout(server):
    r = requests.get(f"{server.url}/v1/{job('slow-2')}", headers={"X-Server-Timeout": "0.05"})
    assert (r.status_code, r.json()["error"]["status"]) == (504, "DEADLINE_EXCEEDED")


def test_stream_deadline(transport):
    with pytest.raises(errors.DeadlineExceeded):
        list(read(transport, "slow-20", timeout=0.35))


def test_timeout_default(server):
    with RestTransport(server.url, timeout_default=0.1) as t, pytest.raises(errors.DeadlineExceeded):
        get(t, job("slow-3"))


# -- server streaming -----------------------------------------------------------------------------------------


def test_stream_yields_every_message_in_order(transport):
    responses = list(read(transport, "rows-5"))
    assert [r.row_count for r in responses] == [1, 2, 3, 4, 5]
    assert responses[4].arrow_record_batch.serialized_record_batch == bytes([4, 0, 255])
    assert [r.row_count for r in read(transport, "rows-5", offset=3)] == [4, 5]
    assert list(read(transport, "rows-0")) == []


def test_stream_messages_arrive_as_they_are_sent(transport, servicers):
    reads = servicers[1]
    reads.go_on.clear()
    responses = read(transport, "wait-3")
    first = next(responses)  # the servicer is blocked before its second message
    assert first.row_count == 1
    reads.go_on.set()
    assert [r.row_count for r in responses] == [2, 3]


def test_breaking_early_ends_the_server_side(transport, servicers):
    reads = servicers[1]
    reads.finished.clear()
    responses = read(transport, "rows-1000000")
    assert [r.row_count for r in itertools.islice(responses, 3)] == [1, 2, 3]
    responses.close()
    assert reads.finished.wait(10)
    assert get(transport, job("after")).name == job("after")


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [("broken", errors.Unavailable, "stream broken-3 reset"), ("aborted", errors.Aborted, "session expired")],
)
def test_error_mid_stream(transport, kind, cls, message):
    got = []
    with pytest.raises(errors.ApiError) as info:
        for r in read(transport, f"{kind}-3"):
            got.append(r.row_count)
    assert got == [1, 2, 3]
    assert type(info.value) is cls
    assert (info.value.message, info.value.rpc) == (message, "BigQueryRead.ReadRows")
    assert info.value.resource == stream(f"{kind}-3")


def test_error_before_the_first_message_has_its_http_status(transport, server):
    with pytest.raises(errors.NotFound, match="no such stream"):
        list(read(transport, "missing"))
    r = requests.get(f"{server.url}/v1/{stream('missing')}")
    assert r.status_code == 404


def test_same_template_methods_are_told_apart_by_their_fields(transport):
    request = types.SplitReadStreamRequest(name=stream("rows-4"), fraction=0.5)
    split = transport.unary(big_query_read.SPLIT_READ_STREAM, request)
    assert split.primary_stream.name == f"{stream('rows-4')}/0.5"


# -- pieces ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("127.8.9.1:80", "http://127.8.9.1:80"),
        ("localhost:1", "http://localhost:1"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("us-central1-aiplatform.googleapis.com", "https://us-central1-aiplatform.googleapis.com"),
        ("10.0.0.1:443", "https://10.0.0.1:443"),
        ("http://example.com:8080/", "http://example.com:8080"),
    ],
)
def test_endpoints(endpoint, url):
    assert base_url(endpoint) == url


def test_bad_endpoint():
    with pytest.raises(errors.UsageError, match="http:// or https://"):
        RestTransport("ftp://example.com")


@given(
    elements=st.lists(
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
        max_size=5,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=12),
    indent=st.sampled_from([None, 1]),
)
def test_json_array_is_read_incrementally_whatever_the_chunking(elements, cuts, indent):
    data = json.dumps(elements, indent=indent, ensure_ascii=False).encode()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(json_array(chunks)) == elements


def test_json_array_cut_short_is_unavailable():
    with pytest.raises(errors.Unavailable):
        list(json_array([b'[{"a": 1}, {"b"']))


def test_gateway_is_a_plain_wsgi_app(servicers):
    app = RestGateway(*servicers)
    environ: dict = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/v1/{job('w s')}", "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status == ["200 OK"]
    assert json.loads(body)["name"] == job("w s")
