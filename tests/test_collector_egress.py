"""Egress on the collector (SQLite and PostgreSQL): per-vendor allowed remotes, the verdict at ingest, filters, CLI, UI and exports."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from typing import Any

from sqlalchemy import select

from server.db.tables import audit_log
from server.db.tables import events as event_table
from server.siem.cef import format_cef
from server.siem.export import write_events
from tests.collector_env import event_record, get_event, send_events
from tests.test_ui_views import _log_in

HEAD = "1f" * 20
ROOT = "a0" * 20


def _destination(host: str | None = "github.com", path: str = "/acme/app.git", **extra: Any) -> dict[str, Any]:
    transport = "https" if host else "file"
    url = f"https://{host}{path}" if host else f"file://{path}"
    return {"tool": "git", "transport": transport, "host": host, "port": None, "path": path, "url": url, "remote": "origin", **extra}


def _repository(protected: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "path": "/home/jdoe/src/app", "head": HEAD, "branch": "main", "root_commits": [ROOT], "protected": protected,
        "reasons": ["folder"] if protected else [], "protected_folder": "/home/jdoe/src" if protected else None, "copy_of": None,
        "scan_status": "complete", "scanned_files": 12, "scanned_bytes": 40960, "matched_files": 0, **extra,
    }  # fmt: skip


def _match(severity: str = "high", rule: str = "internal_api_key") -> dict[str, Any]:
    return {"rule": rule, "namespace": "code", "severity": severity, "category": "secret", "tags": [], "member": "src/config.py", "offsets": [10]}


def egress_event(kind: str = "git.push", **overrides: Any) -> dict[str, Any]:
    """An egress record as the agent's tracker writes it (spec of issue 17)."""
    record = event_record(
        type=kind, channel="egress", path="/home/jdoe/src/app", sha256=None, size=None, status=None, device=None, trigger=None,
        severity="low", matches=[],
        process={"pid": 4242, "exe": "/usr/bin/git", "cmdline": "git push origin main", "uid": 1000, "user": "jdoe", "ppid": 4000, "parents": []},
        destination=_destination(), repository=_repository(), refs=["main"],
    )  # fmt: skip
    record.update(overrides)
    return record


def _set(client: Any, admin: Any, remotes: list[str], report_allowed: bool = False, vendor: str = "acme-bpo") -> Any:
    return client.put(f"/api/v1/vendors/{vendor}/egress-policy", json={"allowed_remotes": remotes, "report_allowed": report_allowed}, headers=admin.headers)


def _audit(collector: Any) -> list[Any]:
    with collector.db.read() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()


def test_policy_is_read_by_reviewers_set_by_admins_and_every_change_audited(client, collector, admin, reviewer, enroll):
    agent = enroll()
    empty = client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=reviewer.headers).json()
    assert empty == {"vendor": "acme-bpo", "version": 0, "allowed_remotes": [], "report_allowed": False, "updated_at": None, "updated_by": None}
    assert _set(client, reviewer, ["git.customer.com/**"]).status_code == 403
    assert client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=agent.headers).status_code == 401
    first = _set(client, admin, ["GIT.Customer.com/**", "git.customer.com/**", "/srv/mirror/*"], report_allowed=True)
    assert first.status_code == 200, first.text
    policy = first.json()
    assert (policy["version"], policy["allowed_remotes"], policy["report_allowed"], policy["updated_by"]) == (1, ["git.customer.com/**", "/srv/mirror/*"], True, admin.name), (
        "patterns are normalised (host lower-cased) and kept once"
    )
    assert _set(client, admin, []).json()["version"] == 2
    assert client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=reviewer.headers).json()["allowed_remotes"] == []
    entries = [(row.actor, row.action, row.target, json.loads(row.details)) for row in _audit(collector)]
    assert [(actor, action, target, details["version"]) for actor, action, target, details in entries] == [
        (admin.name, "egress_policy.set", "acme-bpo", 1),
        (admin.name, "egress_policy.set", "acme-bpo", 2),
    ]
    assert entries[0][3]["allowed_remotes"] == ["git.customer.com/**", "/srv/mirror/*"] and entries[0][3]["report_allowed"] is True


def test_bad_patterns_are_refused_naming_the_pattern(client, admin, enroll):
    enroll()
    for bad in ["", "   ", "git.customer.com", "git.customer.com/\x1b[2J", "h/" + "x" * 600]:
        answer = _set(client, admin, ["git.customer.com/**", bad])
        assert answer.status_code == 422, bad
        assert repr(bad[:100]) in answer.json()["detail"], answer.json()
    assert _set(client, admin, ["h/x"] * 501).status_code == 422
    assert _set(client, admin, ["git.customer.com/**"], vendor="nobody").json() == {"detail": "no vendor 'nobody'"}
    assert client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=admin.headers).json()["version"] == 0, "nothing was stored"


