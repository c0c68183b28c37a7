"""Running the collector's app under uvicorn, with a shutdown that lets the collector clean up."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

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


def run_server(app: Any, *, host: str, port: int, tls_cert: str | None, tls_key: str | None, log_level: str, access_log: bool) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level=log_level,
        access_log=access_log,
        # X-Forwarded-For is ours to judge (settings: network.trusted_proxies), not uvicorn's.
        proxy_headers=False,
        server_header=False,
    )
    GracefulServer(config).run()
