"""/metrics behind a bearer token: configured, or written by ``serve`` when it listens beyond loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from server.metrics_access import TOKEN_FILE, ensure_token
from server.settings import SettingsError, load_settings
from tests.collector_env import ServeProcess, write_settings

TOKEN = "metrics-0123456789abcdef"


@pytest.fixture
def settings_toml() -> str:
    return f'[metrics]\ntoken = "{TOKEN}"\n'


def test_a_configured_token_is_required(client):
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", headers
        assert "dlp_" not in refused.text
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and "dlp_ingest_events_total" in scraped.text
    assert client.get("/healthz").status_code == 200, "liveness stays open for load balancers"


def test_the_token_comes_from_the_environment_and_must_be_long(tmp_path):
    write_settings(tmp_path, '[metrics]\ntoken = "short"\n')
    with pytest.raises(SettingsError, match="metrics.token"):
        load_settings(tmp_path, environ={})
    assert load_settings(tmp_path, environ={"DLP_METRICS_TOKEN": TOKEN}).metrics.token == TOKEN


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.53"])
def test_loopback_alone_needs_no_token(tmp_path, host):
    write_settings(tmp_path)
    assert ensure_token(load_settings(tmp_path, environ={}), host=host) is None
    assert not (tmp_path / TOKEN_FILE).exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "collector.example"])
def test_listening_beyond_loopback_writes_one_token_and_keeps_it(tmp_path, host):
    write_settings(tmp_path)
    settings = load_settings(tmp_path, environ={})
    path = ensure_token(settings, host=host)
    assert path == tmp_path / TOKEN_FILE and path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert ensure_token(settings, host=host) == path and path.read_text().strip() == token
    assert ensure_token(load_settings(tmp_path, environ={"DLP_METRICS_TOKEN": TOKEN}), host=host) is None, "a configured token wins"


def test_behind_a_trusted_proxy_loopback_counts_as_reachable(tmp_path):
    write_settings(tmp_path, '[network]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    assert ensure_token(load_settings(tmp_path, environ={}), host="127.0.0.1") == tmp_path / TOKEN_FILE


def test_an_empty_token_file_fails_closed(collector, tmp_path):
    from server.collector import Collector

    (collector.settings.data_dir / TOKEN_FILE).write_text("\n")
    settings = collector.settings.model_copy(update={"metrics": collector.settings.metrics.model_copy(update={"token": ""})})
    with pytest.raises(SettingsError, match=TOKEN_FILE):
        Collector(settings, db=collector.db)


def test_serve_beyond_loopback_requires_the_token_it_wrote(tmp_path, database_url):
    env = {**os.environ, "DLP_DATABASE_URL": database_url}
    data_dir = tmp_path / "collector"
    init = subprocess.run([sys.executable, "-m", "server.cli", "init", "--data-dir", str(data_dir)], capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stderr
    serve = ServeProcess(data_dir, env, extra_args=("--host", "0.0.0.0"))
    try:
        serve.wait_ready()
        token = Path(data_dir / TOKEN_FILE).read_text().strip()
        assert requests.get(f"{serve.url}/metrics", timeout=10).status_code == 401
        scraped = requests.get(f"{serve.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert scraped.status_code == 200 and "dlp_heartbeats_total" in scraped.text
    finally:
        assert serve.stop() == 0
    assert str(data_dir / TOKEN_FILE) in serve.log.read_text()
