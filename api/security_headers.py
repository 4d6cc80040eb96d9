"""Security headers on every HTTP answer (a plain ASGI layer: it only edits the header
section of ``http.response.start``).

- Everywhere: ``X-Content-Type-Options: nosniff`` (a JSON or text answer is never run as
  script or style), ``Referrer-Policy: same-origin`` and a ``Content-Security-Policy`` with
  ``frame-ancestors 'none'`` (no page of ours may be framed: no clickjacking).
- The web page (``/`` and ``/static/*``): a full policy. Only our own origin's script, style
  and connections; no inline script or style, no plugins, no ``<base>``, forms post only to
  us. The page is plain files (api/static) written for it: nothing inline, nothing third-party.
- The API's own answers (JSON, the calendar text, /metrics): ``default-src 'none'`` too, so
  an answer a browser is tricked into rendering as a document can load and run nothing.
- /schema (the OpenAPI viewer, Scalar): frame-ancestors only; the viewer is inline script
  that loads from a CDN, which a stricter policy would break.

``same-origin`` rather than ``no-referrer``: the page's URLs carry nothing secret, and under
``no-referrer`` a browser sends ``Origin: null`` on the page's own POSTs, which would blind any
check of the Origin header (CORS, a CSRF defence). Cross-origin requests still get no Referer.

A header the handler already set is left as it is: a route that needs its own policy keeps it.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

#: The web page's policy: every fetch directive is 'none' unless the page needs it.
PAGE_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",  # fetch() and the jobs' events streams (EventSource)
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    )
)
#: Everything else the API answers: data, never a document that loads anything.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
#: The OpenAPI viewer: inline script and a CDN, so only framing is refused.
SCHEMA_POLICY = "frame-ancestors 'none'"

#: On every answer, whatever its path.
COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def policy_for(path: str) -> str:
    """The Content-Security-Policy of the answer to ``path``."""
    if path == "/" or path == "/static" or path.startswith("/static/"):
        return PAGE_POLICY
    if path == "/schema" or path.startswith("/schema/"):
        return SCHEMA_POLICY
    return API_POLICY


def security_headers(app: ASGIApp) -> ASGIApp:
    """``app`` with the headers above added to each HTTP answer that lacks them."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        # The path as the client asked (routing may rewrite scope["path"] further in).
        added = (*COMMON, (b"content-security-policy", policy_for(scope["path"]).encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend((name, value) for name, value in added if name not in present)
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
