"""The web page locked down, in the machine's Chromium against the real API and worker
processes: its security headers, the page working under its Content-Security-Policy with no
violation reported, and the page with API keys turned on (API_KEYS): a 401 shown with a way to
the key field, then, with the key entered, a todo created and a calendar job followed by
polling (an EventSource cannot send the key) and downloaded."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import icalendar
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.e2e.test_web_page import add_todo, browser  # noqa: F401 (browser: a fixture)
from tests.processes import Process, free_port, start_api, start_worker
from tests.services import ROOT

pytestmark = pytest.mark.e2e

SHOTS = Path(ROOT, "test-artifacts", "page-security")

#: Recorded in the page before its own scripts run: every violation of its policy.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


@dataclass
class Watched:
    """A page, and what its console said about the Content-Security-Policy."""

    page: Page
    console: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def violations(self) -> list[str]:
        return [*self.page.evaluate("window.cspViolations"), *self.console]


def watched_page(chromium: Browser, base_url: str) -> Iterator[Watched]:
    """A page of ``base_url`` whose CSP violations and console are recorded."""
    # bypass_csp stays False (Playwright's default): the browser enforces the policy.
    context = chromium.new_context(base_url=base_url, accept_downloads=True, timezone_id="UTC")
    page = context.new_page()
    page.add_init_script(RECORD_VIOLATIONS)
    watched = Watched(page)
    page.on("console", watched.on_console)
    yield watched
    context.close()


@pytest.fixture
def watched(browser: Browser, api: str) -> Iterator[Watched]:  # noqa: F811 (the fixture)
    yield from watched_page(browser, api)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def downloaded_summaries(page: Page, tmp_path: Path) -> list[str]:
    """Download the exported calendar through the page's link: its events' summaries."""
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download taskoverflow.ics").click()
    saved = tmp_path / "taskoverflow.ics"
    download_info.value.save_as(saved)
    events = icalendar.Calendar.from_ical(saved.read_bytes()).walk("VEVENT")
    return [str(event["SUMMARY"]) for event in events]


def open_the_finished_job_in_the_console(page: Page) -> None:
    page.get_by_role("button", name="Open console").click()
    expect(page.locator("#console-jobs li")).to_have_count(1)
    page.locator("#console-jobs button").click()
    expect(page.locator("#job-detail-status")).to_have_text("Status: SUCCESS")


def directives(policy: str) -> dict[str, list[str]]:
    return {name: sources for name, *sources in (part.split() for part in policy.split(";"))}


def test_security_headers_of_the_page_its_files_the_schema_and_the_api(api: str):
    with httpx.Client(base_url=api, timeout=10) as client:
        for path in ("/", "/static/app.js", "/static/auth.js", "/static/style.css"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            policy = directives(answer.headers["content-security-policy"])
            assert policy["default-src"] == ["'none'"], path
            assert policy["script-src"] == ["'self'"], path
            assert policy["style-src"] == ["'self'"], path
            assert policy["connect-src"] == ["'self'"], path
            assert policy["frame-ancestors"] == ["'none'"], path
            assert policy["base-uri"] == ["'none'"], path
            assert policy["object-src"] == ["'none'"], path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["referrer-policy"] == "same-origin", path
        # nosniff only helps if the types are right: a script is served as one.
        assert "javascript" in client.get("/static/app.js").headers["content-type"]
        assert client.get("/static/style.css").headers["content-type"].startswith("text/css")

        # The OpenAPI viewer (inline script, a CDN): not the page's policy, but never framed.
        schema = client.get("/schema")
        assert schema.status_code == 200
        assert schema.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert schema.headers["x-content-type-options"] == "nosniff"

        # An API answer: data that loads nothing and is never sniffed into something else.
        todos = client.get("/api/v1/todos")
        assert todos.status_code == 200
        assert todos.headers["content-type"].startswith("application/json")
        assert todos.headers["x-content-type-options"] == "nosniff"
        assert directives(todos.headers["content-security-policy"]) == {
            "default-src": ["'none'"],
            "frame-ancestors": ["'none'"],
        }
        assert client.get("/api/v1/health").headers["x-content-type-options"] == "nosniff"


def test_the_page_works_under_its_policy_and_breaks_none_of_it(
    watched: Watched, service_env: dict[str, str], processes: list[Process], tmp_path: Path
):
    """Add a todo, export (on the events stream), download, open the console: no violation.
    Then an inline script added to the page does not run, and is reported: the policy is
    enforced and the listener hears it, so the "no violation" above means something."""
    processes.append(start_worker(service_env))
    page = watched.page
    sent_keys: list[str | None] = []
    page.on("request", lambda request: sent_keys.append(request.headers.get("authorization")))
    page.goto("/")
    add_todo(page, "Under a strict policy", "nothing inline", "2030-04-19T14:00")
    # Keys off: the key field is folded away and nothing sends a key.
    expect(page.locator("#settings")).not_to_have_attribute("open", "")
    expect(page.get_by_text("Enter an API key")).to_have_count(0)

    page.get_by_role("button", name="Export calendar").click()
    expect(page.locator("#export-status")).to_have_text("Export SUCCESS", timeout=30_000)
    assert downloaded_summaries(page, tmp_path) == ["Under a strict policy"]
    open_the_finished_job_in_the_console(page)
    page.locator("#settings summary").click()  # the key field opens, and shows no key
    expect(page.locator("#api-key-state")).to_have_text("No key set.")
    expect(page.locator("#console-error")).to_be_hidden()
    shot(page, "0-keys-off")
    expect(page.locator("#error")).to_be_hidden()

    assert watched.violations() == []
    assert sent_keys
    assert not any(sent_keys), sent_keys

    # The canary: inline script is refused and reported.
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true";
            document.body.append(script);
        }"""
    )
    page.wait_for_function("window.cspViolations.length > 0")
    assert page.evaluate("window.inlineRan") is None
    assert watched.violations()[0].startswith("script-src")


