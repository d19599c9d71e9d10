"""The console's sessions and CSRF tokens, derived from the HTTP token (pure functions, no state).

A browser logs in once with the bearer token and gets a session cookie
``ISSUED.NONCE.MAC`` (MAC = HMAC-SHA256 keyed by the token): nothing is stored on the server, so
logging in costs no memory an unauthenticated client could exhaust, and a new token ends every
session. The cookie is ``HttpOnly`` and ``SameSite=Strict``.

A command is a POST that must carry, besides the session (or the bearer token), the CSRF token
of that session (HMAC of the session under the token, given to the page that the session loaded)
in ``X-Hamirror-CSRF``, and an ``Origin`` equal to the address the page was loaded from. A page of
another site can neither read the CSRF token nor forge the Origin header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie

COOKIE = "hamirror_session"
LIFETIME = 12 * 3600          # seconds a session lasts
CSRF_HEADER = "x-hamirror-csrf"


def _mac(token: str, purpose: str, text: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{text}".encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float) -> str:
    """A fresh session cookie value."""
    body = f"{int(now)}.{secrets.token_hex(8)}"
    return f"{body}.{_mac(token, 'session', body)}"


def session_valid(token: str, value: str | None, now: float) -> bool:
    """Whether ``value`` is a session this token issued and that has not expired."""
    if not value or value.count(".") != 2:
        return False
    issued, nonce, mac = value.split(".")
    if not issued.isdigit() or not hmac.compare_digest(mac, _mac(token, "session", f"{issued}.{nonce}")):
        return False
    return 0 <= now - int(issued) <= LIFETIME


def csrf_token(token: str, session: str) -> str:
    """The CSRF token of a session (``""`` for a client that sent the bearer token itself)."""
    return _mac(token, "csrf", session)


def csrf_valid(token: str, session: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), csrf_token(token, session).encode())


def session_cookie(headers: dict[str, str]) -> str | None:
    """The session cookie's value in a request's headers, or None."""
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def set_cookie(value: str) -> str:
    """The ``Set-Cookie`` header value for a new session."""
    return f"{COOKIE}={value}; Path=/; Max-Age={LIFETIME}; HttpOnly; SameSite=Strict"


def origin_problem(headers: dict[str, str]) -> str | None:
    """Why a state-changing request's origin is not the console's own, or None when it is.

    Browsers send ``Origin`` with every POST; a client that sends none is refused too (a script
    that means to post can say where from)."""
    origin, host = headers.get("origin"), headers.get("host")
    if not origin:
        return "no Origin header"
    if not host or origin not in (f"http://{host}", f"https://{host}"):
        return f"Origin {origin!r} is not this console ({host!r})"
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {headers['sec-fetch-site']!r}"
    return None
