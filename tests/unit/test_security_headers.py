"""api.security_headers around a Litestar app with the real page routes (api/static), an
OpenAPI viewer at /schema and a few API-like routes, in process (no services)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from litestar import Litestar, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.routes.page import STATIC_DIR, page_routes
from api.security_headers import API_POLICY, PAGE_POLICY, SCHEMA_POLICY, security_headers


@get("/api/v1/todos")
async def todos() -> list[dict[str, str]]:
    return [{"title": "x"}]


@get("/api/v1/own-policy")
async def own_policy() -> Response[str]:
    """A handler that sets its own policy and referrer: both must be left as they are."""
    return Response(
        "x",
        headers={"Content-Security-Policy": "sandbox", "Referrer-Policy": "no-referrer"},
    )


def wrapped_app() -> ASGIApp:
    app = Litestar(
        route_handlers=[todos, own_policy, *page_routes()],
        openapi_config=OpenAPIConfig(
            title="t", version="1", path="/schema", render_plugins=[ScalarRenderPlugin()]
        ),
    )
    return security_headers(app)


def fetch(app: ASGIApp, path: str, method: str = "GET") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def app() -> ASGIApp:
    return wrapped_app()


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: sources}."""
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} twice in {policy!r}"
        parsed[name] = sources
    return parsed


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css", "/static/missing"])
def test_the_page_and_its_files_get_the_full_policy(app: ASGIApp, path: str):
    response = fetch(app, path)
    assert response.headers["content-security-policy"] == PAGE_POLICY
    policy = directives(PAGE_POLICY)
    # Nothing inline, nothing from another origin, and no way around either.
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src", "img-src", "form-action"):
        assert policy[directive] == ["'self'"], directive
    for directive in ("base-uri", "object-src", "frame-ancestors"):
        assert policy[directive] == ["'none'"], directive
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


def test_the_page_needs_nothing_its_policy_refuses():
    """No inline script, style or handler in the page's files, and nothing fetched from
    another origin (what the policy would block; the browser test sees it for real)."""
    html = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.I)
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://", text), f"{path.name} names another origin"
        assert "innerHTML" not in text, path.name
        assert "eval(" not in text, path.name


def test_schema_gets_frame_ancestors_only(app: ASGIApp):
    """The OpenAPI viewer is inline script loading from a CDN: the page's policy would break
    it. It may still not be framed."""
    viewer = fetch(app, "/schema")
    assert viewer.status_code == 200
    assert "<script" in viewer.text  # the viewer as Litestar renders it: inline script
    assert viewer.headers["content-security-policy"] == SCHEMA_POLICY == "frame-ancestors 'none'"
    assert viewer.headers["x-content-type-options"] == "nosniff"
    assert viewer.headers["referrer-policy"] == "same-origin"
    document = fetch(app, "/schema/openapi.json")
    assert document.headers["content-security-policy"] == SCHEMA_POLICY


@pytest.mark.parametrize("path", ["/api/v1/todos", "/api/v1/nowhere", "/schemas", "/static-not"])
def test_api_answers_load_nothing_and_may_not_be_framed(app: ASGIApp, path: str):
    response = fetch(app, path)
    assert response.headers["content-security-policy"] == API_POLICY
    assert directives(API_POLICY) == {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


def test_a_header_the_handler_set_is_kept(app: ASGIApp):
    response = fetch(app, "/api/v1/own-policy")
    assert response.headers.get_list("content-security-policy") == ["sandbox"]
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_each_header_once_and_the_rest_untouched(app: ASGIApp):
    """Wrapped twice (harmless), each header still appears once; the handler's own headers
    (content type, length) pass unchanged."""
    twice = security_headers(app)
    response = fetch(twice, "/static/app.js")
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy"):
        assert len(response.headers.get_list(name)) == 1, name
    assert "javascript" in response.headers["content-type"]
    assert int(response.headers["content-length"]) == len(response.content)


def test_other_scopes_pass_through_untouched():
    """A websocket's messages are not HTTP answers: sent on as they came."""
    sent: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept", "headers": []})  # type: ignore[arg-type]

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("not read")

    scope = {"type": "websocket", "path": "/", "headers": []}
    asyncio.run(security_headers(inner)(scope, receive, send))  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.accept", "headers": []}]
