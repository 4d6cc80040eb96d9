"""The jobs console on the web page, in the machine's Chromium, against the real API and
worker processes: counts after real SUCCESS, FAILURE and CANCELLED jobs, a retry and a cancel
clicked on the page and followed live, keyboard use, and a 360 px wide screen.

Screenshots of each step go to test-artifacts/console/ (gitignored)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlalchemy import Engine

from models.clock import utcnow
from tests.e2e.test_web_page import browser  # noqa: F401 (fixture: the machine's Chromium)
from tests.integration.jobs import SLOW_CALENDAR_TODOS, insert_todos, submit
from tests.integration.test_console_api import add_attempt, add_job
from tests.processes import Process, free_port, start_api, start_worker
from tests.services import ROOT
from tests.waiting import wait_for_job

pytestmark = pytest.mark.e2e

SHOTS = Path(ROOT, "test-artifacts", "console")


@pytest.fixture
def page(browser: Browser, api: str) -> Iterator[Page]:  # noqa: F811 (browser: the fixture)
    context = browser.new_context(base_url=api, timezone_id="UTC")
    page = context.new_page()
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def window_cells(page: Page, figure: str) -> Locator:
    """The 5 min, 1 hour and 24 hours cells of one figure's row in the windows table."""
    return page.get_by_role("row", name=figure, exact=False).get_by_role("cell")


