"""REST behind something that is not a Google front end: a proxy answering bare HTTP statuses (HTML or
empty bodies, no google.rpc.Status). The status alone decides the error, and 503 is retried for idempotent
methods only."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceClient
from bpj.transport.base import RetryPolicy
from bpj.transport.rest import RestTransport
from tests.servicers import PARENT, job_name

FAST = RetryPolicy(initial=0.01, maximum=0.02, multiplier=2.0, deadline=5.0, codes=frozenset({"UNAVAILABLE"}))


class Proxy(http.server.ThreadingHTTPServer):
    """Answers ``failures`` requests with ``status`` and an HTML page, then a job as proto3 JSON."""

    def __init__(self, status: int, failures: int) -> None:
        self.status, self.failures, self.requests = status, failures, []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Proxy

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.requests.append((self.command, self.path))
        if len(self.server.requests) <= self.server.failures:
            body = b"<html><body>upstream connect error</body></html>"
            self.send_response(self.server.status)
            self.send_header("content-type", "text/html")
        else:
            name = self.path.split("/v1/", 1)[1].split("?", 1)[0]
            body = json.dumps({"name": name, "state": "JOB_STATE_SUCCEEDED"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def proxy(request):
    status, failures = request.param
    p = Proxy(status, failures)
    yield p
    p.shutdown()
    p.server_close()


@pytest.mark.parametrize("proxy", [(503, 2)], indirect=True)
def test_bare_503_is_retried_for_an_idempotent_method(proxy):
    client = JobServiceClient(RestTransport(proxy.url))
    job = client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("7")), retry=FAST)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert len(proxy.requests) == 3


@pytest.mark.parametrize("proxy", [(503, 1)], indirect=True)
def test_bare_503_is_not_retried_for_create(proxy):
    client = JobServiceClient(RestTransport(proxy.url))
    request = types.CreateBatchPredictionJobRequest(
        parent=PARENT, batch_prediction_job=types.BatchPredictionJob()
    )
    with pytest.raises(errors.Unavailable) as info:
        client.create_batch_prediction_job(request, retry=FAST)
    assert len(proxy.requests) == 1
    assert info.value.rpc == "JobService.CreateBatchPredictionJob"
    assert info.value.resource == PARENT


@pytest.mark.parametrize(
    ("proxy", "cls"),
    [((404, 1), errors.NotFound), ((403, 1), errors.PermissionDenied), ((502, 1), errors.Unavailable)],
    indirect=["proxy"],
)
def test_bare_status_decides_the_error(proxy, cls):
    client = JobServiceClient(RestTransport(proxy.url))
    with pytest.raises(cls):
        client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("7")), retry=None)
