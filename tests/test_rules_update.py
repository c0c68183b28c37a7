"""A running agent takes newly published signatures within one poll interval, refuses forged
bundles (keeping its last good rules and saying so in its heartbeat), and follows a rollback."""

from __future__ import annotations

import json
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.signing import build_bundle
from tests.agent_process import Agent
from tests.stack import cli, delivered
from tests.waiting import wait_for

POLL_S = 5
FIRST = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'
SECOND = 'rule loud_word { meta: severity = "critical" strings: $a = "KINGFISHER-0077" condition: $a }'


def _publish(stack, tmp_path, name: str, source: str) -> int:
    pack = tmp_path / f"{name}.yar"
    pack.write_text(source)
    result = cli("server.cli", "signatures", "publish", str(pack), "--data-dir", str(stack.data_dir), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["version"]


def _agent_row(stack) -> dict:
    result = cli("server.cli", "agent", "list", "--data-dir", str(stack.data_dir), "--json")
    return json.loads(result.stdout)["items"][0]


def _rules_of_events(stack) -> list[str]:
    import sqlite3

    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE channel = 'file' ORDER BY seq")]
    return [m["rule"] for body in bodies for m in body["matches"]]


def test_publish_hot_swap_forgery_and_rollback(stack, fault_proxy_factory, tmp_path):
    (stack.data_dir / "server.toml").write_text("[agents]\nheartbeat_interval_s = 5\n")
    serve = stack.collector()
    proxy = fault_proxy_factory(serve.port)
    assert _publish(stack, tmp_path, "birds", FIRST) == 1
    config = stack.agent_config()
    text = config.read_text().replace(f'dir = "{stack.rules_dir}"', f'dir = "{stack.rules_dir}"\npoll_interval_s = {POLL_S}')
    config.write_text(text)
    stack.enroll(config, proxy.url)
    agent = stack.agent(config)
    desktop = config.parent / "Desktop"

    wait_for(lambda: _agent_row(stack)["bundle_version"] == 1, timeout=30, interval=0.5, message="agent runs version 1")
    (desktop / "a.txt").write_text("HUMMINGBIRD-0042\n")
    delivered(stack, 1, timeout=30)

    published_at = time.monotonic()
    assert _publish(stack, tmp_path, "more_birds", SECOND) == 2
    wait_for(lambda: _bundle_version(agent) == 2, timeout=POLL_S + 5, interval=0.2, message="version 2 within one poll interval")
    assert time.monotonic() - published_at <= POLL_S + 5
    (desktop / "b.txt").write_text("KINGFISHER-0077\n")
    delivered(stack, 2, timeout=30)
    assert "loud_word" in _rules_of_events(stack)

    forged = build_bundle(version=3, vendor="acme-bpo", packs={"evil": FIRST}, created_by="mallory", created_at="2026-11-24T00:00:00.000Z", key=Ed25519PrivateKey.generate())
    proxy.replace_get_body = forged.data
    wait_for(lambda: "signature" in (_agent_row(stack)["ruleset_error"] or ""), timeout=POLL_S + 15, interval=0.5, message="refusal reported in the heartbeat")
    assert _bundle_version(agent) == 2
    (desktop / "c.txt").write_text("KINGFISHER-0077 again\n")
    delivered(stack, 3, timeout=30)  # the last good rules still run
    proxy.replace_get_body = None

    result = cli("server.cli", "signatures", "rollback", "1", "--data-dir", str(stack.data_dir), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["version"] == 3
    wait_for(lambda: _bundle_version(agent) == 3, timeout=POLL_S + 5, interval=0.2, message="rollback installed")
    (desktop / "d.txt").write_text("KINGFISHER-0077 after the rollback\n")
    (desktop / "e.txt").write_text("HUMMINGBIRD-0042 after the rollback\n")
    delivered(stack, 4, timeout=30)
    time.sleep(2)
    assert stack.stored() == 4, "the rolled-back rule no longer fires"
    wait_for(lambda: _agent_row(stack)["ruleset_error"] is None, timeout=15, interval=0.5, message="error cleared")
    versions = json.loads(cli("server.cli", "signatures", "list", "--data-dir", str(stack.data_dir), "--json").stdout)["items"]
    wait_for(lambda: json.loads(cli("server.cli", "signatures", "list", "--data-dir", str(stack.data_dir), "--json").stdout)["items"][0]["agents"] == 1,
             timeout=15, interval=0.5, message="rollout count")
    assert versions[0]["version"] == 3


def _bundle_version(agent: Agent) -> int | None:
    from agent.spool import Spool

    with Spool.open_readonly(str(agent.spool)) as reader:
        return reader.get_state("bundle_version")
