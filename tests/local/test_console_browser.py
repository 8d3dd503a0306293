"""The local console in a real headless Chromium (Debian's, driven by Playwright with its executable_path),
against a real stack with a token: sign in by the one-time link, watch a job appear and its progress move, see a
failed job's error, cancel a job, see markup in user data shown as text, and be refused without the cookie or
under a foreign host name. Screenshots of each page go to tests/artifacts/console/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bpj import errors
from tests.local.conftest import S
from tests.local.console_jobs import BROKEN, ConsoleJobs, instances

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BPJ_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
TOKEN = "browser-s3cret"
FOREIGN = "rebound.test"  # resolved to 127.0.0.1 inside the browser only: a DNS-rebinding page's view
WAIT_MS = 60_000  # how long a page may take to show what the test waits for, before the test fails
MARKUP = "<script>window.__bpj_pwned = 1</script><img src=x onerror=window.__bpj_pwned=2>"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bpj.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("browser-stack"), token=TOKEN, workers=4) as s:
        s.executor.progress_interval = 0  # every answered message of batches is saved: progress in steps
        yield s


@pytest.fixture(scope="module")
def jobs(stack, tmp_path_factory):
    made = ConsoleJobs(stack, tmp_path_factory.mktemp("gates"))
    yield made
    for gate in ("g1", "g2", "never"):
        made.open_gate(gate)  # let any job still waiting end before the stack stops
    made.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--host-resolver-rules=MAP {FOREIGN} 127.0.0.1, EXCLUDE localhost",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, stack):
    """One signed-in page for the module: opened by the one-time link, as a user would."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    p.on("dialog", lambda dialog: dialog.accept())
    response = p.goto(stack.console_login_url())
    assert response is not None and response.status == 200
    assert p.url == stack.console_url  # the nonce is gone from the address bar
    yield p
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def job_page(page, stack, name: str) -> None:
    from urllib.parse import quote

    page.goto(f"{stack.console_url}job?name={quote(name)}")


