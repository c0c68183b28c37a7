"""Marks end to end: copies the collector marked for seats, and a canary it planted, land on a running
agent's watched folder; the events name whose copies they are, a copy of another seat's material raises
an event of its own, and no payload is stored at the collector."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import requests

from tests.stack import cli
from tests.waiting import wait_for

POLL_S = 5
PROSE = "\n\n".join(
    f"Section {n}. The billing service reconciles every invoice against the ledger before the nightly close. "
    "Operators review exceptions in the morning queue, escalate disputes to the account owner, and record "
    "each decision with its reason so the auditors can replay the month. Rates change only through the "
    "pricing committee, whose minutes are kept with the contract and copied to the regional controllers."
    for n in range(1, 13)
)


def _agent_row(stack) -> dict:
    return json.loads(cli("server.cli", "agent", "list", "--data-dir", str(stack.data_dir), "--json").stdout)["items"][0]


def _bodies(stack) -> list[dict]:
    with sqlite3.connect(stack.data_dir / "collector.db") as db:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]


def _apply(stack, source: Path, seat: str, out: Path) -> dict:
    result = cli("server.cli", "marks", "apply", str(source), "--vendor", "acme-bpo", "--seat", seat, "--out", str(out), "--data-dir", str(stack.data_dir), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_marked_copies_and_a_canary_on_a_running_agent_name_their_seats(stack, tmp_path):
    (stack.data_dir / "server.toml").write_text("[agents]\nheartbeat_interval_s = 5\n")
    serve = stack.collector()
    config = stack.agent_config()
    config.write_text(config.read_text().replace(f'dir = "{stack.rules_dir}"', f'dir = "{stack.rules_dir}"\npoll_interval_s = {POLL_S}'))
    stack.enroll(config, serve.url)
    stack.agent(config)
    desktop = config.parent / "Desktop"
    wait_for(lambda: _agent_row(stack)["last_heartbeat_at"], timeout=30, interval=0.5, message="first heartbeat")

    source = tmp_path / "billing-runbook.md"
    source.write_text(PROSE)
    own = _apply(stack, source, socket.gethostname(), tmp_path / "own")
    foreign = _apply(stack, source, "contractor-17", tmp_path / "foreign")
    made = cli("server.cli", "marks", "canary", "--vendor", "acme-bpo", "--kind", "credential", "--out", str(tmp_path / "canary"), "--data-dir", str(stack.data_dir), "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    canary = json.loads(made.stdout)
    wait_for(lambda: _agent_row(stack)["bundle_version"] == canary["signature_version"], timeout=POLL_S + 20, interval=0.5, message="the agent runs the canary's bundle")

    (desktop / "runbook-mine.md").write_bytes(Path(own["out"]).read_bytes())
    (desktop / "runbook-theirs.md").write_bytes(Path(foreign["out"]).read_bytes())
    (desktop / "credentials").write_bytes(Path(canary["path"]).read_bytes())

    def marked_events() -> dict[str, dict] | None:
        found = {Path(b["path"]).name: b for b in _bodies(stack) if b.get("marks") and b["channel"] == "file"}
        return found if len(found) == 3 else None

    events = wait_for(marked_events, timeout=60, interval=0.5, message="three events with marks")
    mine, theirs, planted = events["runbook-mine.md"], events["runbook-theirs.md"], events["credentials"]
    assert [(m["mark_id"], m["seat"], m["elsewhere"]) for m in mine["marks"]] == [(own["mark_id"], socket.gethostname(), False)]
    assert [(m["mark_id"], m["seat"], m["elsewhere"]) for m in theirs["marks"]] == [(foreign["mark_id"], "contractor-17", True)]
    assert [(m["mark_id"], m["kind"]) for m in planted["marks"]] == [(canary["mark_id"], "canary")]
    assert {m["carrier"] for m in theirs["matches"] if m["kind"] == "mark"} >= {"homoglyph", "zero_width"}
    assert any(m.get("mark_id") == canary["mark_id"] and m["severity"] == "critical" for m in planted["matches"])

    every = _bodies(stack)
    assert not [m for b in every for m in b.get("matches") or [] if "payload" in m], "a payload was stored"
    raised = [b for b in every if b["type"] == "agent.mark_elsewhere"]
    assert len(raised) == 1 and raised[0]["related_event"] == theirs["id"]
    assert [m["mark_id"] for m in raised[0]["marks"]] == [foreign["mark_id"]]

    # The review API shows the seat on events that carry a mark, to a reviewer too.
    made_user = cli("server.cli", "user", "add", "rita", "--role", "reviewer", "--data-dir", str(stack.data_dir), "--json")
    reviewer = json.loads(made_user.stdout)["api_token"]
    listed = requests.get(f"{serve.url}/api/v1/events", params={"limit": 100}, headers={"Authorization": f"Bearer {reviewer}"}, timeout=30).json()["items"]
    shown = {e["id"]: e for e in listed}
    assert shown[theirs["id"]]["marks"][0]["seat"] == "contractor-17"
    assert all("payload" not in m for e in listed for m in e["matches"])
    # Tracing stays the admin's: the reviewer may not.
    with open(foreign["out"], "rb") as handle:
        refused = requests.post(f"{serve.url}/api/v1/trace", files={"file": ("x.md", handle)}, headers={"Authorization": f"Bearer {reviewer}"}, timeout=30)
    assert refused.status_code == 403