# --- API keys on ------------------------------------------------------------------------------


@dataclass
class KeyedApi:
    url: str
    key: str
    env: dict[str, str]


@pytest.fixture
def keyed_api(service_env: dict[str, str], processes: list[Process]) -> KeyedApi:
    """An API process with one API key accepted (API_KEYS holds its sha256, not the key)."""
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    env = {**service_env, "API_KEYS": f"page-test:{digest}"}
    port = free_port()
    processes.append(start_api(env, port))
    return KeyedApi(f"http://127.0.0.1:{port}", key, env)


@pytest.fixture
def keyed_page(browser: Browser, keyed_api: KeyedApi) -> Iterator[Watched]:  # noqa: F811
    yield from watched_page(browser, keyed_api.url)


def test_with_keys_on_the_page_asks_for_a_key_then_works_with_it(
    keyed_page: Watched, keyed_api: KeyedApi, processes: list[Process], tmp_path: Path
):
    page = keyed_page.page
    processes.append(start_worker(keyed_api.env))
    page.goto("/")
    expect(page.locator("#empty")).to_be_visible()  # reading todos needs no key
    expect(page.locator("#error")).to_be_hidden()

    # No key: the write is refused, the page shows the API's own reason and the way to a key.
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.get_by_label("Title").fill("Needs a key")
        page.get_by_role("button", name="Add todo").click()
    assert refused.value.status == 401
    assert refused.value.headers["www-authenticate"].startswith("Bearer")
    reason = refused.value.json()["error"]
    alert = page.locator("#error")
    expect(alert).to_contain_text(f"Could not add the todo: {reason}")
    expect(page.locator(".todo")).to_have_count(0)

    # The console's job endpoints are refused the same way.
    page.get_by_role("button", name="Open console").click()
    expect(page.locator("#console-error")).to_contain_text("Could not refresh the console")
    expect(page.locator("#console-error").get_by_role("button")).to_have_text("Enter an API key")
    shot(page, "1-refused-without-a-key")

    # The way to the key: it opens the key field and puts the cursor in it.
    alert.get_by_role("button", name="Enter an API key").click()
    key_field = page.get_by_label("API key", exact=True)
    expect(page.locator("#settings")).to_have_attribute("open", "")
    expect(key_field).to_be_focused()
    shot(page, "2-key-field")

    # A wrong key: refused too, and said so.
    key_field.fill("not-the-key")
    page.get_by_role("button", name="Use key").click()
    expect(alert).to_be_hidden()  # a new key: the old refusal no longer stands
    page.get_by_role("button", name="Add todo").click()
    expect(alert).to_contain_text("Could not add the todo:")
    expect(alert.get_by_role("button", name="Enter an API key")).to_be_visible()

    # The key: every request the page makes from now on carries it.
    sent: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda request: sent.append((request.url, request.headers.get("authorization"))),
    )
    key_field.fill(keyed_api.key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#api-key-state")).to_have_text(
        "A key is set for this tab and sent with every request."
    )
    expect(key_field).to_have_value("")  # not left on show
    add_todo(page, "Needs a key", "entered", "2030-04-19T14:00")
    expect(alert).to_be_hidden()

    page.reload()  # the key is kept for the tab
    expect(page.locator(".todo .title")).to_have_text(["Needs a key"])
    expect(page.locator("#api-key-state")).to_contain_text("A key is set")

    # The export: followed by polling its status URL, never the events stream.
    page.get_by_role("button", name="Export calendar").click()
    expect(page.locator("#export-status")).to_have_text("Export SUCCESS", timeout=30_000)
    urls = [url for url, _ in sent]
    assert [url for url in urls if url.endswith("/status")], urls
    assert not [url for url in urls if url.endswith("/events")], urls
    assert downloaded_summaries(page, tmp_path) == ["Needs a key"]

    # The console with the key: the job is listed and its details load.
    open_the_finished_job_in_the_console(page)
    expect(page.locator("#console-error")).to_be_hidden()
    shot(page, "3-with-the-key")

    api_calls = [(url, auth) for url, auth in sent if "/api/v1/" in url]
    assert api_calls
    assert all(auth == f"Bearer {keyed_api.key}" for _, auth in api_calls), api_calls
    assert keyed_page.violations() == []

    # Forgotten: writes are refused again.
    page.locator("#settings summary").click()  # folded again since the reload
    page.get_by_role("button", name="Forget key").click()
    expect(page.locator("#api-key-state")).to_have_text("No key set.")
    # click, not check(): check() insists the box stays ticked, and the page rightly puts it
    # back as soon as the refusal arrives, which on a busy machine is before check() looks.
    page.get_by_role("checkbox", name="Needs a key").click()
    expect(alert).to_contain_text("Could not update the todo:")
    expect(page.get_by_role("checkbox", name="Needs a key")).not_to_be_checked()
