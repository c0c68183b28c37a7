"""Logging in and out of the review UI, with the API's failed-login limits and audit records."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from server.api import logins
from server.api.deps import AddressDep, CollectorDep
from server.errors import Forbidden, RateLimited
from server.store import audit
from server.store import users as user_store
from server.store.denylist import DeniedNetwork
from server.ui.render import UiRoute, redirect, render
from server.ui.session import (
    HOME,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    PosterDep,
    check_login_nonce,
    clear_cookie,
    new_login_nonce,
    safe_next,
    set_cookie,
)

router = APIRouter(route_class=UiRoute, include_in_schema=False)
_LOGIN_NONCE_AGE = 3600


def _login_page(request: Request, *, next_url: str, message: str | None = None, username: str = "", status: int = 200) -> Response:
    nonce = new_login_nonce()
    response = render(request, "login.html", {"next": next_url, "message": message, "username": username, "nonce": nonce}, status=status)
    set_cookie(request, response, LOGIN_COOKIE, nonce, max_age=_LOGIN_NONCE_AGE)
    return response


@router.get("/")
def root() -> Response:
    return redirect(HOME)


@router.get("/ui")
@router.get("/ui/")
def ui_root() -> Response:
    return redirect(HOME)


@router.get("/ui/login")
def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    return _login_page(request, next_url=safe_next(next))


@router.post("/ui/login")
async def login(
    request: Request,
    collector: CollectorDep,
    address: AddressDep,
    username: Annotated[str, Form(max_length=128)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    nonce: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    target = safe_next(next)
    try:
        check_login_nonce(request, nonce)
    except Forbidden as exc:
        return _login_page(request, next_url=target, message=str(exc), username=username, status=403)
    if not username or not password:
        return _login_page(request, next_url=target, message="Enter your user name and password.", username=username, status=422)
    try:
        outcome = await logins.log_in(collector, name=username, password=password, address=address, via="ui")
    except RateLimited:
        message = "Too many failed logins from this address. Wait a few minutes, then try again."
        return _login_page(request, next_url=target, message=message, username=username, status=429)
    except DeniedNetwork:
        message = "Logins from this network are refused. Ask an administrator if this is wrong."
        return _login_page(request, next_url=target, message=message, username=username, status=403)
    if outcome is None:
        return _login_page(request, next_url=target, message="Wrong user name or password.", username=username, status=401)
    _user, token = outcome
    lifetime = timedelta(hours=collector.settings.auth.session_hours)
    response = redirect(target)
    set_cookie(request, response, SESSION_COOKIE, token, max_age=int(lifetime.total_seconds()))
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/ui/logout")
def logout(request: Request, collector: CollectorDep, viewer: PosterDep, address: AddressDep) -> Response:
    now = collector.clock()
    with collector.db.write() as conn:
        user_store.revoke_token(conn, value=viewer.token, now=now)
        audit.append(conn, actor=viewer.user.name, action="user.logout", details={"via": "ui"}, address=address, now=now)
    response = redirect("/ui/login")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
