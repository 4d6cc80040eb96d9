"""HEAD and the ``Allow`` header as RFC 9110 defines them, for every route (Litestar 2 does
neither on its own).

- HEAD (RFC 9110 section 9.3.2) is answered wherever GET is: the request is served as a GET
  and only the header section of the answer is sent (same status, same header fields,
  Content-Length included, no content). Litestar 2 routes HEAD only to explicit ``@head``
  handlers, and answers 405 everywhere else.
- ``Allow`` (section 10.2.1) lists every method the resource supports, HEAD included wherever
  GET is. Litestar's automatic OPTIONS answer lists only the methods of the first handler
  registered on a path (litestar-org/litestar#4169, fixed in 3.0 only).

This must act before Litestar routes a request (a HEAD would be refused by routing), so it is
not a Litestar middleware (those run after routing): ``api.app`` puts it in front of the app.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send


def allow_header(methods: Iterable[str]) -> str:
    """The ``Allow`` value for a resource with ``methods``: HEAD wherever GET is."""
    supported = {method.strip().upper() for method in methods if method.strip()}
    if "GET" in supported:
        supported.add("HEAD")
    return ", ".join(sorted(supported))


def rfc9110_methods(app: Litestar, inner: ASGIApp) -> ASGIApp:
    """``inner`` (the Litestar app's entry point) with HEAD answered and ``Allow`` complete."""
    # Path template (as routing reports it) -> Allow; built on first use, once routes exist.
    allow_by_template: dict[str, str] = {}

    def allow_for(template: str) -> str | None:
        if not allow_by_template:
            for route in app.routes:
                if isinstance(route, HTTPRoute):
                    allow_by_template[route.path_format] = allow_header(route.methods)
        return allow_by_template.get(template)

    async def head_as_get(scope: HTTPScope, receive: Receive, send: Send) -> None:
        answered = False

        async def end() -> None:
            nonlocal answered
            answered = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def send_header_section_only(message: Message) -> None:
            if answered:
                return
            if message["type"] == "http.response.start":
                await send(message)
                if not any(name.lower() == b"content-length" for name, _ in message["headers"]):
                    # A stream (a job's events): its header section is the whole answer, now,
                    # not when the stream would end (a job that never finishes, never).
                    await end()
            elif not message.get("more_body", False):
                # The last body message (or a file send) ends the answer, with no content.
                await end()

        async def receive_until_answered() -> ReceiveMessage:
            # Once answered, the client has what it asked for: a stream stops as if it left.
            return {"type": "http.disconnect"} if answered else await receive()

        # A copy: the access log around us still sees the method the client sent.
        await inner({**scope, "method": "GET"}, receive_until_answered, send_header_section_only)

    async def options_with_full_allow(scope: HTTPScope, receive: Receive, send: Send) -> None:
        async def send_with_allow(message: Message) -> None:
            # Routing has filled in the path template of the resource by now.
            template = scope.get("path_template")
            allow = allow_for(template) if isinstance(template, str) else None
            if message["type"] == "http.response.start" and allow is not None:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message["headers"] = [*headers, (b"allow", allow.encode("latin-1"))]
            await send(message)

        await inner(scope, receive, send_with_allow)

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        method = cast("HTTPScope", scope)["method"] if scope["type"] == "http" else None
        if method == "HEAD":
            await head_as_get(cast("HTTPScope", scope), receive, send)
        elif method == "OPTIONS":
            await options_with_full_allow(cast("HTTPScope", scope), receive, send)
        else:
            await inner(scope, receive, send)

    return entry