def test_a_new_job_appears_and_its_progress_moves(page, stack, jobs):
    from playwright.sync_api import expect

    from bpj.local.executor import MESSAGE_BATCHES, MESSAGE_INSTANCES

    # One instance a batch: the predictor process answers `per` of them a message, and the stack saves the
    # counts after each answer. A gate in the middle of the second message holds the job at `per` done; one
    # in the middle of the third holds it at 2 * per.
    per = min(MESSAGE_BATCHES, MESSAGE_INSTANCES)
    total = 3 * per + 8
    name = jobs.create(
        "watched", instances(total, g1=per + per // 2, g2=2 * per + per // 2), labels={"team": "vision"}
    )
    row = page.locator(f'#jobs tbody tr[data-name="{name}"]')
    expect(row).to_be_visible()
    bar = row.locator("progress")
    expect(bar).to_have_attribute("data-done", str(per))
    assert bar.evaluate("b => [b.value, b.max]") == [per, total]
    expect(row.locator(".state")).to_have_text("RUNNING")
    shot(page, "jobs-running")
    jobs.open_gate("g1")
    expect(bar).to_have_attribute("data-done", str(2 * per))
    assert bar.evaluate("b => b.value") == 2 * per
    jobs.open_gate("g2")
    expect(row.locator(".state")).to_have_text("SUCCEEDED")
    expect(row.locator("td.num").first).to_have_text(str(total))
    # the filters: by state and label, in the page's own form
    page.select_option("#state", "JOB_STATE_FAILED")
    expect(row).to_have_count(0)
    page.select_option("#state", "JOB_STATE_SUCCEEDED")
    page.fill("#label", "team=vision")
    page.press("#label", "Enter")
    expect(row).to_be_visible()
    shot(page, "jobs")
    page.select_option("#state", "")
    page.fill("#label", "")
    page.press("#label", "Enter")


def test_a_finished_jobs_page_shows_history_and_predictions(page, stack, jobs):
    from playwright.sync_api import expect

    name = jobs.create("previewed", instances(3))
    assert jobs.wait(name).state == S.JOB_STATE_SUCCEEDED
    job_page(page, stack, name)
    expect(page.locator("#title .state")).to_have_text("SUCCEEDED")
    expect(page.locator("#history tbody tr")).to_have_count(3)
    expect(page.locator("#predictions tbody tr")).to_have_count(3)
    assert json.loads(page.locator("#predictions tbody tr td.mono").first.inner_text())["prediction"] == [
        0,
        0,
    ]
    link = page.locator("#outputs a[download]", has_text="predictions_0001.jsonl")
    expect(link).to_have_count(1)
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), "rb") as f:
        assert f.read() == stack.gcs.read(link.inner_text())
    expect(page.locator("#delete")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    shot(page, "job-succeeded")


def test_a_failed_job_shows_its_error(page, stack, jobs):
    from playwright.sync_api import expect

    broken = jobs.upload("broken-browser", BROKEN.format(message="no <b>model</b> here"))
    name = jobs.create("fails", instances(2), model=broken)
    assert jobs.wait(name).state == S.JOB_STATE_FAILED
    job_page(page, stack, name)
    expect(page.locator("#title .state")).to_have_text("FAILED")
    expect(page.locator("#error pre")).to_contain_text("no <b>model</b> here")  # as text, not as markup
    assert page.locator("#error b").count() == 0
    shot(page, "job-failed")


def test_cancel_works(page, stack, jobs):
    from playwright.sync_api import expect

    name = jobs.create("to-cancel", [json.dumps({"gate": "never"})])
    jobs.wait(name, states={S.JOB_STATE_RUNNING})
    job_page(page, stack, name)
    expect(page.locator("#title .state")).to_have_text("RUNNING")
    page.click("#cancel")
    expect(page.locator("#title .state")).to_have_text("CANCELLED")
    assert jobs.get(name).state == S.JOB_STATE_CANCELLED
    history = page.locator("#history tbody tr .state").all_inner_texts()
    assert history == ["PENDING", "RUNNING", "CANCELLING", "CANCELLED"]
    shot(page, "job-cancelled")
    page.click("#delete")  # confirm() is accepted by the page fixture
    page.wait_for_url(stack.console_url)
    with pytest.raises(errors.NotFound):
        jobs.get(name)


def test_markup_in_user_data_is_shown_as_text(page, stack, jobs):
    from playwright.sync_api import expect

    with pytest.raises(errors.InvalidArgument, match="label value"):  # Vertex's label rules refuse markup
        jobs.create("refused", instances(1), labels={"x": "<script>"})
    name = jobs.create(MARKUP, [json.dumps({"html": MARKUP})])
    assert jobs.wait(name).state == S.JOB_STATE_SUCCEEDED
    page.goto(stack.console_url)
    row = page.locator(f'#jobs tbody tr[data-name="{name}"]')
    expect(row.locator("a").first).to_have_text(MARKUP)
    job_page(page, stack, name)
    expect(page.locator("#title")).to_contain_text(MARKUP)
    expect(page.locator("#predictions tbody td.mono")).to_contain_text(MARKUP)
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__bpj_pwned") is None
    shot(page, "job-markup")


def test_models_page(page, stack, jobs):
    from playwright.sync_api import expect

    page.goto(f"{stack.console_url}models")
    row = page.locator(f'#models tbody tr[data-name="{jobs.echo}"]')
    expect(row).to_contain_text("gs://console-models/echo")
    expect(row.locator("li a").first).to_be_visible()
    shot(page, "models")


def test_without_the_cookie_or_under_a_foreign_host_the_console_is_refused(browser, page, stack):
    fresh = browser.new_context()
    try:
        stranger = fresh.new_page()
        response = stranger.goto(stack.console_url)
        assert response is not None and response.status == 401
        assert "Sign in" in stranger.content() and stranger.locator("#jobs").count() == 0
        shot(stranger, "signin")
        api = stranger.goto(f"{stack.console_url}api/jobs")
        assert api is not None and api.status == 401
        # The signed-in browser's cookie does not help a page under another name (DNS rebinding).
        foreign = page.context.new_page()
        response = foreign.goto(f"http://{FOREIGN}:{stack.console.port}/console/")
        assert response is not None and response.status == 403
        foreign.close()
        # A used link is refused.
        link = stack.console_login_url()
        assert stranger.goto(link).status == 200
        assert stranger.goto(link).status == 403
    finally:
        fresh.close()
