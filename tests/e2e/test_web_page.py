"""The web page in a real browser (the machine's Chromium) against the real API and worker."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import icalendar
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from tests.integration.jobs import insert_todos
from tests.processes import Process, start_worker
from tests.services import ROOT

pytestmark = pytest.mark.e2e

#: The machine's Chromium, or the one CHROMIUM_PATH names. Never a downloaded browser build.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
ARTIFACTS = Path(ROOT, "artifacts")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CHROMIUM_PATH"):  # named, so wanted: a wrong path is an error
            pytest.fail(f"CHROMIUM_PATH={CHROMIUM} is not an executable Chromium")
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian; .ci/run does), "
            "or set CHROMIUM_PATH to a Chromium binary"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, api: str) -> Iterator[Page]:
    context = browser.new_context(base_url=api, accept_downloads=True, timezone_id="UTC")
    page = context.new_page()
    yield page
    context.close()


def add_todo(page: Page, title: str, description: str = "", deadline: str = "") -> None:
    page.get_by_label("Title").fill(title)
    page.get_by_label("Description").fill(description)
    if deadline:
        page.get_by_label("Deadline").fill(deadline)
    page.get_by_role("button", name="Add todo").click()
    expect(page.locator(".todo .title").first).to_have_text(title)


def test_create_toggle_delete_and_export(
    page: Page, api: str, service_env: dict[str, str], processes: list[Process], tmp_path: Path
):
    """Two todos (one undated), toggle, delete, export (followed on the job's events
    stream), download the .ics and parse it."""
    processes.append(start_worker(service_env))
    page.goto("/")
    expect(page.get_by_role("heading", name="TaskOverflow")).to_be_visible()
    expect(page.locator("#empty")).to_be_visible()

    add_todo(page, "Submit report", "chapter 3; figures, tables", "2030-04-19T14:00")
    add_todo(page, "Call the bank")  # no deadline
    add_todo(page, "Delete me")
    titles = page.locator(".todo .title")
    expect(titles).to_have_text(["Delete me", "Call the bank", "Submit report"])
    expect(page.locator(".todo", has_text="Submit report").locator(".meta")).to_contain_text("2030")

    page.get_by_role("checkbox", name="Call the bank").check()
    expect(page.locator(".todo.done .title")).to_have_text("Call the bank")
    page.get_by_role("button", name="Delete Delete me").click()
    expect(titles).to_have_text(["Call the bank", "Submit report"])

    page.reload()  # what the server kept, not just what the page shows
    expect(titles).to_have_text(["Call the bank", "Submit report"])
    expect(page.get_by_role("checkbox", name="Call the bank")).to_be_checked()

    # How the page follows the job: its events stream, not the status URL polled.
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with page.expect_response("**/api/v1/todos/ical") as submitted:
        page.get_by_role("button", name="Export calendar").click()
    job_id = submitted.value.json()["task_id"]
    expect(page.locator("#export-status")).to_have_text("Export SUCCESS", timeout=30_000)
    assert f"{api}/api/v1/jobs/{job_id}/events" in requested, requested
    assert not [url for url in requested if url.endswith("/status")], requested
    expect(page.locator("#export-progress")).to_be_hidden()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download taskoverflow.ics").click()
    saved = tmp_path / "taskoverflow.ics"
    download_info.value.save_as(saved)

    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 900, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)

    events = list(icalendar.Calendar.from_ical(saved.read_bytes()).walk("VEVENT"))
    assert [str(e["SUMMARY"]) for e in events] == ["Submit report"]
    assert str(events[0]["DESCRIPTION"]) == "chapter 3; figures, tables"
    assert events[0].decoded("DTSTART").isoformat() == "2030-04-19T14:00:00+00:00"


def test_export_shows_the_jobs_progress_live(
    page: Page, engine: Engine, service_env: dict[str, str], processes: list[Process]
):
    """A calendar that takes seconds: the page shows its stage and count as they change."""
    processes.append(start_worker(service_env))
    page.goto("/")
    expect(page.locator("#empty")).to_be_visible()
    # Added behind the page's back: it lists none of them (300,000 list items would keep the
    # browser busy for longer than the job runs).
    insert_todos(engine, 300_000)
    # Everything the export panel showed, recorded as it changed (a job of a few seconds
    # shows its progress for too short a time to catch by looking now and then).
    page.evaluate(
        """() => {
            window.seen = [];
            const record = () => {
                const text = document.getElementById("export-progress-text");
                const bar = document.getElementById("export-progress");
                window.seen.push([
                    document.getElementById("export-status").textContent,
                    text.hidden ? null : text.textContent,
                    bar.hidden ? null : bar.max,
                ]);
            };
            new MutationObserver(record).observe(
                document.querySelector("#export-heading").parentElement,
                { subtree: true, childList: true, characterData: true, attributes: true },
            );
        }"""
    )
    page.get_by_role("button", name="Export calendar").click()
    expect(page.locator("#export-status")).to_have_text("Export SUCCESS", timeout=60_000)
    seen = [tuple(state) for state in page.evaluate("window.seen")]
    running = [(text, bar) for status, text, bar in seen if status == "Export STARTED" and text]
    assert running, seen
    assert all(re.fullmatch(r"\w+: [\d,]+ of 300,000", text) for text, _ in running), running
    assert all(bar == 300_000 for _, bar in running), running
    detail = page.locator("#export-progress-text")
    expect(detail).to_be_hidden()
    expect(page.get_by_role("link", name="Download taskoverflow.ics")).to_be_visible()


def test_export_polls_the_status_url_without_eventsource(
    page: Page, service_env: dict[str, str], processes: list[Process]
):
    """A browser without EventSource: the page polls the job's status URL instead."""
    processes.append(start_worker(service_env))
    page.add_init_script("delete window.EventSource")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/")
    page.get_by_role("button", name="Export calendar").click()
    expect(page.locator("#export-status")).to_have_text("Export SUCCESS", timeout=30_000)
    expect(page.get_by_role("link", name="Download taskoverflow.ics")).to_be_visible()
    assert [url for url in requested if url.endswith("/status")], requested
    assert not [url for url in requested if url.endswith("/events")], requested


def test_api_errors_are_shown_to_the_user(page: Page):
    """A refused todo (a title over 80 characters) shows the API's message in the page."""
    page.goto("/")
    page.get_by_label("Title").evaluate("el => el.removeAttribute('maxlength')")
    add_title = "x" * 81
    page.get_by_label("Title").fill(add_title)
    page.get_by_role("button", name="Add todo").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Could not add the todo: title must be at most 80 characters (got 81)"
    )
    expect(page.locator(".todo")).to_have_count(0)


def test_page_is_usable_by_keyboard_on_a_phone_width_screen(page: Page):
    """At 360 px wide, a todo can be added with the keyboard alone and nothing overflows."""
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Title")).to_be_focused()
    page.keyboard.type("Typed without a mouse")
    page.keyboard.press("Enter")
    expect(page.locator(".todo .title")).to_have_text(["Typed without a mouse"])
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360
