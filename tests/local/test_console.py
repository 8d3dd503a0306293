"""The local console over HTTP, against a real stack with a token: who is refused (and with which status), what
the JSON API shows of real jobs and models, and the headers every answer carries. The browser's side is
tests/local/test_console_browser.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import quote, urlsplit

import pytest

from bpj.local.console import Console
from tests.local.conftest import S
from tests.local.console_jobs import BROKEN, ConsoleJobs, instances
from tests.local.raw_http import request

TOKEN = "console-s3cret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("console-stack"), token=TOKEN) as s:
        yield s


@pytest.fixture(scope="module")
def jobs(stack, tmp_path_factory):
    made = ConsoleJobs(stack, tmp_path_factory.mktemp("gates"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def ended(jobs):
    """Jobs created at once and run to their end: "done" SUCCEEDED with one malformed line among its
    instances (one error row), "delete-me" SUCCEEDED, "fails" FAILED (its predictor cannot load),
    "to-bigquery" SUCCEEDED with the lines of "done", written to BigQuery."""
    lines = instances(3)
    lines.insert(1, '{"not json"')
    broken = jobs.upload("broken-console", BROKEN.format(message="no <b>model</b> here"))
    names = {
        "done": jobs.create("done", lines, labels={"team": "vision"}),
        "delete-me": jobs.create("delete-me", instances(2)),
        "fails": jobs.create("fails", instances(1), model=broken),
        "to-bigquery": jobs.create("to-bigquery", lines, bigquery=True),
    }
    return {key: jobs.wait(name) for key, name in names.items()}


@pytest.fixture(scope="module")
def done(ended):
    job = ended["done"]
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    return job


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def sign_in(stack) -> tuple[str, str]:
    """``(Cookie header value, CSRF token)`` of a new session, opened by a one-time link."""
    port = stack.console.port
    status, headers, _ = request(port, "GET", path_of(stack.console_login_url()))
    assert status == 303, headers
    cookie = headers["set-cookie"].split(";", 1)[0]
    status, _, body = request(port, "GET", "/console/api/session", headers={"Cookie": cookie})
    assert status == 200
    return cookie, json.loads(body)["csrf"]


def call(stack, method, target, **kwargs):
    status, headers, body = request(stack.console.port, method, target, **kwargs)
    return (
        status,
        headers,
        json.loads(body) if headers.get("content-type", "").startswith("application/json") else body,
    )


# -- who is refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/console/", "/console/job?name=x", "/console/models"])
def test_a_page_without_cookie_or_token_is_refused(stack, target):
    status, headers, body = request(stack.console.port, "GET", target)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert b"Sign in" in body and b"console-s3cret" not in body  # the sign-in page, never data or the token
    status, _, _ = request(stack.console.port, "GET", target, token="wrong")
    assert status == 401
    status, _, _ = request(
        stack.console.port, "GET", target, headers={"Cookie": f"{stack.console.app.cookie_name}=made-up"}
    )
    assert status == 401
    assert request(stack.console.port, "GET", target, token=TOKEN)[0] == 200


@pytest.mark.parametrize("target", ["/console/api/jobs", "/console/api/models", "/console/api/session"])
def test_the_api_without_cookie_or_token_is_refused(stack, target):
    status, headers, _ = call(stack, "GET", target)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert call(stack, "GET", target, token="wrong")[0] == 401
    assert call(stack, "GET", target, token=TOKEN)[0] == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil"]
)
def test_a_foreign_host_is_refused_even_with_the_token(stack, host):
    for target in ("/console/", "/console/api/jobs", path_of(stack.console_login_url())):
        status, headers, body = request(stack.console.port, "GET", target, token=TOKEN, host=host)
        assert status == 403, (target, body)
        assert "set-cookie" not in headers
    cookie, csrf = sign_in(stack)
    status, _, _ = request(
        stack.console.port, "GET", "/console/api/jobs", headers={"Cookie": cookie}, host=host
    )
    assert status == 403


def test_a_post_from_a_foreign_origin_is_refused(stack, done):
    cookie, csrf = sign_in(stack)
    body = json.dumps({"name": done.name}).encode()
    for origin in ("http://evil.example", f"http://127.0.0.1:{stack.console.port + 1}", "null"):
        headers = {"Cookie": cookie, "X-BPJ-CSRF": csrf, "Origin": origin, "Content-Type": "application/json"}
        assert call(stack, "POST", "/console/api/cancel", headers=headers, body=body)[0] == 403
    headers = {"Cookie": cookie, "X-BPJ-CSRF": csrf, "Sec-Fetch-Site": "cross-site"}
    assert call(stack, "POST", "/console/api/cancel", headers=headers, body=body)[0] == 403
    # The console's own origin passes these checks (and the service then refuses to cancel an ended job).
    own = {"Cookie": cookie, "X-BPJ-CSRF": csrf, "Origin": f"http://127.0.0.1:{stack.console.port}"}
    status, _, answer = call(stack, "POST", "/console/api/cancel", headers=own, body=body)
    assert (status, answer["error"]["status"]) == (400, "FAILED_PRECONDITION")


def test_a_post_by_cookie_needs_the_sessions_csrf_header(stack, jobs, ended):
    name = ended["delete-me"].name
    assert ended["delete-me"].state == S.JOB_STATE_SUCCEEDED
    cookie, csrf = sign_in(stack)
    other_cookie, other_csrf = sign_in(stack)
    body = json.dumps({"name": name}).encode()
    for headers in (
        {"Cookie": cookie},
        {"Cookie": cookie, "X-BPJ-CSRF": ""},
        {"Cookie": cookie, "X-BPJ-CSRF": other_csrf},  # another session's token
        {"Cookie": cookie, "X-BPJ-CSRF": TOKEN},
    ):
        assert call(stack, "POST", "/console/api/delete", headers=headers, body=body)[0] == 403
    assert call(stack, "POST", "/console/api/delete", headers={"X-BPJ-CSRF": csrf}, body=body)[0] == 401
    assert jobs.get(name).name == name  # nothing was deleted
    status, _, answer = call(
        stack, "POST", "/console/api/delete", headers={"Cookie": cookie, "X-BPJ-CSRF": csrf}, body=body
    )
    assert (status, answer) == (200, {"done": True})
    listed = call(stack, "GET", "/console/api/jobs", token=TOKEN)[2]["jobs"]
    assert name not in {j["name"] for j in listed}


def test_nothing_changes_by_get(stack, done):
    for action in ("cancel", "delete"):
        status, _, _ = call(stack, "GET", f"/console/api/{action}?name={quote(done.name)}", token=TOKEN)
        assert status == 405
    assert (
        call(stack, "GET", f"/console/api/job?name={quote(done.name)}", token=TOKEN)[2]["state"]
        == "JOB_STATE_SUCCEEDED"
    )


def test_the_bearer_token_serves_posts_without_a_session(stack, jobs):
    name = jobs.create("by-token", [json.dumps({"gate": "never"})])
    jobs.wait(name, states={S.JOB_STATE_RUNNING})
    body = json.dumps({"name": name}).encode()
    assert call(stack, "POST", "/console/api/cancel", token="wrong", body=body)[0] == 401
    assert call(stack, "POST", "/console/api/cancel", token=TOKEN, body=body)[0] == 200
    assert jobs.wait(name).state == S.JOB_STATE_CANCELLED


def test_a_one_time_link_signs_in_once(stack):
    port = stack.console.port
    link = stack.console_login_url()
    assert TOKEN not in link
    status, headers, _ = request(port, "GET", path_of(link))
    assert status == 303 and headers["location"] == "/console/"  # the nonce is gone from the address
    cookie = headers["set-cookie"]
    name, value = cookie.split(";", 1)[0].split("=", 1)
    assert name == stack.console.app.cookie_name and value != TOKEN and TOKEN not in cookie
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= attributes
    assert request(port, "GET", "/console/", headers={"Cookie": f"{name}={value}"})[0] == 200
    # used once: refused the second time, and no cookie comes with the refusal
    status, headers, _ = request(port, "GET", path_of(link))
    assert status == 403 and "set-cookie" not in headers


def test_an_expired_or_made_up_link_is_refused(stack):
    expired = stack.console_login_url(ttl=0)
    for target in (path_of(expired), "/console/login?once=made-up", "/console/login?once="):
        status, headers, body = request(stack.console.port, "GET", target)
        assert status == 403 and "set-cookie" not in headers
        assert b"Sign in" in body  # the page that says how to sign in instead


def test_the_sign_in_form_takes_the_token_in_the_body(stack):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = request(
        stack.console.port, "POST", "/console/login", headers=form, body=b"token=wrong"
    )
    assert status == 401 and "set-cookie" not in headers
    status, headers, _ = request(
        stack.console.port, "POST", "/console/login", headers=form, body=f"token={TOKEN}".encode()
    )
    assert status == 303 and headers["set-cookie"].startswith(stack.console.app.cookie_name + "=")
    own = {**form, "Origin": "http://evil.example"}
    assert (
        request(stack.console.port, "POST", "/console/login", headers=own, body=f"token={TOKEN}".encode())[0]
        == 403
    )


def test_without_a_token_the_host_origin_and_csrf_rules_still_hold(stack, done):
    """The loopback default: no sign-in, but a session cookie from the page, and the same refusals."""
    console = Console(stack.console.app.views, token=None)
    try:
        port = console.port
        assert request(port, "GET", "/console/", host="evil.example")[0] == 403
        status, headers, _ = request(port, "GET", "/console/")
        assert status == 200
        cookie = headers["set-cookie"].split(";", 1)[0]
        status, _, body = request(port, "GET", "/console/api/session", headers={"Cookie": cookie})
        csrf = json.loads(body)["csrf"]
        post = json.dumps({"name": done.name}).encode()
        assert request(port, "POST", "/console/api/cancel", headers={"Cookie": cookie}, body=post)[0] == 403
        assert request(port, "POST", "/console/api/cancel", body=post)[0] == 401
        foreign = {"Cookie": cookie, "X-BPJ-CSRF": csrf, "Origin": "http://evil.example"}
        assert request(port, "POST", "/console/api/cancel", headers=foreign, body=post)[0] == 403
        mine = {"Cookie": cookie, "X-BPJ-CSRF": csrf}
        assert (
            request(port, "POST", "/console/api/cancel", headers=mine, body=post)[0] == 400
        )  # FAILED_PRECONDITION
    finally:
        console.stop()


# -- what every answer carries ------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(stack):
    for target in ("/console/", "/console/api/jobs", "/console/static/common.js", "/console/api/nothing"):
        _, headers, _ = request(stack.console.port, "GET", target, token=TOKEN)
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in headers


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        self.problems += [f"<{tag} {k}>" for k in names if k.startswith("on") or k == "style"]
        self.problems += [f"<{tag} {k}={v}>" for k, v in names.items() if v and "javascript:" in v.lower()]
        if tag == "script":
            self.scripts.append(names)
            self._in_script = True
            self.problems += (
                [] if names.get("src", "").startswith("/console/static/") else [f"script {names}"]
            )
        self.problems += [f"<{tag}>" for _ in [1] if tag in ("style", "iframe", "object", "embed", "base")]

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append(f"inline script {data.strip()[:40]!r}")


@pytest.mark.parametrize("name", ["console.html", "signin.html"])
def test_the_pages_have_no_inline_script_or_style(name):
    text = resources.files("bpj.local.console").joinpath(name).read_text()
    parser = _Markup()
    parser.feed(text)
    assert parser.problems == []
    assert name == "signin.html" or len(parser.scripts) == 4


def test_the_scripts_never_parse_data_as_html():
    folder = resources.files("bpj.local.console")
    for name in ("common.js", "jobs.js", "job.js", "models.js"):
        text = folder.joinpath(name).read_text()
        assert not re.search(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text
        ), name


# -- what it shows ----------------------------------------------------------------------------------------------


def test_the_jobs_list_filters_by_state_and_label(stack, jobs, done):
    all_jobs = call(stack, "GET", "/console/api/jobs", token=TOKEN)[2]["jobs"]
    created = [j["createTime"] for j in all_jobs]
    assert created == sorted(created, reverse=True)  # newest first
    row = next(j for j in all_jobs if j["name"] == done.name)
    assert (row["state"], row["successful"], row["failed"], row["labels"]) == (
        "JOB_STATE_SUCCEEDED",
        3,
        1,
        {"team": "vision"},
    )
    assert (row["model"], row["modelDisplayName"]) == (jobs.echo, "echo")
    assert row["endTime"] and row["terminal"] and row["total"] is None
    for query, expect in (
        ("label=team", True),
        ("label=team%3Dvision", True),
        ("label=team%3Daudio", False),
        ("label=other", False),
        ("state=JOB_STATE_SUCCEEDED", True),
        ("state=JOB_STATE_FAILED", False),
        ("state=JOB_STATE_SUCCEEDED&label=team%3Dvision", True),
    ):
        listed = call(stack, "GET", f"/console/api/jobs?{query}", token=TOKEN)[2]["jobs"]
        assert (done.name in {j["name"] for j in listed}) is expect, query
    status, _, answer = call(stack, "GET", "/console/api/jobs?state=NOT_A_STATE", token=TOKEN)
    assert status == 400 and "NOT_A_STATE" in answer["error"]["message"]


def test_a_jobs_page_shows_history_outputs_errors_and_predictions(stack, done):
    status, _, job = call(stack, "GET", f"/console/api/job?name={quote(done.name)}", token=TOKEN)
    assert status == 200
    assert [h["state"] for h in job["history"]] == [
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
    ]
    predictions = [json.loads(p)["prediction"] for p in job["predictions"]]
    assert predictions == [[0, 0], [1, 1], [2, 2]], job["previewNote"]
    (error,) = [json.loads(e) for e in job["errors"]]
    assert (error["instance"], error["error"]["status"]) == ('{"not json"', "INVALID_ARGUMENT")
    assert "line 2 of gs://console-in/" in error["error"]["message"]
    assert {"what": "predictions and errors", "uri": done.output_info.gcs_output_directory} in job["outputs"]
    assert json.loads(job["config"])["displayName"] == "done"
    status, _, answer = call(
        stack, "GET", "/console/api/job?name=projects/p/locations/l/batchPredictionJobs/1", token=TOKEN
    )
    assert status == 404 and answer["error"]["status"] == "NOT_FOUND"


def test_a_failed_jobs_error_and_a_cancelled_jobs_history(stack, jobs, ended):
    failed = ended["fails"]
    assert failed.state == S.JOB_STATE_FAILED
    job = call(stack, "GET", f"/console/api/job?name={quote(failed.name)}", token=TOKEN)[2]
    assert (
        "no <b>model</b> here" in job["error"]["message"]
        and job["history"][-1]["state"] == "JOB_STATE_FAILED"
    )
    name = jobs.create("cancelled", [json.dumps({"gate": "never"})])
    jobs.wait(name, states={S.JOB_STATE_RUNNING})
    assert (
        call(stack, "POST", "/console/api/cancel", token=TOKEN, body=json.dumps({"name": name}).encode())[0]
        == 200
    )
    jobs.wait(name)
    job = call(stack, "GET", f"/console/api/job?name={quote(name)}", token=TOKEN)[2]
    assert [h["state"] for h in job["history"]] == [
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_CANCELLING",
        "JOB_STATE_CANCELLED",
    ]


def test_models_list_versions_artifacts_and_the_jobs_that_used_them(stack, jobs, done):
    models = call(stack, "GET", "/console/api/models", token=TOKEN)[2]["models"]
    echo = next(m for m in models if m["name"] == jobs.echo)
    assert echo["displayName"] == "echo"
    assert [(v["versionId"], v["artifactUri"]) for v in echo["versions"]] == [
        ("1", "gs://console-models/echo")
    ]
    assert done.name in {j["name"] for j in echo["jobs"]}


def test_no_console_opens_no_port(tmp_path):
    from bpj import errors
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path, console=False) as s:
        assert s.console is None and s.console_url is None
        with pytest.raises(errors.UsageError, match="console is off"):
            s.console_login_url()


def test_bpj_local_start_prints_a_one_time_link_and_no_console_turns_it_off(tmp_path):
    from bpj.cli import parser

    assert parser().parse_args(["local", "start", "--no-console"]).console is False
    assert parser().parse_args(["local", "start"]).console is True
    command = [
        sys.executable,
        "-m",
        "bpj.cli",
        "local",
        "start",
        "--data-dir",
        str(tmp_path),
        "--token",
        TOKEN,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = next((line for line in proc.stdout if line.startswith("# console:")), "")
        assert TOKEN not in line
        found = re.search(r"(http://127\.0\.0\.1:(\d+)/console/login\?once=\S+)", line)
        assert found is not None, line
        link, port = found[1], int(found[2])
        assert request(port, "GET", "/console/")[0] == 401
        status, headers, _ = request(port, "GET", path_of(link))
        assert status == 303 and "set-cookie" in headers
        assert request(port, "GET", path_of(link))[0] == 403
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_a_bigquery_jobs_preview_reads_its_tables(stack, ended):
    job = ended["to-bigquery"]
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    shown = call(stack, "GET", f"/console/api/job?name={quote(job.name)}", token=TOKEN)[2]
    assert shown["previewNote"] == ""
    assert [json.loads(p)["prediction"] for p in shown["predictions"]] == [[0, 0], [1, 1], [2, 2]]
    (error,) = [json.loads(e) for e in shown["errors"]]
    assert error["instance"] == '{"not json"' and "is not valid JSON" in json.dumps(error)
    table = f"{job.output_info.bigquery_output_dataset}.predictions"
    assert {"what": "predictions", "uri": table} in shown["outputs"]


def test_the_store_records_each_state_once_and_forgets_a_deleted_job():
    from bpj import types
    from bpj.local.store import Store

    store = Store(None)
    name = "projects/p/locations/l/batchPredictionJobs/1"
    job = types.BatchPredictionJob(name=name, state=S.JOB_STATE_PENDING)
    store.insert("job", name, "projects/p/locations/l", 1, job)
    for state in (S.JOB_STATE_RUNNING, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED):
        store.update("job", name, types.BatchPredictionJob, lambda j, state=state: setattr(j, "state", state))
    history = store.state_history(name)
    assert [state for _, state in history] == [
        S.JOB_STATE_PENDING,
        S.JOB_STATE_RUNNING,
        S.JOB_STATE_SUCCEEDED,
    ]
    assert [t for t, _ in history] == sorted(t for t, _ in history)
    store.put("model", "m", "projects/p/locations/l", 1, types.Model(name="m"))
    assert store.state_history("m") == []
    store.delete("job", name)
    assert store.state_history(name) == []
    store.close()


def test_a_jobs_output_files_download_as_attachments_and_nothing_else_does(stack, done):
    job = call(stack, "GET", f"/console/api/job?name={quote(done.name)}", token=TOKEN)[2]
    files = {f["uri"].rsplit("/", 1)[1]: f for f in job["files"]}
    assert set(files) == {"predictions_0001.jsonl", "errors_0001.jsonl"}
    for f in files.values():
        target = f"/console/api/download?job={quote(done.name, safe='')}&uri={quote(f['uri'], safe='')}"
        assert request(stack.console.port, "GET", target)[0] == 401
        status, headers, body = request(stack.console.port, "GET", target, token=TOKEN)
        assert status == 200 and body == stack.gcs.read(f["uri"]) and len(body) == f["size"]
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment;")
        assert (
            "sandbox" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
        )
    # Any other object, the job's own input included, is not served through the console.
    for uri in (done.input_config.gcs_source.uris[0], f"{done.output_info.gcs_output_directory}/../x"):
        target = f"/console/api/download?job={quote(done.name, safe='')}&uri={quote(uri, safe='')}"
        status, _, body = request(stack.console.port, "GET", target, token=TOKEN)
        assert status == 404, body


def test_an_expired_session_is_refused(stack):
    from bpj.local.console.sessions import Sessions

    console = Console(stack.console.app.views, token=TOKEN, sessions=Sessions(session_ttl=0))
    try:
        status, headers, _ = request(console.port, "GET", path_of(console.login_url()))
        assert status == 303
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert request(console.port, "GET", "/console/", headers={"Cookie": cookie})[0] == 401
        assert request(console.port, "GET", "/console/api/jobs", headers={"Cookie": cookie})[0] == 401
    finally:
        console.stop()
