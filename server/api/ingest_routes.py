"""The agent API's event ingest: the body guard, batch parsing, then one transaction.

Thin: limits and authentication here, storage in server/store/ingest.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection

from server import credentials
from server.api.agent_routes import record_agent_call
from server.api.bodies import Guard
from server.api.deps import AddressDep, CollectorDep, TokenDep
from server.api.schemas import LONE_SURROGATE, BatchIn, BatchOut, EventIn
from server.collector import Collector
from server.errors import Forbidden, TooLarge, Unauthorized
from server.keys import marks_key
from server.store import agents
from server.store import ingest as event_ingest
from server.store.agents import AgentIdentity

router = APIRouter(prefix="/api/v1", tags=["agent"])


def credential_guard(collector: Collector) -> Guard:
    """The ingest body's guard (``BoundedBodies``): a caller without a valid agent credential is
    refused before the collector reads or gunzips a byte of its body, let alone parses it.

    A credential is confirmed from this process's memory of credentials confirmed lately, or of
    agents (``Liveness.vouch``), else by one read. The ingest transaction still authenticates
    (from memory where it is fresh, ``Liveness.identify``), so a busy agent costs no second
    transaction, and a stranger costs one indexed read at most, never decompression or parsing.
    """

    async def guard(authorization: bytes | None) -> tuple[int, str] | None:
        scheme, _, value = (authorization or b"").decode("latin-1").partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or credentials.parse_token(token, credentials.AGENT_KIND) is None:
            return Unauthorized.status_code, "missing or malformed agent credential"
        if token in collector.confirmed_agents or collector.liveness.vouch(token):
            return None

        def confirm() -> None:
            with collector.db.read() as conn:
                agents.authenticate(conn, value=token)

        try:
            await to_thread.run_sync(confirm)
        except (Unauthorized, Forbidden) as exc:
            return exc.status_code, str(exc)
        collector.confirmed_agents.add(token)
        return None

    return guard


# Batches are read from the raw body by pydantic-core (JSON parsing and validation in one pass,
# no Python dicts built first); the schema is published in the OpenAPI document by app.py.
BATCH_REQUEST_BODY = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}}}
_PARSE_ON_LOOP_BYTES = 256 << 10


async def batch_body(request: Request) -> BatchIn:
    """The request body as a validated batch (the body guard has confirmed the caller); errors are
    FastAPI's usual 422, with lone surrogates (which the JSON parser refuses as bad escapes)
    named for what they are."""
    raw = await request.body()
    try:
        if len(raw) <= _PARSE_ON_LOOP_BYTES:
            return BatchIn.model_validate_json(raw)
        return await to_thread.run_sync(BatchIn.model_validate_json, raw)
    except ValidationError as exc:
        raise RequestValidationError([_readable(error) for error in exc.errors(include_url=False, include_input=False)]) from None


def _readable(error: Any) -> dict[str, Any]:
    error = {**error, "loc": ("body", *error.get("loc", ()))}
    if error.get("type") == "json_invalid" and ("surrogate" in error["msg"] or "hex escape" in error["msg"]):
        error["msg"] = f"{error['msg']}: strings {LONE_SURROGATE}"
    return error


@router.post(
    "/events",
    response_model=BatchOut,
    summary="Submit a batch of events (idempotent by event id; gzip accepted)",
    responses={
        401: {"description": "no valid agent credential (checked before the body is read)"},
        413: {"description": "batch or body too large"},
        403: {"description": "revoked agent or forged agent id"},
    },
    openapi_extra={"requestBody": BATCH_REQUEST_BODY},
)
def ingest(batch: Annotated[BatchIn, Depends(batch_body)], collector: CollectorDep, token: TokenDep, address: AddressDep) -> Response:
    limits = collector.settings.ingest
    if len(batch.events) > limits.max_batch_events:
        collector.metrics.batches.labels("413").inc()
        raise TooLarge(f"a batch holds at most {limits.max_batch_events} events; this one has {len(batch.events)}")
    # Everything per event that needs no database is done before the write transaction, which
    # on SQLite holds the one writer's lock: encoded bodies, columns, claimed agent ids.
    bodies = [_encode(event, by_alias=True).decode() for event in batch.events]
    for index, body in enumerate(bodies):
        if len(body) > limits.max_event_bytes:
            raise TooLarge(f"events[{index}] is larger than {limits.max_event_bytes} bytes")
    claims = [(index, claimed) for index, event in enumerate(batch.events) if event.model_extra and (claimed := event.model_extra.get("agent_id")) is not None]
    records = [_columns(event) for event in batch.events]
    occurred = [event.occurred_at for event in batch.events]
    now = collector.clock()
    country = collector.country(address)
    with collector.db.write() as conn:
        # From memory when it holds the agent (server/liveness.py ``identify``), inside the
        # transaction: on SQLite its lock orders this after any revocation through this process.
        identity = collector.liveness.identify(conn, token, now)
        remembered = identity is not None
        if identity is None:
            identity = _authenticate(conn, collector, token)
        for index, claimed in claims:
            if claimed != identity.id:
                raise Forbidden(f"events[{index}] claims agent {str(claimed)[:64]!r}; an agent may only submit its own events")
        if remembered:
            record_agent_call(conn, collector, identity, address)
        else:
            identity = _record_and_remember(conn, collector, identity, token, address, now)
        result = event_ingest.ingest(
            conn,
            agent=identity,
            records=records,
            bodies=bodies,
            occurred=occurred,
            address=address,
            country=country,
            now=now,
            alert_targets=collector.alert_targets,
            alert_min_rank=collector.alert_min_rank,
            watch_min_rank=collector.watch_alert_min_rank,
            marks_key=lambda: marks_key(collector.settings.data_dir),
        )
    if result.alert_seqs and collector.alert_targets:
        collector.alerts_pending.set()
    collector.pacer.stored(identity.id, len(batch.events))
    metrics = collector.metrics
    metrics.batches.labels("200").inc()
    metrics.events.labels("accepted").inc(len(result.accepted))
    if result.suppressed:
        metrics.events.labels("suppressed").inc(len(result.suppressed))
    metrics.events.labels("duplicate").inc(len(result.duplicates))
    metrics.events.labels("conflict").inc(len(result.conflicts))
    accepted = len(result.accepted) + len(result.suppressed)
    reply = BatchOut(accepted=accepted, duplicates=result.duplicates, conflicts=result.conflicts, suppressed=len(result.suppressed))
    # Serialized here: BatchOut is the declared response_model, so FastAPI's own validation pass would only repeat it.
    return Response(reply.model_dump_json(), media_type="application/json")


def _authenticate(conn: Connection, collector: Collector, token: str | None) -> AgentIdentity:
    """``agents.authenticate``'s read; a refused credential is forgotten by the body guard too."""
    try:
        return agents.authenticate(conn, value=token)
    except (Unauthorized, Forbidden):
        collector.confirmed_agents.discard(token)
        raise