def finished_jobs_of_each_kind(
    api: str, env: dict[str, str], engine: Engine, processes: list[Process]
):  # type: ignore[no-untyped-def]
    """One CANCELLED (cancelled while queued), one FAILURE (submitted through an API that cannot
    reach the broker) and two SUCCESS jobs; the worker (1 thread) keeps running."""
    with httpx.Client(base_url=api, timeout=10) as client:
        queued = submit(api)  # no worker yet: it waits in the queue
        assert client.post(f"/api/v1/jobs/{queued}/cancel").status_code == 200
        port = free_port()
        dead_broker = {**env, "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
        processes.append(start_api({**dead_broker, "BROKER_SEND_TIMEOUT_S": "2"}, port))
        refused = httpx.post(f"http://127.0.0.1:{port}/api/v1/todos/ical", timeout=10)
        assert refused.status_code == 503, refused.text
        processes.append(start_worker(env, threads=1))
        for _ in range(2):
            wait_for_job(engine, submit(api), {"SUCCESS"}, timeout=30)


def test_console_counts_retries_and_cancels_live(
    page: Page, api: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    finished_jobs_of_each_kind(api, service_env, engine, processes)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.goto("/")
    toggle = page.get_by_role("button", name="Open console")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(page.get_by_role("button", name="Close console")).to_have_attribute(
        "aria-expanded", "true"
    )

    # Counts: what finished in each window, nothing waiting, an empty broker queue.
    expect(window_cells(page, "Succeeded")).to_have_text(["2", "2", "2"])
    expect(window_cells(page, "Failed")).to_have_text(["1", "1", "1"])
    expect(window_cells(page, "Cancelled")).to_have_text(["1", "1", "1"])
    for count in ("#count-PENDING", "#count-STARTED", "#count-RETRY", "#backlog-ready"):
        expect(page.locator(count)).to_have_text("0")
    expect(page.locator("#backlog-note")).to_contain_text("redis queue")
    failure = page.locator("#console-failures li")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("the job queue could not be reached")
    expect(page.locator("#console-jobs li")).to_have_count(4)
    shot(page, "1-counts")

    # A job finished behind the page's back shows up by itself (the refresh every 5 s).
    wait_for_job(engine, submit(api), {"SUCCESS"}, timeout=30)
    expect(window_cells(page, "Succeeded")).to_have_text(["3", "3", "3"], timeout=15_000)

    # The failure's details and timeline; only Retry is offered.
    failure.get_by_role("button").click()
    detail = page.locator("#job-detail")
    expect(page.locator("#job-detail-heading")).to_be_focused()
    expect(page.locator("#job-detail-status")).to_have_text("Status: FAILURE")
    expect(detail.get_by_role("button", name="Cancel job")).to_be_hidden()
    steps = page.locator("#job-timeline li .what")
    expect(steps).to_have_text(["Created", "FAILURE"])
    shot(page, "2-failure-timeline")

    # Retry: a new job, selected and followed on its events stream until SUCCESS.
    detail.get_by_role("button", name="Retry job").click()
    # "Status: SUCCESS", or "Retried as new job <id>. Status: SUCCESS" when the job had
    # finished before the page read it (a quick job, a busy machine): never a stale PENDING.
    expect(page.locator("#job-detail-status")).to_contain_text("Status: SUCCESS", timeout=30_000)
    expect(steps).to_have_text(["Created", "Attempt 1: success", "SUCCESS"])
    expect(page.locator("#job-detail-fields")).to_contain_text("Retry of")
    expect(window_cells(page, "Succeeded")).to_have_text(["4", "4", "4"], timeout=15_000)
    shot(page, "3-after-retry")

    # Cancel a running job of 600,000 todos: picked from the list filtered to STARTED.
    insert_todos(engine, SLOW_CALENDAR_TODOS)
    big = submit(api)
    wait_for_job(engine, big, {"STARTED"}, timeout=30)
    page.get_by_label("Status", exact=True).select_option("STARTED")
    row = page.get_by_role("button", name=f"Job {big}")
    expect(row).to_be_visible(timeout=10_000)
    row.click()
    expect(page.locator("#job-detail-status")).to_have_text("Status: STARTED")
    expect(steps.nth(1)).to_have_text("Attempt 1: running")
    detail.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-detail-status")).to_have_text("Status: CANCELLED", timeout=20_000)
    expect(steps).to_have_text(["Created", "Attempt 1: cancelled", "CANCELLED"])
    expect(detail.get_by_role("button", name="Cancel job")).to_be_hidden()
    expect(detail.get_by_role("button", name="Retry job")).to_be_visible()
    expect(window_cells(page, "Cancelled")).to_have_text(["2", "2", "2"], timeout=15_000)
    expect(page.locator("#count-STARTED")).to_have_text("0")
    shot(page, "4-after-cancel")

    # All of it without leaving or reloading the page.
    assert len(navigations) == 1, navigations


def test_console_works_by_keyboard_and_fits_360_px(
    page: Page, api: str, service_env: dict[str, str], engine: Engine, processes: list[Process]
):
    processes.append(start_worker(service_env, threads=1))
    job = submit(api)
    wait_for_job(engine, job, {"SUCCESS"}, timeout=30)
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/")
    # Every control is labelled: found by its role and name, or its label.
    page.get_by_role("button", name="Open console").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Close console")).to_be_focused()
    expect(page.get_by_label("Refresh every 5 s")).to_be_checked()
    expect(page.get_by_role("button", name="Refresh now")).to_be_visible()
    expect(page.get_by_label("Status", exact=True)).to_have_value("")
    expect(page.get_by_role("table", name="Recent windows")).to_be_visible()
    row = page.get_by_role("button", name=f"Job {job}")
    expect(row).to_be_visible()
    # Reached with Tab alone, opened with Enter: the details take the focus.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.jobId") == str(job):
            break
    expect(row).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#job-detail-heading")).to_be_focused()
    expect(page.locator("#job-detail-status")).to_have_text("Status: SUCCESS")
    expect(page.locator("#job-timeline li .what")).to_have_text(
        ["Created", "Attempt 1: success", "SUCCESS"]
    )
    # The status filter by keyboard: a list of no jobs says so.
    page.get_by_label("Status", exact=True).focus()
    page.get_by_label("Status", exact=True).select_option("FAILURE")
    expect(page.locator("#jobs-empty")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "5-phone-360px")


def test_the_timeline_tells_a_lost_attempt_from_a_running_one(page: Page, engine: Engine):
    """An attempt counted by the job with no record of its end is running if it is the
    STARTED job's last one, and otherwise was lost with its worker."""
    now = utcnow()
    with engine.begin() as conn:
        # Its worker died in attempt 1; attempt 2 failed for good.
        failed = add_job(conn, "FAILURE", now, finished_at=now, attempts=2, error="bad data")
        add_attempt(conn, failed, 2, now, timedelta(milliseconds=250), "failure", "bad data")
        # Attempt 1 failed transiently; attempt 2 runs now.
        running = add_job(conn, "STARTED", now, attempts=2)
        add_attempt(conn, running, 1, now, timedelta(milliseconds=100), "retry", "flaky")
    page.goto("/#console")  # the console opens at its anchor
    steps = page.locator("#job-timeline li .what")
    page.get_by_role("button", name=f"Show failed job {failed}").click()
    expect(steps).to_have_text(
        ["Created", "Attempt 1: lost (worker died)", "Attempt 2: failure", "FAILURE"]
    )
    page.get_by_role("button", name=f"Job {running}").click()
    expect(page.locator("#job-detail-status")).to_have_text("Status: STARTED")
    expect(steps).to_have_text(["Created", "Attempt 1: retry", "Attempt 2: running"])
    expect(page.locator("#job-detail").get_by_role("button", name="Cancel job")).to_be_visible()
