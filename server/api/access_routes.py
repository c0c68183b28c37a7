"""Admin API of IP records: the session log and the denied networks; and the 403 every refused call gets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from server.api.deps import AddressDep, AdminDep, CollectorDep
from server.collector import Collector
from server.errors import InvalidInput
from server.store import denylist, sessions

router = APIRouter(prefix="/api/v1", tags=["admin"])


class DeniedNetworkIn(BaseModel):
    cidr: Annotated[str, StringConstraints(min_length=2, max_length=64)]
    vendor: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    """None: refused for every caller; a vendor: for that vendor's agents and scoped accounts."""
    note: Annotated[str, StringConstraints(max_length=500)] = ""


class DeniedNetworkPublic(BaseModel):
    id: int
    cidr: str
    vendor: str | None
    note: str
    created_by: str
    created_at: str | None


class DenylistOut(BaseModel):
    items: list[DeniedNetworkPublic]
    refusals: list[dict[str, Any]] = Field(description="the latest refused (kind, address) pairs with their counts")


@router.get("/sessions", summary="Login sessions of reviewers and admins: address, country, ASN, start, end and how it ended")
def list_sessions(
    collector: CollectorDep,
    admin: AdminDep,
    user: Annotated[str | None, Query(max_length=128)] = None,
    address: Annotated[str | None, Query(max_length=45, description="an address or its start (203.0.113.)")] = None,
    country: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
    state: Annotated[str | None, Query(max_length=16, description=f"one of {', '.join(sessions.STATES)}")] = None,
    since: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=sessions.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=sessions.MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    return session_page(collector, user=user, address=address, country=country, state=state, since=since, limit=limit, offset=offset)


def session_page(collector: Collector, **filters: Any) -> dict[str, Any]:
    """One page of the session log (the API and the UI page share it)."""
    try:
        with collector.db.read() as conn:
            return sessions.page(conn, now=collector.clock(), asn=collector.asn, **filters)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@router.get("/denylist", response_model=DenylistOut, summary="Denied networks, collector-wide and per vendor, and the latest refusals")
def list_denied(collector: CollectorDep, admin: AdminDep) -> dict[str, Any]:
    with collector.db.read() as conn:
        return {"items": denylist.list_all(conn), "refusals": denylist.refusals(conn)}


@router.post("/denylist", status_code=201, response_model=DeniedNetworkPublic, summary="Refuse a CIDR range for agent calls and logins")
def add_denied(body: DeniedNetworkIn, collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        created = denylist.add(conn, cidr=body.cidr, vendor=body.vendor, note=body.note, actor=admin.name, address=address, now=collector.clock())
    collector.denied.invalidate()
    return created


@router.delete("/denylist/{entry_id}", summary="Lift a denied range")
def remove_denied(entry_id: Annotated[int, Path(ge=1, le=2**31 - 1)], collector: CollectorDep, admin: AdminDep, address: AddressDep) -> dict[str, Any]:
    with collector.db.write() as conn:
        denylist.remove(conn, entry_id=entry_id, actor=admin.name, address=address, now=collector.clock())
    collector.denied.invalidate()
    return {"ok": True}


def install_refusals(app: FastAPI) -> None:
    """Answer DeniedNetwork with 403 after counting it in ``denied_calls``, in a transaction of its
    own: the refused call's transaction has been rolled back by then."""

    @app.exception_handler(denylist.DeniedNetwork)
    async def refused(request: Request, exc: denylist.DeniedNetwork) -> JSONResponse:
        collector: Collector = request.app.state.collector
        if not exc.recorded:

            def record() -> None:
                with collector.db.write() as conn:
                    denylist.record_refusal(conn, kind=exc.kind, address=exc.address, vendor_id=exc.vendor_id, now=collector.clock())

            await to_thread.run_sync(record)
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