def test_the_collector_decides_severity_and_keeps_the_agents_claim(client, collector, admin, reviewer, enroll):
    agent = enroll()
    _set(client, admin, ["git.customer.com/**"])
    protected = egress_event(severity="low", egress_policy={"allowed": True, "pattern": "*"}, destination_host="forged.example")
    plain = egress_event(repository=_repository(protected=False), severity="critical")
    scanned = egress_event(repository=_repository(protected=False), matches=[_match("medium")], severity="high")
    remote = egress_event("git.remote", refs=None, severity="low")
    clone = egress_event("git.clone", severity="critical", destination=_destination(None, "/home/jdoe/src/app"))
    upload = egress_event("net.upload", repository=None, refs=None, matches=[_match("critical")], severity="low",
                          destination={"tool": "curl", "transport": "https", "host": "Paste.Example", "port": 443, "path": "/up", "url": "https://paste.example/up"},
                          transfer={"files_named": 3, "files_scanned": 3, "files_matched": 1, "bytes_scanned": 9000, "truncated": False})  # fmt: skip
    weak_upload = egress_event("net.upload", repository=None, matches=[_match("low")], severity="low")
    reply = send_events(client, agent, protected, plain, scanned, remote, clone, upload, weak_upload)
    assert reply == {"accepted": 7, "duplicates": [], "conflicts": []}, "nothing suppressed: the reply is as before egress"
    got = {r["id"]: get_event(client, reviewer, r["id"]) for r in (protected, plain, scanned, remote, clone, upload, weak_upload)}
    severities = [got[r["id"]]["severity"] for r in (protected, plain, scanned, remote, clone, upload, weak_upload)]
    assert severities == ["high", "low", "high", "medium", "medium", "critical", "high"]
    shown = got[protected["id"]]
    assert shown["egress_policy"] == {"allowed": False, "pattern": None}, "the agent's own verdict is not believed"
    assert shown["agent_claims"] == {
        "severity": "low", "egress_policy": {"allowed": True, "pattern": "*"}, "destination_host": "forged.example"
    }  # fmt: skip
    assert got[remote["id"]]["agent_claims"] == {"severity": "low"}
    assert got[scanned["id"]]["agent_claims"] is None, "the agent proposed what the collector decided"
    assert shown["destination"] == protected["destination"] and shown["repository"] == protected["repository"] and shown["refs"] == ["main"]
    assert got[upload["id"]]["transfer"]["files_matched"] == 1
    assert (got[remote["id"]]["refs"], got[upload["id"]]["repository"]) == (None, None), "a part the agent sent as null is shown as null"
    with collector.db.read() as conn:
        rows = dict(conn.execute(select(event_table.c.id, event_table.c.destination_host)).all())
    assert rows[upload["id"]] == "paste.example" and rows[clone["id"]] is None and rows[protected["id"]] == "github.com"


def test_allowed_remotes_are_suppressed_or_reported_low(client, collector, admin, reviewer, enroll):
    agent = enroll()
    other = enroll(vendor="globex-it", hostname="g-1")
    _set(client, admin, ["git.customer.com/acme/*", "/srv/mirror/*"])
    allowed = egress_event(destination=_destination("GIT.customer.com", "/acme/app.git"), severity="high")
    local = egress_event(destination=_destination(None, "/srv/mirror/app.git"))
    elsewhere = egress_event(destination=_destination("git.customer.com", "/other/app.git"))
    reply = send_events(client, agent, allowed, local, elsewhere)
    assert reply == {"accepted": 3, "duplicates": [], "conflicts": [], "suppressed": 2}
    assert client.get(f"/api/v1/events/{allowed['id']}", headers=reviewer.headers).status_code == 404
    assert get_event(client, reviewer, elsewhere["id"])["severity"] == "high"
    again = send_events(client, agent, allowed)
    assert again == {"accepted": 1, "duplicates": [], "conflicts": [], "suppressed": 1}, "a resend is acknowledged the same way"
    foreign = egress_event(destination=_destination("git.customer.com", "/acme/app.git"))
    assert "suppressed" not in send_events(client, other, foreign), "another vendor's policy is not this one's"
    assert get_event(client, reviewer, foreign["id"])["egress_policy"] == {"allowed": False, "pattern": None}
    _set(client, admin, ["git.customer.com/acme/*"], report_allowed=True)
    reported = egress_event(destination=_destination("git.customer.com", "/acme/app.git"), severity="critical")
    assert "suppressed" not in send_events(client, agent, reported)
    shown = get_event(client, reviewer, reported["id"])
    assert (shown["severity"], shown["egress_policy"], shown["agent_claims"]) == (
        "low", {"allowed": True, "pattern": "git.customer.com/acme/*"}, {"severity": "critical"}
    )  # fmt: skip
    file_event = event_record()
    assert "suppressed" not in send_events(client, agent, file_event)
    assert get_event(client, reviewer, file_event["id"])["severity"] == "critical", "other channels keep the agent's severity"
    assert "egress_policy" not in get_event(client, reviewer, file_event["id"])


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


