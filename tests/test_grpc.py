"""The gRPC transport and server against real servers on 127.0.0.1."""

from __future__ import annotations

import gc
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from bpj import errors, types
from bpj._gen.services import big_query_read as bq
from bpj._gen.services import job_service as js
from bpj.local.servers import tls
from bpj.local.servers.serve import grpc_handler, serve_grpc
from bpj.transport.endpoints import parse_endpoint
from bpj.transport.grpc import GrpcTransport
from bpj.transport.memory import InMemoryTransport

JOBS = "projects/p/locations/us-central1/batchPredictionJobs"
STREAMS = "projects/p/locations/us/sessions/s/streams"
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.500s"}
ERROR_INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "RATE_LIMIT_EXCEEDED",
    "domain": "aiplatform.googleapis.com",
    "metadata": {"quota": "jobs"},
}
ERROR_CODES = [c for c in errors.Code if c != errors.Code.OK]


class Jobs(js.JobServiceServicer):
    """Answers by the last segment of the job name: ``raise-CODE``, ``abort-CODE``, ``retry``, ``slow``,
    ``wrong-type``; anything else is a job."""

    def __init__(self) -> None:
        self.metadata: dict[str, dict[str, str]] = {}

    def GetBatchPredictionJob(self, request, context):
        self.metadata[request.name] = dict(context.invocation_metadata())
        what = request.name.rsplit("/", 1)[-1]
        if what.startswith("raise-"):
            code = errors.Code[what.removeprefix("raise-")]
            raise errors.error_class(code)(f"{code.name} for ünïcode {request.name}")
        if what.startswith("abort-"):
            context.abort(getattr(grpc.StatusCode, what.removeprefix("abort-")), "aborted by the servicer")
        if what.startswith("code-abort-"):  # bpj's Code, as the in-memory and REST contexts take
            context.abort(errors.Code[what.removeprefix("code-abort-")], "aborted with a bpj code")
        if what.startswith("set-code-"):
            context.set_code(errors.Code[what.removeprefix("set-code-")])
            context.set_details("set, not raised")
            return types.BatchPredictionJob(name=request.name)
        if what == "retry":
            raise errors.ResourceExhausted("slow down", details=[RETRY_INFO, ERROR_INFO])
        if what == "slow":
            while context.is_active():
                time.sleep(0.01)
        if what == "wrong-type":
            return types.ListBatchPredictionJobsResponse()
        return types.BatchPredictionJob(
            name=request.name, display_name="a job", state=types.JobState.JOB_STATE_RUNNING
        )

    def ListBatchPredictionJobs(self, request, context):
        jobs = [types.BatchPredictionJob(name=f"{request.parent}/batchPredictionJobs/{i}") for i in range(3)]
        return types.ListBatchPredictionJobsResponse(batch_prediction_jobs=jobs, next_page_token="next")


class Read(bq.BigQueryReadServicer):
    """``stream-N`` sends N responses; ``fail-N`` sends N and raises DataLoss; ``endless-KEY`` sends until
    cancelled and records how it ended in ``ended[KEY]``."""

    def __init__(self) -> None:
        self.metadata: dict[str, dict[str, str]] = {}
        self.callbacks: dict[str, threading.Event] = {}
        self.ended: dict[str, dict[str, object]] = {}

    def ReadRows(self, request, context):
        self.metadata[request.read_stream] = dict(context.invocation_metadata())
        kind, _, arg = request.read_stream.rsplit("/", 1)[-1].partition("-")
        if kind == "endless":
            return self._endless(arg, context)
        n = int(arg)
        responses = (types.ReadRowsResponse(row_count=request.offset + i) for i in range(n))
        return responses if kind == "stream" else self._fail(responses)

    def _fail(self, responses):
        yield from responses
        raise errors.DataLoss("stream broke")

    def _endless(self, key, context):
        fired = self.callbacks[key] = threading.Event()
        context.add_callback(fired.set)
        sent = 0
        try:
            while True:
                yield types.ReadRowsResponse(row_count=sent)
                sent += 1
                time.sleep(0.005)
        finally:
            self.ended[key] = {"sent": sent, "active": context.is_active()}


@pytest.fixture(scope="module")
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture(scope="module")
def read() -> Read:
    return Read()


@pytest.fixture(scope="module")
def server(jobs, read):
    with serve_grpc(jobs, read) as s:
        yield s


