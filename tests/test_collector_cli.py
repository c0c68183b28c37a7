"""The collector as IT runs it: ``dlp-server`` commands and a real ``serve`` process on loopback."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.collector_env import ServeProcess, event_record


def dlp_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return {**os.environ, "DLP_DATABASE_URL": database_url}


@pytest.fixture
def initialised(tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict]:
    data_dir = tmp_path / "collector"
    result = dlp_server("init", "--data-dir", str(data_dir), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return data_dir, json.loads(result.stdout)


def test_init_creates_keys_and_an_admin_once(initialised, env):
    data_dir, first = initialised
    assert set(first) == {"admin_user", "admin_password", "api_token"} and first["admin_password"]
    # Every key, so a copy of the directory gives a second collector over the database the same ones.
    keys = {name: (data_dir / name).read_bytes() for name in ("signing.key", "quarantine.key", "marks.key", "pseudonyms.key")}
    assert all((data_dir / name).stat().st_mode & 0o777 == 0o600 for name in keys)
    assert data_dir.stat().st_mode & 0o777 == 0o700
    again = dlp_server("init", "--data-dir", str(data_dir), "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["admin_password"] is None
    assert {name: (data_dir / name).read_bytes() for name in keys} == keys, "init again keeps the keys"


def test_commands_before_init_fail_clearly(tmp_path, env):
    result = dlp_server("token", "create", "--data-dir", str(tmp_path / "nothing"), "--vendor", "acme", env=env)
    assert result.returncode == 1 and "dlp-server init" in result.stderr


def test_serve_enroll_ingest_review_export_revoke(initialised, env, tmp_path):
    data_dir, init = initialised
    user = dlp_server("user", "add", "rita", "--role", "reviewer", "--data-dir", str(data_dir), "--json", env=env)
    assert user.returncode == 0, user.stderr
    reviewer = {"Authorization": f"Bearer {json.loads(user.stdout)['api_token']}"}
    token = json.loads(dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", "acme-bpo", "--uses", "2", "--json", env=env).stdout)["token"]

    serve = ServeProcess(data_dir, env)
    try:
        serve.wait_ready()
        enrolled = requests.post(f"{serve.url}/api/v1/enroll", json={"token": token, "hostname": "ws-17"}, timeout=10).json()
        agent = {"Authorization": f"Bearer {enrolled['credential']}"}
        records = [event_record() for _ in range(20)]
        body = gzip.compress(json.dumps({"events": records}).encode())
        sent = requests.post(f"{serve.url}/api/v1/events", data=body, headers={**agent, "Content-Encoding": "gzip", "Content-Type": "application/json"}, timeout=10)
        assert sent.json()["accepted"] == 20
        page = requests.get(f"{serve.url}/api/v1/events", params={"vendor": "acme-bpo", "limit": 50}, headers=reviewer, timeout=10).json()
        assert {item["id"] for item in page["items"]} == {r["id"] for r in records}
        assert "dlp_ingest_events_total" in requests.get(f"{serve.url}/metrics", timeout=10).text
        assert requests.get(f"{serve.url}/docs", timeout=10).status_code == 200
        assert "/api/v1/events" in requests.get(f"{serve.url}/openapi.json", timeout=10).json()["paths"]

        listed = json.loads(dlp_server("agent", "list", "--data-dir", str(data_dir), "--json", env=env).stdout)["items"]
        assert [(a["id"], a["hostname"], a["status"]) for a in listed] == [(enrolled["agent_id"], "ws-17", "online")]

        out = tmp_path / "events.csv"
        exported = dlp_server("export", "events", "--format", "csv", "--data-dir", str(data_dir), "--output", str(out), env=env)
        assert exported.returncode == 0, exported.stderr
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert len(rows) == 20 and rows[0]["rules"] == "private_key_pem" and rows[0]["vendor"] == "acme-bpo"
        cef = dlp_server("export", "events", "--format", "cef", "--data-dir", str(data_dir), "--since", "2026-01-01T00:00:00Z", env=env)
        assert cef.stdout.count("CEF:0|DLP Endpoint|") == 20

        assert dlp_server("agent", "revoke", enrolled["agent_id"], "--data-dir", str(data_dir), env=env).returncode == 0
        refused = requests.post(f"{serve.url}/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent, timeout=10)
        assert refused.status_code == 403
        audit = requests.get(f"{serve.url}/api/v1/audit", headers={"Authorization": f"Bearer {init['api_token']}"}, timeout=10).json()
        actions = [entry["action"] for entry in audit["items"]]
        assert audit["chain"]["ok"] and {"agent.revoke", "events.export", "token.create", "user.create"} <= set(actions)
    finally:
        assert serve.stop() == 0


def test_two_collectors_on_one_postgresql_store_each_retried_event_once(pg_url, tmp_path):
    """Several collectors share one database only on PostgreSQL; this runs there alone."""
    from tests.collector_env import _truncate_all

    _truncate_all(pg_url)
    env = {**os.environ, "DLP_DATABASE_URL": pg_url}
    data_dir = tmp_path / "collector"
    assert dlp_server("init", "--data-dir", str(data_dir), "--json", env=env).returncode == 0
    token = json.loads(dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", "acme-bpo", "--json", env=env).stdout)["token"]
    # One collector with two worker processes, one with one: three processes on one database.
    with ServeProcess(data_dir, env, extra_args=("--workers", "2")) as first, ServeProcess(data_dir, env) as second:
        first.wait_ready()
        second.wait_ready()
        enrolled = requests.post(f"{first.url}/api/v1/enroll", json={"token": token, "hostname": "ws-1"}, timeout=10).json()
        agent = {"Authorization": f"Bearer {enrolled['credential']}"}
        batches = [[event_record() for _ in range(50)] for _ in range(10)]

        def send(args: tuple[int, list[dict]]) -> dict:
            index, batch = args
            url = (first if index % 2 else second).url
            return requests.post(f"{url}/api/v1/events", json={"events": batch}, headers=agent, timeout=30).json()

        # Every batch goes to both collectors at once, as a retry after a lost reply would.
        work = [(i, batch) for batch in batches for i in (0, 1)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, work))
        assert sum(r["accepted"] for r in results) == 500
        assert sum(len(r["duplicates"]) for r in results) == 500


def test_workers_need_postgresql(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DLP_DATABASE_URL"}
    data_dir = tmp_path / "collector"
    assert dlp_server("init", "--data-dir", str(data_dir), env=env).returncode == 0
    result = dlp_server("serve", "--data-dir", str(data_dir), "--workers", "2", env=env)
    assert result.returncode == 1 and "--workers needs PostgreSQL" in result.stderr


# Never raw on an admin's terminal: C0 and C1 controls (ESC, CSI, BEL, CR, backspace) and bidi controls.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_agent_list_and_exports_show_what_agents_send_as_marks(collector, client, enroll, env, tmp_path):
    agent = enroll(hostname="ws-9\x1b]0;owned\x07\r\n\x9b2J\u202e")
    client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0", "ruleset_version": "rs\x1b[31m"}, headers=agent.headers)
    record = event_record(path="/tmp/invoice\u202egpj.exe\x1b[2J", user="j\rdoe\x08\t")
    assert client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers).status_code == 200
    data_dir = str(tmp_path / "data")

    listed = dlp_server("agent", "list", "--data-dir", data_dir, env=env)
    assert listed.returncode == 0, listed.stderr
    assert RAW_CONTROL.search(listed.stdout) is None and len(listed.stdout.splitlines()) == 2
    assert "ws-9<U+001B>]0;owned<U+0007><U+000D><U+000A><U+009B>2J<U+202E>" in listed.stdout and "rs<U+001B>[31m" in listed.stdout

    shown = dlp_server("export", "events", "--format", "csv", "--data-dir", data_dir, env=env)
    assert shown.returncode == 0, shown.stderr
    assert RAW_CONTROL.search(shown.stdout) is None and len(shown.stdout.splitlines()) == 2
    (row,) = csv.DictReader(io.StringIO(shown.stdout))
    assert row["path"] == "/tmp/invoice<U+202E>gpj.exe<U+001B>[2J" and row["user"] == "j<U+000D>doe<U+0008><U+0009>"

    lines = dlp_server("export", "events", "--format", "jsonl", "--data-dir", data_dir, env=env).stdout
    assert RAW_CONTROL.search(lines) is None and "invoice\\u202egpj.exe\\u001b[2J" in lines
    assert json.loads(lines)["path"] == record["path"]

    kept = tmp_path / "events.csv"
    assert dlp_server("export", "events", "--format", "csv", "--data-dir", data_dir, "--output", str(kept), env=env).returncode == 0
    (row,) = csv.DictReader(io.StringIO(kept.read_bytes().decode("utf-8"), newline=""))
    assert row["path"] == "/tmp/invoice<U+202E>gpj.exe<U+001B>[2J" and row["user"] == "j\rdoe<U+0008>\t", "a file keeps tab and CR in quoted cells"
