"""Who is looking at a UI page: the login session in a cookie, and the CSRF token of its forms.

The cookie holds only the ``dlpu_`` session token that ``users.login`` issued (HttpOnly,
SameSite=Lax, Secure over TLS, sent to ``/ui`` only), so logging out or an admin revoking it
ends the session everywhere. Every POST form carries a CSRF token derived from the session
token with HMAC: another site can neither read the cookie nor compute the token from it.
The login form, which has no session yet, uses a random double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from starlette.responses import Response

from server.api.deps import AddressDep, CollectorDep
from server.errors import Forbidden, Unauthorized
from server.store import addresses, denylist
from server.store import users as user_store
from server.store.users import User

SESSION_COOKIE = "dlp_session"
LOGIN_COOKIE = "dlp_login"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf"
HOME = "/ui/events"
_CSRF_CONTEXT = b"dlp-ui-csrf-v1"
STALE_FORM = "This form has expired or came from another page. Reload the page and try again."


class LoginRequired(Exception):
    """No valid session: the UI answers with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass(frozen=True)
class Viewer:
    user: User
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def safe_next(value: str | None) -> str:
    """Where to go after logging in: only a path of this UI, never another site."""
    if not value or len(value) > 2000 or "\\" in value or any(ord(ch) < 0x20 for ch in value):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or parts.path.startswith("/ui/login"):
        return HOME
    return value


def login_url(next_url: str) -> str:
    return f"/ui/login?next={quote(safe_next(next_url), safe='/')}"


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="lax", secure=request.url.scheme == "https")


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def check_login_nonce(request: Request, submitted: str) -> None:
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise Forbidden(STALE_FORM)


def _here(request: Request) -> str:
    if request.method != "GET":
        return HOME
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def viewer(request: Request, collector: CollectorDep, address: AddressDep) -> Viewer:
    """The logged-in user; each page view records their address, as API calls do."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired(_here(request))
    now = collector.clock()
    try:
        with collector.db.write() as conn:
            user = user_store.authenticate_token(conn, value=token, now=now)
            # A session opened before its network was denied is refused like the API's calls.
            collector.denied.check(conn, kind="ui", address=address, vendor_ids=user.vendor_ids)
            if address:
                addresses.record_user(conn, user_id=user.id, address=address, country=collector.country(address), now=now)
    except Unauthorized:
        raise LoginRequired(_here(request)) from None
    except denylist.DeniedNetwork as refused:
        with collector.db.write() as conn:
            denylist.record_refusal(conn, kind=refused.kind, address=refused.address, vendor_id=refused.vendor_id, now=now)
        raise
    found = Viewer(user, token)
    request.state.viewer = found
    return found


def admin(found: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    if not found.user.is_admin:
        raise Forbidden("This page is for admins. Ask an admin if you need something from it.")
    return found


async def _checked(request: Request, found: Viewer) -> Viewer:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not isinstance(submitted, str) or not hmac.compare_digest(submitted.encode(), found.csrf.encode()):
        raise Forbidden(STALE_FORM)
    return found


async def poster(request: Request, found: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """The logged-in user behind a POST whose CSRF token matches their session."""
    return await _checked(request, found)


async def admin_poster(request: Request, found: Annotated[Viewer, Depends(admin)]) -> Viewer:
    return await _checked(request, found)


ViewerDep = Annotated[Viewer, Depends(viewer)]
AdminDep = Annotated[Viewer, Depends(admin)]
PosterDep = Annotated[Viewer, Depends(poster)]
AdminPosterDep = Annotated[Viewer, Depends(admin_poster)]
