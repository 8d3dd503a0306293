"""The local stack's two REST servers (Vertex gateway, BigQuery REST) against hostile and broken requests.

Real servers on 127.0.0.1, raw bytes over sockets: every answer is a status line with a JSON error body in
the API's own format (google.rpc.Status for Vertex, BigQuery's error body for BigQuery), strangers (foreign
Host or Origin, no token) are refused, and the server keeps serving afterwards.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bpj import errors
from bpj.local.servers.guard import Guard
from bpj.local.servers.http_server import RestServer

TOKEN = "s3cret-t0ken"
MAX_BODY = 1 << 20
P = "projects/p/locations/us-central1"
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


@dataclass
class Gateway:
    kind: str  # "vertex" or "bigquery"
    server: RestServer
    ok_path: str  # a GET that answers 200
    post_path: str  # a POST that reads a JSON body

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    from bpj.local.bigquery.rest import serve_bigquery_rest
    from bpj.local.bigquery.store import TableStore
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.store import Store
    from bpj.local.vertex import Jobs, Models, Operations, Vertex

    root = tmp_path_factory.mktemp("hardening")
    store = Store(root / "vertex.sqlite3")
    vertex = Vertex(store, lambda name: None, lambda name: None)  # jobs are stored, never run
    rest = serve_rest(Jobs(vertex), Models(vertex), Operations(vertex), token=TOKEN, max_body=MAX_BODY)
    bq = serve_bigquery_rest(TableStore(root / "bigquery"), token=TOKEN, max_body=MAX_BODY)
    out = {
        "vertex": Gateway("vertex", rest, f"/v1/{P}/batchPredictionJobs", f"/v1/{P}/batchPredictionJobs"),
        "bigquery": Gateway(
            "bigquery", bq, "/bigquery/v2/projects/p/datasets", "/bigquery/v2/projects/p/datasets"
        ),
    }
    yield out
    rest.stop()
    bq.stop()
    store.close()


@pytest.fixture(params=["vertex", "bigquery"])
def gw(request, gateways) -> Gateway:
    return gateways[request.param]


# -- raw HTTP ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Unclosable(io.BufferedReader):
    def close(self) -> None:  # http.client closes its file after each response; later ones share it
        pass


class _FileSock:
    def __init__(self, f: io.BufferedReader) -> None:
        self.f = f

    def makefile(self, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return self.f


def exchange(
    port: int, raw: bytes, *, methods: tuple[str, ...] = ("GET",), half_close: bool = True
) -> list[Answer]:
    """Send ``raw`` on a fresh connection and read every answer until the server closes (``methods``: the
    method of each request, for HEAD's body-less answers). ``half_close`` ends our side after sending, so
    a request cut short is the server's problem, not a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        inner = sock.makefile("rb")
        reader = _Unclosable(inner)  # type: ignore[arg-type]
        answers = []
        try:
            while reader.peek(1):
                method = methods[min(len(answers), len(methods) - 1)]
                r = http.client.HTTPResponse(_FileSock(reader), method=method)  # type: ignore[arg-type]
                r.begin()
                answers.append(Answer(r.status, r.msg, r.read()))
                if r.will_close:
                    assert not reader.peek(1), "bytes after an answer that closes the connection"
                    break
        finally:
            inner.close()
        return answers


def one(port: int, raw: bytes, **kwargs: Any) -> Answer:
    answers = exchange(port, raw, **kwargs)
    assert len(answers) == 1, answers
    return answers[0]


def request(
    gw: Gateway,
    method: str = "GET",
    path: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    auth: bool = True,
    length: bool = True,
    host: str | None = "",
) -> bytes:
    """A request's bytes: by default with the server's own Host, the token and the body's length."""
    lines = [f"{method} {path or gw.ok_path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host or gw.host}")
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if length and body:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_error(gw: Gateway, a: Answer, status: int | None = None, *, head: bool = False) -> dict:
    """A well-formed error of ``gw``'s API: 4xx/5xx, JSON, the API's error body (for HEAD: no body)."""
    if status is not None:
        assert a.status == status, (a.status, a.body[:300])
    assert 400 <= a.status < 600, a.status
    assert a.headers.get("Content-Type", "").startswith("application/json"), a.headers
    assert a.headers.get("Access-Control-Allow-Origin") is None
    if head:
        assert a.body == b"" and int(a.headers["Content-Length"]) > 0
        return {}
    err = a.json()["error"]
    assert err["code"] == a.status and isinstance(err["message"], str) and err["message"]
    assert err["status"] in errors.Code.__members__
    if gw.kind == "vertex":
        assert set(err) <= {"code", "message", "status", "details"}, err
    else:
        assert set(err) == {"code", "message", "status", "errors"}, err
        assert [set(e) for e in err["errors"]] == [{"message", "domain", "reason"}]
    return err


def assert_serving(gw: Gateway) -> None:
    """The server thread is up and a normal call succeeds."""
    assert gw.server._thread.is_alive()
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        c.request("GET", gw.ok_path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        assert isinstance(json.loads(r.read()), dict)
    finally:
        c.close()


# -- methods -------------------------------------------------------------------------------------------------


def test_head_answers_the_status_and_headers_without_a_body(gw):
    answers = exchange(
        gw.port,
        request(gw, "HEAD") + request(gw, "HEAD", path=f"{gw.ok_path}/nowhere/at/all") + request(gw),
        methods=("HEAD", "HEAD", "GET"),
    )
    assert [a.status for a in answers] == [200, 404, 200]
    assert answers[0].body == b"" and int(answers[0].headers["Content-Length"]) == len(answers[2].body)
    assert_error(gw, answers[1], 404, head=True)
    assert isinstance(answers[2].json(), dict)  # the connection stayed in step: no stray body bytes


@pytest.mark.parametrize(
    ("method", "status"), [("OPTIONS", 405), ("TRACE", 405), ("CONNECT", 405), ("BREW", 501), ("G(T", 400)]
)
def test_methods_nobody_serves_answer_in_the_apis_format(gw, method, status):
    a = one(gw.port, request(gw, method))
    assert_error(gw, a, status)
    if status == 405:
        assert "GET" in a.headers["Allow"] and "OPTIONS" not in a.headers["Allow"]


def test_a_cors_preflight_gets_no_cors_grant(gw):
    headers = {"Origin": f"http://{gw.host}", "Access-Control-Request-Method": "POST"}
    a = one(gw.port, request(gw, "OPTIONS", headers=headers))
    assert_error(gw, a, 405)
    assert not [k for k in a.headers if k.lower().startswith("access-control-")]


# -- framing -------------------------------------------------------------------------------------------------


def test_a_request_line_too_long_is_414(gw):
    assert_error(gw, one(gw.port, request(gw, path=gw.ok_path + "?x=" + "a" * 70_000)), 414)


@pytest.mark.parametrize("kind", ["one long header", "too many headers"])
def test_headers_too_large_are_431(gw, kind):
    many = {"X-Big": "b" * 70_000} if kind == "one long header" else {f"X-H{i}": "v" for i in range(120)}
    assert_error(gw, one(gw.port, request(gw, headers=many)), 431)


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1 2", "5, 6", "0x10", "²"])
def test_a_bad_content_length_is_400_without_a_traceback(gw, value, capfd):
    a = one(gw.port, request(gw, "POST", gw.post_path, {"Content-Length": value}, b"{}", length=False))
    assert_error(gw, a, 400)
    assert a.headers["Connection"] == "close"
    assert_serving(gw)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("value", [str(MAX_BODY + 1), "9" * 30, str(2**64)])
def test_a_body_over_the_limit_is_413(gw, value):
    a = one(gw.port, request(gw, "POST", gw.post_path, {"Content-Length": value}, b"", length=False))
    assert_error(gw, a, 413)


def test_a_chunked_body_over_the_limit_is_413(gw):
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
    raw = request(gw, "POST", gw.post_path, {"Transfer-Encoding": "chunked"}) + body + b"0\r\n\r\n"
    assert_error(gw, one(gw.port, raw), 413)
    assert_serving(gw)


def test_a_body_cut_short_is_400(gw):
    raw = request(gw, "POST", gw.post_path, {"Content-Length": "100"}, b"{}", length=False)
    assert_error(gw, one(gw.port, raw), 400)


def _chunked(body: bytes, sizes: tuple[int, ...] = (1, 7, 3)) -> bytes:
    out, i, n = [], 0, 0
    while i < len(body):
        size = sizes[n % len(sizes)]
        piece = body[i : i + size]
        out.append(b"%X;ext=%d\r\n%s\r\n" % (len(piece), n, piece))
        i, n = i + size, n + 1
    return b"".join(out) + b"0\r\nX-Trailer: yes\r\n\r\n"


def _create_body(gw: Gateway, name: str) -> bytes:
    if gw.kind == "bigquery":
        return json.dumps({"datasetReference": {"projectId": "p", "datasetId": name}}).encode()
    job = {
        "displayName": name,
        "model": f"{P}/models/m1",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://bkt/in.jsonl"]}},
        "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": "gs://bkt/o"}},
    }
    return json.dumps(job).encode()


