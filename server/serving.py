"""Running the collector's app under uvicorn, with a shutdown that lets the collector clean up."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn's server without re-raising SIGTERM/SIGINT after shutdown: uvicorn does that to
    exit "by the signal", which kills the process before the collector's own cleanup runs and
    turns a clean stop into exit status -15."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _options(*, host: str, port: int, tls_cert: str | None, tls_key: str | None, log_level: str, access_log: bool) -> dict[str, Any]:
    """uvicorn settings shared by one process and several workers."""
    return {
        "host": host,
        "port": port,
        "ssl_certfile": tls_cert,
        "ssl_keyfile": tls_key,
        "log_level": log_level,
        "access_log": access_log,
        # X-Forwarded-For is ours to judge (settings: network.trusted_proxies), not uvicorn's.
        "proxy_headers": False,
        "server_header": False,
    }


def run_server(app: Any, **options: Any) -> None:
    """One process (``options`` as ``_options`` takes them)."""
    GracefulServer(uvicorn.Config(app, **_options(**options))).run()


DATA_DIR_ENV = "DLP_SERVER_DATA_DIR"
WORKERS_ENV = "DLP_SERVER_WORKERS"
"""How many worker processes share the port: each paces backlogs for its share (server/pacing.py)."""


def app_from_environment() -> Any:
    """The app one worker process of ``dlp-server serve --workers N`` runs.

    uvicorn starts each worker afresh and builds its app from this factory; the worker opens
    its own collector (the schema was migrated once by the parent) and runs its own
    background duties, which are safe to run in every process.
    """
    import gc
    import os
    from contextlib import asynccontextmanager

    from server.api.app import create_app
    from server.bootstrap import open_collector
    from server.maintenance import Maintenance
    from server.settings import load_settings

    collector = open_collector(load_settings(os.environ[DATA_DIR_ENV]))
    collector.pacer.processes = max(1, int(os.environ.get(WORKERS_ENV, "1")))
    app = create_app(collector)
    maintenance = Maintenance(collector)

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        maintenance.start()
        try:
            yield
        finally:
            maintenance.stop()
            collector.close()

    app.router.lifespan_context = lifespan
    gc.collect()
    gc.freeze()
    return app


def run_workers(data_dir: str, *, workers: int, **options: Any) -> None:
    """Several worker processes on one port (PostgreSQL only: they share nothing but the database)."""
    import os

    os.environ[DATA_DIR_ENV] = data_dir
    os.environ[WORKERS_ENV] = str(workers)
    uvicorn.run("server.serving:app_from_environment", factory=True, workers=workers, **_options(**options))
