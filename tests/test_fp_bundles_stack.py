"""A fingerprint index published over HTTP to a real collector reaches a running agent within one poll,
which matches copied code with it and says in its heartbeat which index it runs; a corrupt index is
refused at the collector and the agent keeps the working one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import requests

from tests.stack import cli
from tests.test_fp_bundles import CORPUS_SOURCE, indexes  # noqa: F401  (the module's index fixture)
from tests.waiting import wait_for

POLL_S = 5


def _agent_row(stack) -> dict:
    result = cli("server.cli", "agent", "list", "--data-dir", str(stack.data_dir), "--json")
    return json.loads(result.stdout)["items"][0]


def _upload(url: str, token: str, name: str, path: Path) -> requests.Response:
    with open(path, "rb") as body:  # a file object: requests streams it rather than building one buffer
        return requests.post(
            f"{url}/api/v1/signatures/indexes", params={"name": name}, data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}, timeout=60,
        )  # fmt: skip


def _fingerprint_matches(stack) -> list[dict]:
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE channel = 'file' ORDER BY seq")]
    return [m for body in bodies for m in body["matches"] if m.get("kind") == "fingerprint"]


def test_an_index_published_over_http_is_matched_and_reported_by_a_running_agent(stack, indexes):  # noqa: F811
    (stack.data_dir / "server.toml").write_text("[agents]\nheartbeat_interval_s = 5\n")
    serve = stack.collector()
    config = stack.agent_config()
    config.write_text(config.read_text().replace(f'dir = "{stack.rules_dir}"', f'dir = "{stack.rules_dir}"\npoll_interval_s = {POLL_S}'))
    stack.enroll(config, serve.url)
    stack.agent(config)
    desktop = config.parent / "Desktop"
    wait_for(lambda: _agent_row(stack)["last_heartbeat_at"], timeout=30, interval=0.5, message="first heartbeat")

    published = _upload(serve.url, stack.admin_token, "acme", indexes["acme-code"])
    assert published.status_code == 201, published.text
    version = published.json()["version"]
    wait_for(lambda: _agent_row(stack)["bundle_version"] == version, timeout=POLL_S + 15, interval=0.5, message="the agent runs the index's version")
    row = wait_for(lambda: (r := _agent_row(stack))["fingerprints"] and r, timeout=15, interval=0.5, message="the index in a heartbeat")
    (reported,) = row["fingerprints"]
    assert reported["name"] == "acme-code" and reported["fingerprints"] == published.json()["indexes"]["acme"]["fingerprints"]

    (desktop / "copied.txt").write_bytes(CORPUS_SOURCE.read_bytes())
    found = wait_for(lambda: _fingerprint_matches(stack), timeout=30, interval=0.5, message="a fingerprint match stored")
    assert found[0]["rule"] == "acme-code" and found[0]["source"].endswith(CORPUS_SOURCE.name)

    refused = _upload(serve.url, stack.admin_token, "acme", indexes["truncated"])
    assert refused.status_code == 422 and "acme.fp" in refused.json()["detail"]
    listed = json.loads(cli("server.cli", "signatures", "list", "--data-dir", str(stack.data_dir), "--json").stdout)["items"]
    assert [v["version"] for v in listed] == [version] and listed[0]["indexes"][0]["name"] == "acme"
    assert _agent_row(stack)["fingerprints"] == row["fingerprints"]
