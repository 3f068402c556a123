"""Security headers on every response the gateway's HTTPS port sends: pages, JSON, errors.

A plain ASGI middleware rather than one per route or per renderer, so a new
route, a refusal raised deep in a dependency, a static file or a crash cannot
go out without them. Headers a route set itself (a page's own
Content-Security-Policy, the event stream's Cache-Control) are kept.

- `Strict-Transport-Security`: the port only speaks HTTPS; a browser that has
  been here once never tries plain HTTP (and a stripped connection) again.
- `X-Content-Type-Options: nosniff`: a JSON body carrying a tenant's name is
  never guessed to be HTML or script.
- `Cache-Control: no-store`: personal data stays out of browser and proxy caches.
- `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no clickjacking.
- `Referrer-Policy: same-origin`: person ids in our URLs never leak to other
  sites, while same-origin form posts still carry a real `Origin` (with
  `no-referrer` browsers send `Origin: null`, which the login check refuses).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

HSTS_S = 365 * 86400
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", f"max-age={HSTS_S}".encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"same-origin"),
)
"""Each is added unless the response already has that header."""
_CRASH_BODY = b'{"detail":{"error":"internal","message":"the gateway failed to answer"}}'


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response, including the 500 of a crash."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        try:
            await self._app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            # Starlette's own 500 is sent outside every middleware, so without headers:
            # answer here, then let the server log the exception as before.
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _CRASH_BODY})
            raise


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus each security header it lacks (names compared case-insensitively)."""
    present = {name.lower() for name, _value in headers}
    return headers + [(name, value) for name, value in SECURITY_HEADERS if name not in present]
