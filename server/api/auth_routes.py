"""Logins for reviewers and admins: sessions as bearer tokens, failed attempts limited and audited (``logins``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from server.api import logins
from server.api.deps import AddressDep, CollectorDep, TokenDep, UserDep
from server.api.schemas import LoginIn, LoginOut, MeOut
from server.errors import Unauthorized
from server.store import addresses, audit
from server.store import users as user_store
from server.store.sql import iso

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/login", response_model=LoginOut, summary="Exchange a user name and password for a session token")
async def login(body: LoginIn, collector: CollectorDep, address: AddressDep) -> LoginOut:
    outcome = await logins.log_in(collector, name=body.username, password=body.password, address=address, via="api")
    if outcome is None:
        raise Unauthorized("wrong user name or password")
    user, token = outcome
    expires_at = collector.clock() + timedelta(hours=collector.settings.auth.session_hours)
    return LoginOut(token=token, expires_at=iso(expires_at) or "", user=user.name, role=user.role)


@router.post("/logout", summary="End the session whose token is sent")
def logout(collector: CollectorDep, user: UserDep, token: TokenDep, address: AddressDep) -> dict[str, Any]:
    now = collector.clock()
    with collector.db.write() as conn:
        user_store.revoke_token(conn, value=token, now=now)
        audit.append(conn, actor=user.name, action="user.logout", address=address, now=now)
    return {"ok": True}


@router.get("/me", response_model=MeOut, summary="Who the token belongs to")
def me(collector: CollectorDep, user: UserDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        history = addresses.user_history(conn, user_id=user.id)
    return {"user": user.name, "role": user.role, "ip_addresses": history}