def test_a_chunked_body_is_read(gw):
    body = _create_body(gw, "chunked_body")
    raw = request(gw, "POST", gw.post_path, {"Transfer-Encoding": "chunked"}) + _chunked(body)
    created, listed = exchange(gw.port, raw + request(gw))  # the next request on the connection is in step
    assert created.status == 200, created.body
    assert listed.status == 200 and b"chunked_body" in listed.body


def test_expect_100_continue_is_answered_once_the_request_may_go_on(gw):
    body = _create_body(gw, "expected")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(request(gw, "POST", gw.post_path, {"Expect": "100-continue"}, body)[: -len(body)])
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        r = http.client.HTTPResponse(sock, method="POST")
        r.begin()
        assert r.status == 200, r.read()
    stranger = request(gw, "POST", gw.post_path, {"Expect": "100-continue"}, body, host="evil.example")
    a = one(gw.port, stranger[: -len(body)])  # refused before any "100 Continue"
    assert_error(gw, a, 403)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Transfer-Encoding": "gzip"}, 501),
        ({"Transfer-Encoding": "gzip, chunked"}, 501),
        ({"Transfer-Encoding": "chunked", "Content-Length": "5"}, 400),
    ],
)
def test_transfer_codings_other_than_chunked_are_refused(gw, headers, status):
    raw = request(gw, "POST", gw.post_path, headers) + _chunked(b"{}")
    a = one(gw.port, raw)
    assert_error(gw, a, status)
    assert a.headers["Connection"] == "close"


