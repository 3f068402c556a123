"""Login CSRF: a page on another site must not log a browser in (or set the gateway up).

The session's own CSRF token (`auth.csrf_token`) cannot guard the forms that
create the session. Two checks do, together:

- Fetch metadata: a browser says where a request comes from. `Sec-Fetch-Site`
  other than same-origin (or none: typed by the user), or an `Origin` that is
  not this host (`null` included), is refused. Clients that send neither
  (terminals, scripts, curl) are not browsers driven by another site.
- A pre-session token for the login and setup forms, for browsers that send
  neither header: the login page sets a random value in a `__Host-` cookie
  (Secure, Path=/, no Domain: no sibling host or plain-HTTP page can plant one)
  and puts its HMAC, under a key that never leaves this process, in a hidden
  field; the post must bring both. Another site can neither read the cookie
  nor forge the field. A restart makes an open login page stale: reloading it
  is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "__Host-rentgate_login"
FIELD = "login_token"
COOKIE_S = 3600
_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
SAME_SITE = frozenset({"same-origin", "none"})


def cross_site(request: Request) -> str | None:
    """Why an unsafe request looks sent by another site, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return f"Sec-Fetch-Site: {site[:32]}"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "").lower()
        if origin == "null" or urlsplit(origin).netloc.lower() != host:
            return "Origin is not this gateway"
    return None


class PreSession:
    """The login and setup forms' token (see the module docstring)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def begin(self, request: Request) -> tuple[str, str]:
        """The cookie value to set (the request's own if it has one) and the form's field."""
        value = request.cookies.get(COOKIE, "")
        if not _VALUE.match(value):
            value = secrets.token_urlsafe(32)
        return value, self._sign(value)

    def matches(self, request: Request, presented: str) -> bool:
        """Whether the posted field is the HMAC of the posted cookie (constant time)."""
        value = request.cookies.get(COOKIE, "")
        if not _VALUE.match(value) or not presented:
            return False
        return hmac.compare_digest(self._sign(value).encode(), presented.encode("utf-8"))

    def _sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def set_cookie(response: Response, value: str) -> None:
    """The pre-session cookie: HttpOnly, Secure, SameSite=Strict, `__Host-` (Path=/)."""
    response.set_cookie(
        COOKIE, value, max_age=COOKIE_S, path="/", secure=True, httponly=True, samesite="strict"
    )


def forget(response: Response) -> None:
    """Drop the cookie once it has done its job (the session exists)."""
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