@pytest.fixture
def transport(server):
    t = GrpcTransport(server.endpoint)
    yield t
    t.close()


def get(transport, what: str, **kw):
    return transport.unary(
        js.GET_BATCH_PREDICTION_JOB, types.GetBatchPredictionJobRequest(name=f"{JOBS}/{what}"), **kw
    )


def read_rows(transport, what: str, offset: int = 0, **kw):
    request = types.ReadRowsRequest(read_stream=f"{STREAMS}/{what}", offset=offset)
    return transport.server_stream(bq.READ_ROWS, request, **kw)


def wait_for(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# -- calls -------------------------------------------------------------------------------------------


def test_unary_call_returns_the_response(transport):
    job = get(transport, "1", timeout=5)
    assert type(job) is types.BatchPredictionJob
    assert (job.name, job.display_name, job.state) == (f"{JOBS}/1", "a job", types.JobState.JOB_STATE_RUNNING)


def test_routing_header_api_client_and_caller_metadata_arrive(transport, jobs):
    get(transport, "routed", metadata=[("x-trace", "abc")])
    md = jobs.metadata[f"{JOBS}/routed"]
    # url-encoded like google-api-core's routing header: slashes kept
    assert md["x-goog-request-params"] == f"name={JOBS}/routed"
    assert md["x-goog-api-client"].startswith("gl-python/")
    assert "bpj/" in md["x-goog-api-client"]
    assert md["user-agent"].startswith("bpj/")
    assert md["x-trace"] == "abc"


def test_caller_routing_header_wins(transport, jobs):
    get(transport, "own-routing", metadata=[("x-goog-request-params", "name=mine")])
    assert jobs.metadata[f"{JOBS}/own-routing"]["x-goog-request-params"] == "name=mine"


def test_routing_value_is_url_encoded(transport, jobs):
    get(transport, "a b&c=d")
    assert jobs.metadata[f"{JOBS}/a b&c=d"]["x-goog-request-params"] == f"name={JOBS}/a+b%26c%3Dd"


def test_server_stream_sends_every_response(transport, read):
    responses = list(read_rows(transport, "stream-5", offset=10, timeout=5))
    assert [r.row_count for r in responses] == [10, 11, 12, 13, 14]
    assert all(type(r) is types.ReadRowsResponse for r in responses)
    assert read.metadata[f"{STREAMS}/stream-5"]["x-goog-request-params"] == f"read_stream={STREAMS}/stream-5"


def test_empty_stream(transport):
    assert list(read_rows(transport, "stream-0")) == []


def test_calls_from_many_threads_share_the_channel(transport):
    def call(i: int) -> str:
        return get(transport, f"t{i}").name

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(call, range(200)))
    assert names == [f"{JOBS}/t{i}" for i in range(200)]
    assert len(transport._rpcs) == 1


# -- cancellation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "with", "break", "gc"])
def test_stopping_a_stream_early_cancels_the_server_side(transport, read, how):
    key = f"{how}-{time.monotonic_ns()}"
    stream = read_rows(transport, f"endless-{key}", timeout=30)
    if how == "close":
        assert next(stream).row_count == 0
        stream.close()
    elif how == "with":
        with stream:
            assert [next(stream).row_count for _ in range(3)] == [0, 1, 2]
    elif how == "break":
        for r in stream:
            if r.row_count == 2:
                break
        stream.close()
    else:
        next(stream)
        del stream
        gc.collect()
    assert wait_for(lambda: key in read.ended), "the servicer never stopped"
    assert read.callbacks[key].wait(5), "add_callback did not fire"
    assert read.ended[key]["active"] is False
    assert read.ended[key]["sent"] < 1000


def test_closed_stream_stops_iterating(transport):
    stream = read_rows(transport, "stream-5")
    next(stream)
    stream.close()
    assert list(stream) == []


def test_closing_the_transport_refuses_further_calls(server):
    t = GrpcTransport(server.endpoint)
    get(t, "1")
    t.close()
    with pytest.raises(errors.UsageError, match="closed"):
        get(t, "1")


# -- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
def test_raised_api_error_maps_to_its_class(transport, code):
    with pytest.raises(errors.ApiError) as info:
        get(transport, f"raise-{code.name}")
    err = info.value
    assert type(err) is errors.error_class(code)
    assert err.code == code
    assert err.message == f"{code.name} for ünïcode {JOBS}/raise-{code.name}"
    assert err.rpc == "JobService.GetBatchPredictionJob"
    assert err.resource == f"{JOBS}/raise-{code.name}"