@pytest.mark.parametrize(
    "chunks", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"-2\r\n{}\r\n0\r\n\r\n"]
)
def test_a_malformed_chunked_body_is_400(gw, chunks):
    raw = request(gw, "POST", gw.post_path, {"Transfer-Encoding": "chunked"}) + chunks
    assert_error(gw, one(gw.port, raw), 400)


@pytest.mark.parametrize(
    "line", [b"GET /\r\n", b"   \r\n", b"GET / HTTP/2.0\r\n\r\n", b"GET / FTP/1.1\r\n\r\n"]
)
def test_malformed_request_lines_still_get_a_status_line(gw, line):
    a = one(gw.port, line)
    assert_error(gw, a)
    assert a.status in (400, 505)


# -- bodies and filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, b"\xff\xfe{not utf-8", b"[1, 2", b'"a string"'])
def test_bad_json_bodies_are_400(gw, body):
    err = assert_error(gw, one(gw.port, request(gw, "POST", gw.post_path, body=body)), 400)
    assert err["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("levels", "status"), [(15, 200), (16, 400), (400, 400)])
def test_bigquery_schemas_nest_records_at_most_15_deep(gateways, levels, status):
    gw = gateways["bigquery"]
    field: dict = {"name": "leaf", "type": "STRING"}
    for _ in range(levels - 1):
        field = {"name": "r", "type": "RECORD", "fields": [field]}
    table = {"tableReference": {"tableId": f"t{levels}"}, "schema": {"fields": [field]}}
    exchange(gw.port, request(gw, "POST", gw.post_path, body=_create_body(gw, "deep")))
    a = one(gw.port, request(gw, "POST", f"{gw.post_path}/deep/tables", body=json.dumps(table).encode()))
    assert a.status == status, a.body[:300]
    if status == 400:
        assert "15" in assert_error(gw, a, 400)["message"]


@pytest.mark.parametrize(
    "text", ["(" * 3000 + 'display_name="a"' + ")" * 3000, "NOT " * 3000 + "state=JOB_STATE_FAILED"]
)
@pytest.mark.parametrize("collection", ["batchPredictionJobs", "models"])
def test_a_filter_nested_too_deep_is_invalid_argument(gateways, text, collection):
    gw = gateways["vertex"]
    a = one(gw.port, request(gw, path=f"/v1/{P}/{collection}?filter={quote(text)}"))
    assert assert_error(gw, a, 400)["status"] == "INVALID_ARGUMENT"
    ok = one(gw.port, request(gw, path=f"/v1/{P}/{collection}?filter={quote('((NOT display_name=x))')}"))
    assert ok.status == 200


# -- who may talk to the servers -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_in_any_case_is_accepted(gw, scheme):
    a = one(gw.port, request(gw, headers={"Authorization": f"{scheme} {TOKEN}"}, auth=False))
    assert a.status == 200, a.body


@pytest.mark.parametrize(
    "authorization", [None, "", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"{TOKEN}", "Bearer  "]
)
def test_a_missing_or_wrong_token_is_401(gw, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    a = one(gw.port, request(gw, headers=headers, auth=False))
    assert assert_error(gw, a, 401)["status"] == "UNAUTHENTICATED"
    assert a.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil", "127.0.0.1.evil:{port}"]
)
def test_a_foreign_host_is_403_before_anything_else(gw, host):
    a = one(gw.port, request(gw, host=host.format(port=gw.port)))
    assert assert_error(gw, a, 403)["status"] == "PERMISSION_DENIED"
    assert_error(gw, one(gw.port, request(gw, host=host.format(port=gw.port), auth=False)), 403)


def test_own_names_pass_and_a_missing_or_doubled_host_is_refused(gw):
    for host in (f"localhost:{gw.port}", f"LOCALHOST:{gw.port}", "127.0.0.1"):
        assert one(gw.port, request(gw, host=host)).status == 200, host
    no_host = request(gw, host=None)
    assert_error(gw, one(gw.port, no_host), 403)
    assert_error(gw, one(gw.port, no_host.replace(b"HTTP/1.1", b"HTTP/1.0")), 403)
    assert_error(gw, one(gw.port, request(gw, headers={"Host": "evil.example"})), 400)


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", "http://127.0.0.1:1", "http://localhost.evil"]
)
def test_a_foreign_origin_is_403(gw, origin):
    for method, body in (("GET", b""), ("POST", _create_body(gw, "from_a_web_page"))):
        path = gw.ok_path if method == "GET" else gw.post_path
        a = one(gw.port, request(gw, method, path, {"Origin": origin}, body))
        assert assert_error(gw, a, 403)["status"] == "PERMISSION_DENIED"
    assert b"from_a_web_page" not in one(gw.port, request(gw)).body