def test_egress_fields_are_bounded_and_typed(client, enroll):
    agent = enroll()
    refused = [
        egress_event(destination=_destination(port=70000)),
        egress_event(destination=_destination(port="22")),
        egress_event(destination=_destination(host="h" * 256)),
        egress_event(repository=_repository(root_commits=["ab" * 20] * 5)),
        egress_event(repository=_repository(root_commits=["not-a-commit"])),
        egress_event(repository=_repository(reasons=["because"])),
        egress_event(repository=_repository(protected="yes")),
        egress_event(repository=_repository(scan_status="done")),
        egress_event(refs=["x"] * 101),
        egress_event(refs=["x" * 1025]),
        egress_event("net.upload", transfer={"files_named": -1}),
        egress_event(destination=_destination(extra={"deep": _nested(40)})),
    ]
    for record in refused:
        answer = client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers)
        assert answer.status_code == 422, record
    kept = egress_event(destination=_destination(future_field="kept as text"), repository=_repository(sha256_tree="x"))
    assert send_events(client, agent, kept)["accepted"] == 1


def test_destination_filter_is_exact_case_insensitive_and_takes_a_list(client, admin, enroll):
    agent = enroll()
    github = egress_event(destination=_destination("github.com"))
    gitlab = egress_event(destination=_destination("GitLab.com"))
    local = egress_event(destination=_destination(None, "/tmp/copy.git"))
    send_events(client, agent, github, gitlab, local, event_record())

    def ids(query: str) -> set[str]:
        answer = client.get(f"/api/v1/events?{query}", headers=admin.headers)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["items"]}

    assert ids("destination=github.com") == {github["id"]}
    assert ids("destination=GITLAB.COM,github.com") == {github["id"], gitlab["id"]}
    assert ids("destination=hub.com") == set()
    assert ids("channel=egress") == {github["id"], gitlab["id"], local["id"]}


def _dlp_server(*args: str, collector: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLP_DATABASE_URL": collector.settings.effective_database_url}
    return subprocess.run([sys.executable, "-m", "server.cli", *args, "--data-dir", str(collector.settings.data_dir)], capture_output=True, text=True, env=env, timeout=120)


def test_cli_allows_disallows_and_switches_reporting_as_the_local_operator(client, collector, admin, enroll):
    enroll()
    done = _dlp_server("egress", "allow", "acme-bpo", "git.customer.com/**", "/srv/mirror/*", collector=collector)
    assert done.returncode == 0, done.stderr
    assert _dlp_server("egress", "report-allowed", "acme-bpo", "on", collector=collector).returncode == 0
    assert _dlp_server("egress", "disallow", "acme-bpo", "/srv/mirror/*", collector=collector).returncode == 0
    shown = json.loads(_dlp_server("egress", "show", "acme-bpo", "--json", collector=collector).stdout)
    assert (shown["version"], shown["allowed_remotes"], shown["report_allowed"]) == (3, ["git.customer.com/**"], True)
    text = _dlp_server("egress", "show", "acme-bpo", collector=collector).stdout
    assert "git.customer.com/**" in text and "reported" in text
    bad = _dlp_server("egress", "allow", "acme-bpo", "nopath", collector=collector)
    assert bad.returncode == 1 and "'nopath'" in bad.stderr
    missing = _dlp_server("egress", "disallow", "acme-bpo", "other.example/**", collector=collector)
    assert missing.returncode == 1 and "does not allow 'other.example/**'" in missing.stderr
    assert _dlp_server("egress", "show", "globex-it", collector=collector).returncode == 1
    entries = [(row.actor.split(":")[0], row.action, json.loads(row.details)) for row in _audit(collector)]
    assert [(actor, action) for actor, action, _ in entries] == [("cli", "egress_policy.set")] * 3
    assert entries[2][2]["removed"] == ["/srv/mirror/*"] and entries[0][2]["added"] == ["git.customer.com/**", "/srv/mirror/*"]
    assert client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=admin.headers).json()["version"] == 3


HOSTILE = '<script>alert("x")</script>'