@pytest.mark.parametrize("code", [errors.Code.NOT_FOUND, errors.Code.PERMISSION_DENIED, errors.Code.INTERNAL])
def test_context_abort_maps_to_its_class(transport, code):
    with pytest.raises(errors.error_class(code)) as info:
        get(transport, f"abort-{code.name}")
    assert info.value.message == "aborted by the servicer"
    assert info.value.rpc == "JobService.GetBatchPredictionJob"
    assert info.value.resource == f"{JOBS}/abort-{code.name}"


@pytest.mark.parametrize("code", [errors.Code.NOT_FOUND, errors.Code.FAILED_PRECONDITION])
def test_context_takes_bpj_codes(transport, code):
    with pytest.raises(errors.error_class(code)) as info:
        get(transport, f"code-abort-{code.name}")
    assert info.value.message == "aborted with a bpj code"
    with pytest.raises(errors.error_class(code)) as info:
        get(transport, f"set-code-{code.name}")
    assert info.value.message == "set, not raised"
    assert info.value.resource == f"{JOBS}/set-code-{code.name}"


def test_status_details_survive(transport):
    with pytest.raises(errors.ResourceExhausted) as info:
        get(transport, "retry")
    err = info.value
    assert err.retry_delay == 2.5
    assert err.details == [RETRY_INFO, ERROR_INFO]
    assert str(err) == f"RESOURCE_EXHAUSTED from JobService.GetBatchPredictionJob on {JOBS}/retry: slow down"


def test_errors_equal_the_in_memory_transports(transport, jobs):
    memory = InMemoryTransport(jobs)
    for what in ("raise-NOT_FOUND", "retry", "abort-ABORTED", "code-abort-OUT_OF_RANGE", "set-code-ABORTED"):
        with pytest.raises(errors.ApiError) as over_grpc:
            get(transport, what)
        with pytest.raises(errors.ApiError) as in_memory:
            get(memory, what)
        a, b = over_grpc.value, in_memory.value
        assert (type(a), a.message, a.rpc, a.resource, a.details) == (
            type(b),
            b.message,
            b.rpc,
            b.resource,
            b.details,
        )


def test_servicer_returning_the_wrong_message_gives_internal(transport):
    with pytest.raises(errors.Internal) as info:
        get(transport, "wrong-type")
    assert info.value.message == (
        "google.cloud.aiplatform.v1.JobService.GetBatchPredictionJob servicer returned a "
        "google.cloud.aiplatform.v1.ListBatchPredictionJobsResponse, not a google.cloud.aiplatform.v1.BatchPredictionJob"
    )
    assert info.value.rpc == "JobService.GetBatchPredictionJob"


def test_error_in_the_middle_of_a_stream(transport):
    stream = read_rows(transport, "fail-2")
    assert next(stream).row_count == 0
    assert next(stream).row_count == 1
    with pytest.raises(errors.DataLoss) as info:
        next(stream)
    assert info.value.message == "stream broke"
    assert info.value.rpc == "BigQueryRead.ReadRows"
    assert info.value.resource == f"{STREAMS}/fail-2"
    assert list(stream) == []


def test_unimplemented_method(transport):
    request = types.CancelBatchPredictionJobRequest(name=f"{JOBS}/1")
    with pytest.raises(errors.Unimplemented, match="CancelBatchPredictionJob is not implemented"):
        transport.unary(js.CANCEL_BATCH_PREDICTION_JOB, request)


def test_service_not_served(server):
    with (
        serve_grpc(Jobs()) as only_jobs,
        GrpcTransport(only_jobs.endpoint) as t,
        pytest.raises(errors.Unimplemented),
    ):
        list(read_rows(t, "stream-1"))


def test_deadline_gives_deadline_exceeded(transport):
    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded) as info:
        get(transport, "slow", timeout=0.2)
    assert time.monotonic() - start < 2
    assert info.value.resource == f"{JOBS}/slow"


def test_deadline_on_a_stream(transport):
    with pytest.raises(errors.DeadlineExceeded):
        for _ in read_rows(transport, f"endless-deadline-{time.monotonic_ns()}", timeout=0.2):
            pass


