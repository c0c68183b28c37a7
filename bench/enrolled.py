"""A local collector for bench/daemon.py's enrolled agent: ``dlp-server serve`` over TLS on loopback with a signed bundle published.

An agent enrolled to it has done what every deployed agent does within its first minute, and
what an unenrolled one never does: a heartbeat over HTTPS (requests, urllib3 and a TLS context)
and a bundle fetched and its Ed25519 signature checked (cryptography). Idle memory is only
worth quoting after both (issue 22).
"""

from __future__ import annotations

import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.serving import ROOT, dlp_server, free_port, init_collector

STARTER_PACKS = ROOT / "signatures" / "packs"


class LocalCollector:
    """``dlp-server serve`` on 127.0.0.1 with a self-signed certificate and the starter packs published as a bundle."""

    def __init__(self, work: str) -> None:
        self.data_dir = Path(work) / "collector"
        init_collector(self.data_dir, None)
        self.cert, self.key = self.data_dir / "tls.pem", self.data_dir / "tls.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.bundle_version = int(dlp_server("signatures", "publish", str(STARTER_PACKS), data_dir=self.data_dir)["version"])
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        self._log = open(self.data_dir.parent / "serve.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(port),
             "--tls-cert", str(self.cert), "--tls-key", str(self.key)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 120.0) -> None:
        context = ssl.create_default_context(cafile=str(self.cert))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"dlp-server serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5, context=context) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"dlp-server serve not ready after {timeout:.0f} s; see {self._log.name}")

    def enroll(self, agent_argv: list[str], config: str, *, cwd: str, env: dict[str, str]) -> None:
        """``dlp-agent enroll`` with a fresh token and this collector's certificate as the CA, as a deployment script would."""
        token = dlp_server("token", "create", "--vendor", "bench", data_dir=self.data_dir)["token"]
        done = subprocess.run(
            [*agent_argv, "enroll", "--config", config, "--server", self.url, "--token", token, "--ca", str(self.cert)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"dlp-agent enroll failed: {done.stdout.strip()} {done.stderr.strip()}")

    def heartbeats(self) -> int:
        """Agents whose heartbeat the collector has stored."""
        with sqlite3.connect(f"file:{self.data_dir / 'collector.db'}?mode=ro", uri=True, timeout=30) as db:
            return int(db.execute("SELECT COUNT(*) FROM agents WHERE last_heartbeat_at IS NOT NULL").fetchone()[0])

    def stop(self) -> None:
        """Stop the collector (the agent then keeps its events in the spool); harmless twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