def test_the_servers_own_origin_passes(gw):
    a = one(gw.port, request(gw, headers={"Origin": f"http://{gw.host}"}))
    assert a.status == 200 and a.headers.get("Access-Control-Allow-Origin") is None


def test_the_guard_is_reachable_and_names_can_be_added(gw):
    before = gw.server.guard
    assert isinstance(before, Guard) and before.token == TOKEN
    raw = request(gw, host=f"bpj.test:{gw.port}")
    assert_error(gw, one(gw.port, raw), 403)
    gw.server.guard = Guard("127.0.0.1", gw.port, token=TOKEN, extra_names=["bpj.test"])
    try:
        assert one(gw.port, raw).status == 200
    finally:
        gw.server.guard = before


def test_keep_alive_survives_refusals_without_a_body(gw):
    stranger = request(gw, headers={"Origin": "https://evil.example"})
    answers = exchange(gw.port, request(gw) + stranger + request(gw, auth=False) + request(gw))
    assert [a.status for a in answers] == [200, 403, 401, 200]
    assert all(a.headers.get("Connection") != "close" for a in answers[:3])


def test_a_refusal_with_an_unread_body_closes_the_connection(gw):
    stranger = request(
        gw, "POST", gw.post_path, {"Origin": "https://evil.example"}, b"GET / HTTP/1.1\r\n\r\n"
    )
    answers = exchange(gw.port, stranger + request(gw))
    assert len(answers) == 1 and answers[0].status == 403 and answers[0].headers["Connection"] == "close"