def test_closed_port_gives_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with GrpcTransport(f"127.0.0.1:{port}") as t, pytest.raises(errors.Unavailable) as info:
        get(t, "1", timeout=5)
    assert info.value.rpc == "JobService.GetBatchPredictionJob"
    # Never reached: Unreachable, which retries give a short grace only (RetryPolicy.unreachable_deadline).
    assert type(info.value) is errors.Unreachable
    assert f"nothing accepts connections at 127.0.0.1:{port}" in info.value.message


@pytest.mark.parametrize("first", ["1", "raise-NOT_FOUND", "raise-UNAVAILABLE"])
def test_stopped_server_gives_unavailable(first):
    # Any answer of the server, an error too, means the endpoint was reached.
    server = serve_grpc(Jobs())
    t = GrpcTransport(server.endpoint)
    try:
        get(t, first)
    except errors.ApiError as e:
        assert type(e) is errors.error_class(errors.Code[first.removeprefix("raise-")])
    server.stop()
    with pytest.raises(errors.Unavailable) as info:
        get(t, "1", timeout=5)
    assert type(info.value) is errors.Unavailable  # it answered once: a restart, retried in full
    t.close()


# -- TLS and credentials -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert():
    return tls.self_signed_cert()


@pytest.fixture(scope="module")
def tls_server(cert, jobs, read):
    with serve_grpc(jobs, read, tls=cert) as s:
        yield s


def test_tls_with_a_self_signed_certificate(tls_server, cert):
    with GrpcTransport(f"localhost:{tls_server.port}", tls=True, root_certificates=cert[1]) as t:
        assert t.tls
        assert get(t, "over-tls").name == f"{JOBS}/over-tls"
        assert [r.row_count for r in read_rows(t, "stream-3")] == [0, 1, 2]
    # the address is in the certificate too
    with GrpcTransport(tls_server.endpoint, root_certificates=cert[1]) as t:
        assert get(t, "by-address").name == f"{JOBS}/by-address"


def test_openssl_certificate_works_too(jobs):
    if tls.shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    key, cert = tls._with_openssl(["localhost", "127.0.0.1"], 1)
    with (
        serve_grpc(jobs, tls=(key, cert)) as s,
        GrpcTransport(f"localhost:{s.port}", root_certificates=cert) as t,
    ):
        assert get(t, "openssl").name == f"{JOBS}/openssl"


def test_tls_without_the_certificate_fails(tls_server):
    other_key, other_cert = tls.self_signed_cert()
    with (
        GrpcTransport(f"localhost:{tls_server.port}", root_certificates=other_cert) as t,
        pytest.raises(errors.Unavailable),
    ):
        get(t, "1", timeout=5)


def test_plaintext_client_to_tls_server_fails(tls_server):
    with GrpcTransport(tls_server.endpoint) as t, pytest.raises(errors.Unavailable):
        get(t, "1", timeout=5)


def test_credentials_are_resolved_lazily_and_sent_over_tls(tls_server, cert, jobs):
    from google.oauth2.credentials import Credentials

    resolved = []

    def credentials():
        resolved.append(1)
        return Credentials(token="t0ken")

    t = GrpcTransport(f"localhost:{tls_server.port}", credentials=credentials, root_certificates=cert[1])
    assert resolved == []
    get(t, "authed")
    get(t, "authed-again")
    t.close()
    assert resolved == [1]
    assert jobs.metadata[f"{JOBS}/authed"]["authorization"] == "Bearer t0ken"


def test_credentials_are_not_sent_in_plaintext(server, jobs):
    from google.oauth2.credentials import Credentials

    with GrpcTransport(server.endpoint, credentials=Credentials(token="secret")) as t:
        get(t, "plain-authed")
    assert "authorization" not in jobs.metadata[f"{JOBS}/plain-authed"]


# -- generated clients and plumbing -----------------------------------------------------------------------------


def test_generated_clients_end_to_end(server):
    with js.JobServiceClient(GrpcTransport(server.endpoint)) as client:
        job = client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=f"{JOBS}/42"))
        assert job.name == f"{JOBS}/42"
        page = client.list_batch_prediction_jobs(
            types.ListBatchPredictionJobsRequest(parent="projects/p/locations/us-central1")
        )
        assert [j.name for j in page.batch_prediction_jobs] == [f"{JOBS}/{i}" for i in range(3)]
        assert page.next_page_token == "next"
        with pytest.raises(errors.NotFound) as info:
            client.get_batch_prediction_job(
                types.GetBatchPredictionJobRequest(name=f"{JOBS}/raise-NOT_FOUND")
            )
        assert info.value.resource == f"{JOBS}/raise-NOT_FOUND"
    reader = bq.BigQueryReadClient(GrpcTransport(server.endpoint))
    rows = reader.read_rows(types.ReadRowsRequest(read_stream=f"{STREAMS}/stream-4", offset=1))
    assert [r.row_count for r in rows] == [1, 2, 3, 4]
    reader.close()


