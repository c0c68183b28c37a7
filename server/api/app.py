"""The collector's ASGI application: routers, bounded bodies, errors as clear JSON."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from agent import __version__
from agent.bundle import MAX_INDEX_BYTES
from server import ui
from server.api import (
    access_routes,
    admin_routes,
    agent_routes,
    auth_routes,
    case_routes,
    device_routes,
    egress_routes,
    ingest_routes,
    mark_routes,
    ops_routes,
    people_routes,
    review_routes,
    signature_routes,
)
from server.api.admission import Admission
from server.api.bodies import BoundedBodies
from server.api.schemas import BatchIn
from server.collector import Collector
from server.errors import CollectorError

log = logging.getLogger(__name__)

_DEFAULT_BODY_LIMIT = 1 << 20


def create_app(collector: Collector) -> FastAPI:
    app = FastAPI(
        title="DLP collector",
        version=__version__,
        description="Enrollment, authenticated idempotent ingest and heartbeats for agents; the review API for security staff.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.collector = collector
    for router in (agent_routes.router, ingest_routes.router, review_routes.router, admin_routes.router, auth_routes.router, signature_routes.router, device_routes.router,
                   egress_routes.router, mark_routes.router, ops_routes.router, access_routes.router,
                   case_routes.router, people_routes.router):
        app.include_router(router)
    ui.install(app)
    _install_error_handlers(app)
    access_routes.install_refusals(app)
    _install_timing(app, collector)
    _publish_raw_body_schemas(app, [BatchIn])
    ingest = collector.settings.ingest
    app.add_middleware(
        BoundedBodies,
        default_limit=_DEFAULT_BODY_LIMIT,
        route_limits={("POST", "/api/v1/events"): ingest.max_body_bytes, ("POST", "/api/v1/signatures"): 64 << 20, **ui.UPLOAD_LIMITS,
                      **mark_routes.UPLOAD_LIMITS},
        max_decoded=ingest.max_decoded_bytes,
        guards={("POST", "/api/v1/events"): ingest_routes.credential_guard(collector)},
        streamed={("POST", signature_routes.INDEX_UPLOAD_PATH): MAX_INDEX_BYTES},
    )
    # Added last, so outermost: a batch beyond the bound is refused before BoundedBodies reads it.
    app.add_middleware(
        Admission,
        routes={("POST", "/api/v1/events")},
        limit=ingest.max_in_flight,
        on_refusal=collector.metrics.batches.labels("429").inc,
        vouch=collector.liveness.vouch,
        pacer=collector.pacer,
    )
    return app


def _publish_raw_body_schemas(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Routes that validate their raw body themselves (ingest) name their model in ``openapi_extra``;
    FastAPI does not see it, so its schema is added to the document's components here."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CollectorError)
    async def collector_error(_request: Request, exc: CollectorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
            for error in exc.errors()[:100]
        ]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(OperationalError)
    async def database_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
        return JSONResponse({"detail": "database unavailable; retry later"}, status_code=503, headers={"Retry-After": "5"})


def _install_timing(app: FastAPI, collector: Collector) -> None:
    app.add_middleware(_Timing, collector=collector)


class _Timing:
    """Refuses URLs with NUL or invalid UTF-8; times each request (to its response start) by route.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs the
    app in a task with memory streams and cost 0.6-1 ms of a 3-4 ms heartbeat (docs/performance.md).
    """

    def __init__(self, app: Any, *, collector: Collector) -> None:
        self.app = app
        self.collector = collector

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if b"%00" in query or "\x00" in Request(scope).url.path or not _utf8(query):
            await JSONResponse({"detail": "NUL characters or invalid UTF-8 in the URL"}, status_code=400)(scope, receive, send)
            return
        started = time.perf_counter()
        answered: float | None = None

        async def timed_send(message: Any) -> None:
            nonlocal answered
            if answered is None and message["type"] == "http.response.start":
                answered = time.perf_counter()
            await send(message)

        await self.app(scope, receive, timed_send)
        if answered is not None:
            route = scope.get("route")
            self.collector.metrics.latency.labels(getattr(route, "path", "unmatched")).observe(answered - started)


def _utf8(query: bytes) -> bool:
    try:
        unquote_to_bytes(query).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