# -- the error-format hook -----------------------------------------------------------------------------------


def test_refusals_render_in_the_apps_format_and_a_broken_app_is_a_500():
    def broken(environ, start_response):
        raise RuntimeError("boom")

    class Custom:
        def __call__(self, environ, start_response):
            start_response("200 OK", [("Content-Length", "2"), ("Access-Control-Allow-Origin", "*")])
            return [b"{}"]

        @staticmethod
        def error_body(err):
            return {"oops": {"http": err.http_status, "why": err.message}}

    with RestServer(broken) as plain, RestServer(Custom()) as custom:
        a = one(plain.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert a.status == 500 and a.json()["error"]["status"] == "INTERNAL" and "boom" in a.body.decode()
        a = one(custom.port, b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert a.status == 405 and a.json()["oops"]["http"] == 405
        a = one(custom.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert a.status == 200 and a.headers.get("Access-Control-Allow-Origin") is None


def test_grpc_takes_the_bearer_scheme_in_any_case(tmp_path):
    import grpc

    from bpj import types
    from bpj.local.servers.serve import serve_grpc
    from bpj.local.store import Store
    from bpj.local.vertex import Jobs, Vertex

    store = Store(tmp_path / "v.sqlite3")
    server = serve_grpc(Jobs(Vertex(store, lambda n: None, lambda n: None)), token=TOKEN)
    try:
        with grpc.insecure_channel(server.endpoint) as channel:
            get = channel.unary_unary(
                "/google.cloud.aiplatform.v1.JobService/GetBatchPredictionJob",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=types.BatchPredictionJob.FromString,
            )
            request_ = types.GetBatchPredictionJobRequest(name=f"{P}/batchPredictionJobs/404")
            for authorization, code in [
                (f"bearer {TOKEN}", grpc.StatusCode.NOT_FOUND),
                (f"BEARER {TOKEN}", grpc.StatusCode.NOT_FOUND),
                (f"Bearer {TOKEN}", grpc.StatusCode.NOT_FOUND),
                (f"Bearer {TOKEN}x", grpc.StatusCode.UNAUTHENTICATED),
                (f"Basic {TOKEN}", grpc.StatusCode.UNAUTHENTICATED),
            ]:
                with pytest.raises(grpc.RpcError) as info:
                    get(request_, metadata=[("authorization", authorization)], timeout=10)
                assert info.value.code() == code, authorization
    finally:
        server.stop(None)
        store.close()


# -- fuzz ----------------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\r\n"), max_size=20)
_METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "get"]),
    st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}", fullmatch=True),
    _TEXT,
)
_SUFFIXES = st.one_of(
    st.sampled_from(
        ["", "/..", "/../../etc/passwd", "/%00", "/a%2F..%2Fb", "/x?pageSize=-1", "?filter=(((", "/%ff"]
    ),
    _TEXT.map(lambda t: "/" + quote(t, safe="/%?=&")),
    st.just("/" + "a" * 70_000),
)
_BODIES = st.one_of(
    st.just(b""),
    st.sampled_from([DEEP, DEEP_OBJECT, b"\xff\xfe\xfd", b"{}", b"[]", b"null", b'{"datasetReference": 5}']),
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)


_ASPECTS = ("method", "path", "version", "host", "origin", "auth", "framing", "headers", "body")


