"""Route dependencies: the collector, the caller's address, and who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.collector import Collector
from server.errors import Forbidden, Unauthorized
from server.netaddr import client_address
from server.store import addresses
from server.store import users as user_store
from server.store.users import User

_bearer = HTTPBearer(auto_error=False, description="An API token (scripts), a login session token, or an agent credential.")


# The pure dependencies are coroutines: FastAPI runs a plain ``def`` dependency in the thread
# pool, and those hand-offs were a fifth of a heartbeat's cost.
async def get_collector(request: Request) -> Collector:
    return request.app.state.collector


async def caller_address(request: Request, collector: Annotated[Collector, Depends(get_collector)]) -> str | None:
    peer = request.client.host if request.client else None
    return client_address(peer, ",".join(request.headers.getlist("x-forwarded-for")) or None, collector.trusted_proxies)


async def bearer_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str | None:
    return credentials.credentials if credentials else None


def current_user(
    collector: Annotated[Collector, Depends(get_collector)],
    token: Annotated[str | None, Depends(bearer_token)],
    address: Annotated[str | None, Depends(caller_address)],
) -> User:
    """The reviewer or admin behind the token; each call's address is recorded for that user.

    Calls from a denied network (the collector-wide list, and a scoped account's vendors' lists)
    are refused with 403.
    """
    if token is None:
        raise Unauthorized("send Authorization: Bearer <api token>")
    now = collector.clock()
    with collector.db.write() as conn:
        user = user_store.authenticate_token(conn, value=token, now=now)
        # A denied network is refused for a user's calls as for logins (DeniedNetwork: 403, recorded by the app).
        collector.denied.check(conn, kind="api", address=address, vendor_ids=user.vendor_ids)
        if address:
            addresses.record_user(conn, user_id=user.id, address=address, country=collector.country(address), now=now)
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


CollectorDep = Annotated[Collector, Depends(get_collector)]
AddressDep = Annotated[str | None, Depends(caller_address)]
TokenDep = Annotated[str | None, Depends(bearer_token)]
UserDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(admin_user)]