def test_from_channel(server):
    channel = grpc.insecure_channel(server.endpoint)
    with GrpcTransport.from_channel(channel, target=server.endpoint) as t:
        assert get(t, "via-channel").name == f"{JOBS}/via-channel"


def test_grpc_handler_on_a_server_of_your_own(jobs, read):
    server = grpc.server(ThreadPoolExecutor(4), handlers=[grpc_handler(jobs, read)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with GrpcTransport(f"127.0.0.1:{port}") as t:
            assert get(t, "own-server").name == f"{JOBS}/own-server"
            assert len(list(read_rows(t, "stream-2"))) == 2
            with pytest.raises(errors.NotFound):
                get(t, "raise-NOT_FOUND")
    finally:
        server.stop(None).wait()


def test_serve_refuses_a_port_in_use(server):
    with pytest.raises(errors.UsageError, match="cannot listen"):
        serve_grpc(Jobs(), port=server.port)


def test_serve_needs_servicers():
    with pytest.raises(errors.UsageError):
        serve_grpc()
    with pytest.raises(errors.UsageError, match="not a bpj servicer"):
        grpc_handler(object())


@pytest.mark.parametrize(
    ("endpoint", "target", "secure"),
    [
        ("127.0.0.1:8500", "127.0.0.1:8500", False),
        ("127.3.4.5:8500", "127.3.4.5:8500", False),
        ("localhost:8500", "localhost:8500", False),
        ("[::1]:8500", "[::1]:8500", False),
        ("grpc://localhost:8500", "localhost:8500", False),
        ("https://localhost:8500", "localhost:8500", True),
        ("grpcs://127.0.0.1:8500", "127.0.0.1:8500", True),
        ("us-central1-aiplatform.googleapis.com", "us-central1-aiplatform.googleapis.com:443", True),
        ("https://bigquerystorage.googleapis.com/", "bigquerystorage.googleapis.com:443", True),
        ("10.0.0.7:8500", "10.0.0.7:8500", True),
        ("[2001:db8::1]", "[2001:db8::1]:443", True),
        ("http://10.0.0.7:8500", "10.0.0.7:8500", False),
    ],
)
def test_endpoints_and_the_tls_rule(endpoint, target, secure):
    t = GrpcTransport(endpoint)
    assert (t.target, t.tls) == (target, secure)


def test_tls_choices():
    assert GrpcTransport("localhost:1", tls=True).tls
    assert GrpcTransport("localhost:1", root_certificates=b"pem").tls
    assert not GrpcTransport("example.com:1", tls=False).tls
    assert parse_endpoint("HTTPS://Example.com:8443/v1").port == 8443


@pytest.mark.parametrize(
    "endpoint", ["localhost", "127.0.0.1", "ftp://example.com", "host:port", "::1:8500", "host:70000", ""]
)
def test_bad_endpoints(endpoint):
    with pytest.raises(errors.UsageError):
        GrpcTransport(endpoint)


def test_contradicting_tls_arguments():
    with pytest.raises(errors.UsageError):
        GrpcTransport("https://example.com", tls=False)
    with pytest.raises(errors.UsageError):
        GrpcTransport("localhost:1", tls=False, root_certificates=b"pem")


@pytest.mark.parametrize("size", [10, 5_000, 50_000])
def test_a_long_error_message_still_reaches_the_client_as_its_own_code(size):
    """gRPC clients refuse trailers over 8 KiB: a servicer's long message (a 2.5 KB URI quoted twice, say)
    must not turn its INVALID_ARGUMENT into RESOURCE_EXHAUSTED."""
    text = "é" * size

    class Refusing(js.JobServiceServicer):
        def GetBatchPredictionJob(self, request, context):
            raise errors.InvalidArgument(f"bad name {text}: {text}")

    with serve_grpc(Refusing()) as server:
        client = js.JobServiceClient(GrpcTransport(server.endpoint))
        with pytest.raises(errors.InvalidArgument) as caught:
            client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name="x"), retry=None)
    assert caught.value.message.startswith(f"bad name {text[:50]}")
    assert (size < 1000) == ("more characters" not in caught.value.message)