def _record_and_remember(conn: Connection, collector: Collector, identity: AgentIdentity, token: str | None, address: str | None, now: datetime) -> AgentIdentity:
    """Record the call of an agent authenticated by a read, and have memory hold it for its next
    batches once this commits (``Liveness.authenticated``).

    Memory learns it only after a write that finds the row online: the touch is written now
    (conditional on ``online``, not buffered), after the return's flip for an agent read as
    offline. On PostgreSQL that UPDATE holds the row until the commit, so a revocation cannot
    commit between it and what memory learns. An agent the touch finds revoked or offline (since
    the read, through another transaction) is read again and refused or brought back as
    ``authenticate`` sees it now, and not learned."""
    if identity.status != "online":
        record_agent_call(conn, collector, identity, address, touch=False)  # the return: Forbidden if revoked since the read
    if not agents.touch(conn, agent_id=identity.id, address=address, now=now):
        identity = _authenticate(conn, collector, token)
        record_agent_call(conn, collector, identity, address)
        return identity
    if identity.status == "online":
        record_agent_call(conn, collector, identity, address, touch=False)
    collector.liveness.authenticated(conn, identity, token or "", now)
    return identity


# ``model_dump_json`` without its Python wrapper, called once per event.
_encode = EventIn.__pydantic_serializer__.to_json


def _columns(event: EventIn) -> dict[str, Any]:
    """The event's columns, and its ``enforcement`` (typed or kept as an extra) for the quarantine hook."""
    record = event.columns()
    enforcement = getattr(event, "enforcement", None)
    if enforcement is not None:
        record["enforcement"] = enforcement.model_dump(mode="json", by_alias=True) if isinstance(enforcement, BaseModel) else enforcement
    return record