@st.composite
def raw_requests(draw, gw: Gateway) -> tuple[bytes, str, frozenset[str]]:
    """(request bytes, its method, its faults): a valid GET or HEAD of a list, with up to three aspects
    replaced by hostile or broken values (no faults: the request must succeed)."""
    faults = frozenset(draw(st.sets(st.sampled_from(_ASPECTS), max_size=3)))

    def pick(aspect: str, sane: Any, hostile: st.SearchStrategy) -> Any:
        return draw(hostile) if aspect in faults else sane

    method = pick("method", draw(st.sampled_from(["GET", "HEAD"])), _METHODS)
    path = pick("path", gw.ok_path, st.sampled_from([gw.ok_path, gw.post_path, "/", "/v1"]))
    path += draw(_SUFFIXES) if "path" in faults else ""
    version = pick(
        "version", "HTTP/1.1", st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "", "HTTP/1.1"])
    )
    body = pick("body", b"", _BODIES)
    host = pick(
        "host",
        draw(st.sampled_from([gw.host, f"localhost:{gw.port}"])),
        st.sampled_from(["evil.example", f"evil.example:{gw.port}", "localhost.evil.example", None, ""]),
    )
    origin = pick(
        "origin",
        draw(st.sampled_from([None, f"http://{gw.host}"])),
        st.sampled_from(["https://evil.example", "null", "http://127.0.0.1:1", "file://"]),
    )
    auth = pick(
        "auth",
        draw(st.sampled_from([f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}"])),
        st.sampled_from(["Bearer nope", None, f"Basic {TOKEN}", TOKEN, "Bearer"]),
    )
    framing = pick(
        "framing", "length", st.sampled_from(["chunked", "bad-length", "negative", "huge", "te", "off"])
    )
    headers: list[tuple[str, str]] = []
    if host is not None:
        headers.append(("Host", host))
    if origin is not None:
        headers.append(("Origin", origin))
    if auth is not None:
        headers.append(("Authorization", auth))
    if framing == "length" and body:
        headers.append(("Content-Length", str(len(body))))
    elif framing == "off":  # a length that does not fit the body
        headers.append(("Content-Length", str(max(0, len(body) + draw(st.sampled_from([-1, 5]))))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked", " chunked"]))))
        body = _chunked(body) if draw(st.booleans()) else body
    elif framing == "bad-length":
        headers.append(("Content-Length", draw(_TEXT)))
    elif framing == "negative":
        headers.append(("Content-Length", "-" + str(draw(st.integers(0, 10**6)))))
    elif framing == "huge":
        headers.append(("Content-Length", str(draw(st.integers(MAX_BODY + 1, 10**40)))))
    elif framing == "te":
        codings = ["gzip", "chunked, gzip", "identity", "x", "chunked, chunked"]
        headers.append(("Transfer-Encoding", draw(st.sampled_from(codings))))
    if "headers" in faults:
        names = st.from_regex(r"X-[A-Za-z-]{1,10}", fullmatch=True) | _TEXT
        headers += draw(st.lists(st.tuples(names, _TEXT), max_size=4))
        if draw(st.booleans()):
            headers.append(("X-Huge", "h" * draw(st.sampled_from([9_000, 70_000]))))
    head = f"{method} {path} {version}".rstrip() + "\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body, method, faults


@pytest.mark.parametrize("kind", ["vertex", "bigquery"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_every_answer_is_a_well_formed_error_or_a_valid_success(gateways, kind, data):
    gw = gateways[kind]
    raw, method, faults = data.draw(raw_requests(gw))
    answers = exchange(gw.port, raw, methods=(method, "GET"))
    assert answers, "the server answered nothing"
    first = answers[0]
    event(f"status {first.status}")
    assert first.headers.get("Access-Control-Allow-Origin") is None
    if not faults:
        assert first.status == 200 and len(answers) == 1, (first.status, first.body[:300])
        assert (first.body == b"") if method == "HEAD" else isinstance(first.json(), dict)
    elif 200 <= first.status < 300:
        assert not faults & {"host", "origin", "auth"}, (first.status, raw[:300])  # never past the guard
        if method == "HEAD":
            assert first.body == b""
    else:
        assert_error(gw, first, head=method == "HEAD")
    for later in answers[1:]:  # a body the server took for a next request: answered just as well
        if not 200 <= later.status < 300:
            assert_error(gw, later)
    assert_serving(gw)


def test_a_client_that_sends_half_a_request_is_let_go():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"{}"]

    server = RestServer(app, idle_timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
            s.settimeout(10)
            assert s.recv(100) == b""  # the server closed it, long before our 10 s
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def test_past_max_connections_a_newcomer_gets_503_in_the_apis_format():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"{}"]

    server = RestServer(app, max_connections=2)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
        for s in held:  # make sure both are being served (each holds a thread)
            s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            answer = s.recv(1000)
        assert answer.startswith(b"HTTP/1.1 503")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["status"] == "UNAVAILABLE"
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while True:  # the held connections end, and a newcomer is served again
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    break
            assert time.monotonic() < deadline
    finally:
        server.stop()