def test_event_pages_show_the_destination_and_escape_hostile_values(client, collector, admin, reviewer, enroll):
    agent = enroll()
    hostile = egress_event(
        destination=_destination(f"evil{HOSTILE}.example", f"/{HOSTILE}.git", remote=HOSTILE),
        repository=_repository(branch=HOSTILE), refs=[HOSTILE, "main"],
    )  # fmt: skip
    send_events(client, agent, hostile)
    _log_in(client, reviewer)
    listing = client.get("/ui/events?channel=egress")
    assert listing.status_code == 200 and HOSTILE not in listing.text
    assert "evil&lt;script&gt;" in listing.text and 'href="/ui/events?channel=egress&amp;destination=evil' in listing.text
    filtered = client.get(f"/ui/events?destination=EVIL{HOSTILE}.example")
    assert filtered.status_code == 200 and hostile["id"] in filtered.text
    page = client.get(f"/ui/events/{hostile['id']}")
    assert page.status_code == 200 and HOSTILE not in page.text
    assert "Egress" in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "not on the vendor's allowed list" in page.text and "protected" in page.text and HEAD in page.text


def test_egress_admin_page_sets_the_allowed_remotes_for_admins_only(client, collector, admin, reviewer, enroll):
    enroll()
    csrf = _log_in(client, reviewer)
    assert client.get("/ui/egress").status_code == 403
    assert client.post("/ui/egress/policy", data={"csrf": csrf, "vendor": "acme-bpo", "allowed": "x/y"}).status_code == 403
    csrf = _log_in(client, admin)
    assert 'href="/ui/egress"' in client.get("/ui/events").text
    page = client.get("/ui/egress?vendor=acme-bpo")
    assert page.status_code == 200 and "Nothing is allowed yet" in page.text
    saved = client.post("/ui/egress/policy", data={"csrf": csrf, "vendor": "acme-bpo", "allowed": "git.customer.com/**\n\n/srv/mirror/*", "report_allowed": "on"}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/ui/egress?vendor=acme-bpo&notice=saved"
    page = client.get(saved.headers["location"]).text
    assert "Version 1" in page and "git.customer.com/**\n/srv/mirror/*" in page and 'name="report_allowed" checked' in page
    hostile = '<img src=x onerror="alert(1)">'
    bad = client.post("/ui/egress/policy", data={"csrf": csrf, "vendor": "acme-bpo", "allowed": f"ok.example/**\n{hostile}"})
    assert bad.status_code == 422 and hostile not in bad.text and "&lt;img src=x" in bad.text, "the typed list is kept for fixing, escaped"
    assert "whitespace in pattern" in bad.text
    policy = client.get("/api/v1/vendors/acme-bpo/egress-policy", headers=admin.headers).json()
    assert (policy["version"], policy["allowed_remotes"], policy["report_allowed"]) == (1, ["git.customer.com/**", "/srv/mirror/*"], True)
    assert [row.action for row in _audit(collector) if row.action.startswith("egress")] == ["egress_policy.set"]


def test_exports_carry_the_destination(client, collector, reviewer, enroll):
    agent = enroll()
    record = egress_event(destination=_destination("github.com", "/acme/app.git", port=8443, url="https://github.com:8443/acme/app.git"), refs=["main", "=cmd"])
    send_events(client, agent, record)
    item = get_event(client, reviewer, record["id"])
    buffer = io.StringIO(newline="")
    write_events([item], buffer, fmt="csv", product_version="1.0")
    row = next(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert (row["destination_host"], row["destination_url"], row["destination_tool"]) == ("github.com", "https://github.com:8443/acme/app.git", "git")
    assert (row["repository_path"], row["repository_protected"], row["refs"]) == ("/home/jdoe/src/app", "true", "main;=cmd")
    assert (row["egress_allowed"], row["severity"]) == ("false", "high")
    line = format_cef(item, product_version="1.0")
    assert "dhost=github.com" in line and "shost=ws-1" in line and "dpt=8443" in line and "app=git" in line
    assert "request=https://github.com:8443/acme/app.git" in line and "reason=not on the allowed list" in line
    plain = format_cef(get_event(client, reviewer, _send_file(client, agent)), product_version="1.0")
    assert "dhost=ws-1" in plain and "shost=" not in plain and "request=" not in plain, "other events keep their mapping"
    with collector.db.read() as conn:
        assert conn.execute(select(event_table.c.destination_host).where(event_table.c.id == record["id"])).scalar_one() == "github.com"


def _send_file(client: Any, agent: Any) -> str:
    record = event_record()
    send_events(client, agent, record)
    return record["id"]


def test_ui_event_list_filter_and_channel_menu_include_egress(client, reviewer, enroll):
    agent = enroll()
    send_events(client, agent, egress_event())
    _log_in(client, reviewer)
    page = client.get("/ui/events").text
    assert re.search(r'<option[^>]*value="egress"', page) or ">egress<" in page
    assert 'name="destination"' in page
