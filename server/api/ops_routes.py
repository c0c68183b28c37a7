"""Operations endpoints: liveness with a database check, and Prometheus metrics (behind a token once reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from agent import __version__
from server import metrics_access
from server.api.deps import CollectorDep, TokenDep
from server.db.migrate import current_revision, head_revision
from server.errors import Unauthorized

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Is this collector able to serve (database reachable, schema current)?")
def healthz(collector: CollectorDep) -> JSONResponse:
    try:
        with collector.db.read() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(collector.db)
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status_code=503)
    ok = revision == head_revision()
    body = {"status": "ok" if ok else "unavailable", "version": __version__, "schema": revision, "database": collector.db.dialect}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this collector process",
    responses={401: {"description": "the metrics token is required (docs/deployment.md) and was not sent"}},
)
def metrics(collector: CollectorDep, token: TokenDep) -> Response:
    if not metrics_access.allowed(collector.metrics_token_digest, token):
        raise Unauthorized("send Authorization: Bearer <metrics token>")
    return Response(collector.metrics.render(), media_type=CONTENT_TYPE_LATEST)
