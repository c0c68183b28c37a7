"""Fingerprint matches at the collector (issue 15): typed at ingest, shown side by side to reviewers,
carried by exports and CEF with their kind and corpus file; on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import csv
import html
import io
import json
import re
from typing import Any, get_args

import pytest

from agent import events as contract
from server.api.schemas import MAX_LINE_RANGES, MatchIn
from server.siem.cef import format_cef
from server.siem.export import CSV_COLUMNS, write_events
from tests.collector_env import event_record
from tests.test_siem import parse_cef

FINGERPRINT: dict[str, Any] = {
    "kind": "fingerprint",
    "rule": "acme_billing",
    "namespace": "fingerprint",
    "severity": "high",
    "category": "source_code",
    "description": "",
    "tags": [],
    "member": None,
    "offsets": [],
    "strings": [],
    "source": "billing/invoice.py",
    "lines": [[12, 31], [40, 40], [55, 71]],
    "source_lines": [[140, 159], [170, 170], [201, 217]],
    "coverage": 0.42,
    "index_version": "0123456789abcdef",
}
_LEFT_OUT = object()
YARA = {"rule": "private_key_pem", "namespace": "credentials", "severity": "critical", "category": "secret", "tags": [], "member": None, "offsets": [4]}


def fingerprint(**changes: Any) -> dict[str, Any]:
    match = copy.deepcopy(FINGERPRINT)
    match.update(changes)
    return {name: value for name, value in match.items() if value is not _LEFT_OUT}


def _record(*matches: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    fields = {"type": "file.write", "channel": "file", "device": None, "path": "/home/jdoe/Desktop/notes.txt", "severity": "high"}
    return event_record(matches=list(matches), **{**fields, **overrides})


def _post(client: Any, agent: Any, *records: dict[str, Any]) -> Any:
    return client.post("/api/v1/events", json={"events": list(records)}, headers=agent.headers)


def _events(client: Any, person: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/events", params={"limit": 1000, **params}, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _ui_session(client: Any, person: Any) -> str:
    """Log ``person`` in through the form, as a browser does; returns the session's CSRF token."""
    from server.ui.session import csrf_token

    client.cookies.clear()
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    login = client.post("/ui/login", data={"username": person.name, "password": person.password, "nonce": nonce}, follow_redirects=False)
    assert login.status_code == 303, login.text
    return csrf_token(client.cookies["dlp_session"])


# --- ingest ------------------------------------------------------------------------------------


def test_a_fingerprint_match_is_stored_as_sent_and_found_by_its_index_name(client, enroll, admin):
    agent = enroll()
    both = _record(FINGERPRINT, YARA)
    whole = _record(fingerprint(lines=[[1, 400]], source_lines=[[1, 400]], coverage=1, member="src.zip!billing/invoice.py"))
    response = _post(client, agent, both, whole)
    assert response.status_code == 200, response.text
    shown = {item["id"]: item for item in _events(client, admin)}
    assert shown[both["id"]]["matches"] == [FINGERPRINT, YARA], "stored as sent: no kind or null fields added to the old agent's YARA match"
    assert shown[whole["id"]]["matches"][0]["coverage"] == 1
    assert {item["id"] for item in _events(client, admin, rule="acme_billing")} == {both["id"], whole["id"]}


BAD_MATCHES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown kind", fingerprint(kind="regex"), "kind"),
    ("range backwards", fingerprint(lines=[[31, 12], [40, 40], [55, 71]]), "lines"),
    ("line zero", fingerprint(source_lines=[[0, 159], [170, 170], [201, 217]]), "source_lines"),
    ("negative line", fingerprint(lines=[[-3, 2], [40, 40], [55, 71]]), "lines"),
    ("line past 2**32", fingerprint(lines=[[1, 2**32], [40, 40], [55, 71]]), "lines"),
    ("one number", fingerprint(lines=[[12], [40, 40], [55, 71]]), "lines"),
    ("three numbers", fingerprint(lines=[[12, 20, 31], [40, 40], [55, 71]]), "lines"),
    ("line as text", fingerprint(lines=[["12", 31], [40, 40], [55, 71]]), "lines"),
    ("line as bool", fingerprint(lines=[[True, 31], [40, 40], [55, 71]]), "lines"),
    ("line as float", fingerprint(lines=[[12.5, 31], [40, 40], [55, 71]]), "lines"),
    ("ranges not a list", fingerprint(lines="12-31"), "lines"),
    ("too many ranges", fingerprint(lines=[[n, n] for n in range(1, MAX_LINE_RANGES + 2)], source_lines=[[n, n] for n in range(1, MAX_LINE_RANGES + 2)]), "lines"),
    ("ranges do not pair up", fingerprint(source_lines=[[140, 159]]), "source_lines"),
    ("coverage above 1", fingerprint(coverage=1.5), "coverage"),
    ("coverage below 0", fingerprint(coverage=-0.1), "coverage"),
    ("coverage as text", fingerprint(coverage="0.42"), "coverage"),
    ("source empty", fingerprint(source=""), "source"),
    ("source too long", fingerprint(source="a/" * 2049), "source"),
    ("source with NUL", fingerprint(source="billing/\x00invoice.py"), "source"),
    ("source not text", fingerprint(source=["billing/invoice.py"]), "source"),
    ("version not hex", fingerprint(index_version="0123456789ABCDEFG"), "index_version"),
    ("version too long", fingerprint(index_version="ab" * 33), "index_version"),
    ("no source", fingerprint(source=_LEFT_OUT), "source"),
    ("no lines", fingerprint(lines=_LEFT_OUT, source_lines=_LEFT_OUT), "lines"),
    ("no coverage", fingerprint(coverage=_LEFT_OUT), "coverage"),
]


def test_malformed_fingerprint_matches_are_refused_with_a_422_naming_the_field(client, enroll, admin):
    agent = enroll()
    for name, match, field in BAD_MATCHES:
        response = _post(client, agent, _record(YARA), _record(YARA, match))
        assert response.status_code == 422, (name, response.text)
        problems = response.json()["detail"]
        assert any(p["loc"][:5] == ["body", "events", 1, "matches", 1] and field in json.dumps(p) for p in problems), (name, problems)
    assert _events(client, admin) == [], "one bad match refuses the whole batch"


def test_the_match_vocabulary_is_the_contracts():
    typed = set(MatchIn.model_fields)
    assert typed <= contract.MATCH_FIELDS, typed - contract.MATCH_FIELDS
    assert set(FINGERPRINT) <= contract.MATCH_FIELDS
    stated, _ = get_args(MatchIn.model_fields["kind"].annotation)
    assert get_args(stated) == contract.MATCH_KINDS
    assert contract.match_kind({"rule": "old_agent"}) == contract.UNSTATED_MATCH_KIND == "yara"
    for kind in contract.MATCH_KINDS:
        assert contract.match_kind({"rule": "r", "kind": kind}) == kind
    # The scanner names the kinds it makes (agent/scanning/results.py); the collector takes exactly those.
    from agent.scanning import results

    assert results.MATCH_KINDS == contract.MATCH_KINDS
    every_field = results.Match(
        rule="r", namespace="n", severity="high", category="c", protected_path="/p", kind=results.FINGERPRINT,
        source="s", lines=((1, 2),), source_lines=((3, 4),), coverage=0.5, index_version="ab",
    )  # fmt: skip
    assert set(every_field.to_dict()) <= contract.MATCH_FIELDS, set(every_field.to_dict()) - contract.MATCH_FIELDS


def test_what_the_agent_reports_for_a_copy_of_the_customers_code_arrives_unchanged(client, enroll, admin, reviewer, tmp_path):
    """The agent's own scanner and policy make the records (a renamed copy in a zip, an excerpt on the
    clipboard); the collector takes them as they are and the reviewer sees the agent's ranges."""
    import shutil
    import sysconfig
    import zipfile
    from pathlib import Path

    from agent.policy import Context, decide
    from agent.scanning import Scanner, load_rules
    from agent.sources.work import ClipboardWork, FileWork
    from signatures.fingerprint import build_index
    from tests.test_fingerprint import excerpt, renamed

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = tmp_path / "acme"
    (corpus / "util").mkdir(parents=True)
    shutil.copy(stdlib / "shlex.py", corpus / "util" / "lexer.py")
    shutil.copy(stdlib / "textwrap.py", corpus / "wrap.py")
    rules = tmp_path / "rules"
    rules.mkdir()
    build_index([str(corpus)], name="acme-code", out=str(rules / "acme.fp"))
    scanner = Scanner(load_rules(str(rules)))
    copied = renamed((stdlib / "shlex.py").read_text(), consistent=True)
    archive = tmp_path / "out.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("src/notes.txt", copied)
    context = Context(host="ws-1", agent_version="0.1.0", ruleset_version="148583d2a3f6984c")
    clip = excerpt(copied, 150, 60).encode()
    made = [
        decide(FileWork(path=str(archive)), scanner.scan_path(str(archive)), context, user="jdoe", now=1_800_000_000),
        decide(ClipboardWork(data=clip, sha256="cd" * 32, original_size=len(clip)), scanner.scan_bytes(clip, name="clipboard"), context, user="jdoe", now=1_800_000_000),
    ]
    records = [decision.event for decision in made if decision is not None]
    assert len(records) == 2 and all(r["matches"] and r["matches"][0]["kind"] == "fingerprint" for r in records)

    agent = enroll()
    response = _post(client, agent, *records)
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
    shown = {item["id"]: item for item in _events(client, admin)}
    for record in records:
        assert shown[record["id"]]["matches"] == record["matches"], record["type"]
        match = record["matches"][0]
        assert match["source"] == "acme/util/lexer.py" and match["rule"] == "acme-code" and set(match) <= contract.MATCH_FIELDS
    file_match = records[0]["matches"][0]
    assert file_match["member"] == "src/notes.txt"
    _ui_session(client, reviewer)
    rows = _rows(client.get(f"/ui/events/{records[0]['id']}").text, "Matched lines, side by side")
    from server.ui.matches import range_text

    assert rows == [[str(n), range_text(a), range_text(b)] for n, (a, b) in enumerate(zip(file_match["lines"], file_match["source_lines"]), start=1)]


# --- the review UI -----------------------------------------------------------------------------


def _rows(page: str, caption: str) -> list[list[str]]:
    """The body rows of the table with ``caption`` as lists of cell texts (tags stripped, entities read)."""
    table = re.search(rf"<caption>{re.escape(caption)}</caption>(.*?)</table>", page, re.S)
    assert table, f"no table captioned {caption!r}"
    body = re.search(r"<tbody>(.*?)</tbody>", table.group(1), re.S).group(1)  # type: ignore[union-attr]
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_the_event_page_shows_the_corpus_file_and_the_ranges_side_by_side(client, enroll, reviewer):
    agent = enroll()
    record = _record(FINGERPRINT, YARA)
    assert _post(client, agent, record).status_code == 200
    _ui_session(client, reviewer)
    page = client.get(f"/ui/events/{record['id']}")
    assert page.status_code == 200
    text = page.text
    assert "Fingerprint match: acme_billing" in text
    assert "<code class=\"break\">billing/invoice.py</code>" in text
    assert "42% of the scanned text's tokens" in text
    assert "38 lines in 3 ranges" in text, "20 + 1 + 17 lines of the scanned text"
    assert "version 0123456789abcdef" in text and "source_code" in text
    assert _rows(text, "Matched lines, side by side") == [["1", "12–31", "140–159"], ["2", "40", "170"], ["3", "55–71", "201–217"]]
    assert 'href="#fingerprint-1">lines side by side</a>' in text and 'id="fingerprint-1"' in text
    assert '<span class="kind">fingerprint</span>' in text
    assert text.count('<span class="kind">') == 1, "a YARA match carries no marker"

    listing = client.get("/ui/events").text
    assert re.search(r'rule=acme_billing[^"]*">acme_billing</a> <span class="kind" title="a fingerprint match">fingerprint</span>', listing)
    assert 'title="private_key_pem">+1</span>' in listing


def test_what_an_agent_puts_in_a_fingerprint_match_is_escaped(client, enroll, reviewer):
    agent = enroll()
    hostile = fingerprint(rule="<img src=x onerror=alert(1)>", source='<script>alert("src")</script>/a\u202egpj.py', member="<b>member</b>")
    record = _record(hostile)
    assert _post(client, agent, record).status_code == 200
    _ui_session(client, reviewer)
    for path in (f"/ui/events/{record['id']}", "/ui/events"):
        text = client.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>member" not in text, path
        assert "\u202e" not in text, path
    detail = client.get(f"/ui/events/{record['id']}").text
    assert "&lt;script&gt;alert(&#34;src&#34;)&lt;/script&gt;/a&lt;U+202E&gt;gpj.py" in detail
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail and "&lt;b&gt;member&lt;/b&gt;" in detail


def test_rows_stored_before_matches_were_typed_are_shown_without_failing(client, collector, enroll, reviewer):
    """A row an earlier collector stored may hold anything under the new names: shown as text, never computed on."""
    from server.db.tables import events

    agent = enroll()
    record = _record(FINGERPRINT)
    assert _post(client, agent, record).status_code == 200
    junk = fingerprint(lines=[[12, "x"], "55-71", None], source_lines="nope", coverage="most", source=7, kind="fingerprint")
    with collector.db.write() as conn:
        conn.execute(events.update().where(events.c.id == record["id"]).values(body=json.dumps({**record, "matches": [junk, {"rule": "r", "kind": ["odd"]}]})))
    _ui_session(client, reviewer)
    page = client.get(f"/ui/events/{record['id']}")
    assert page.status_code == 200
    assert _rows(page.text, "Matched lines, side by side") == [["1", '[12, "x"]', "—"], ["2", '"55-71"', "—"], ["3", "null", "—"]]
    assert "&#34;most&#34; of the scanned text" in page.text
    assert client.get("/ui/events").status_code == 200


def test_a_long_match_shows_its_first_ranges_and_counts_the_rest(client, enroll, reviewer):
    agent = enroll()
    many = [[n, n + 1] for n in range(1, 500, 2)]
    record = _record(fingerprint(lines=many, source_lines=many))
    assert _post(client, agent, record).status_code == 200
    _ui_session(client, reviewer)
    page = client.get(f"/ui/events/{record['id']}").text
    rows = _rows(page, "Matched lines, side by side")
    assert len(rows) == 200 and rows[-1] == ["200", "399–400", "399–400"]
    assert "and 50 more ranges" in page and "500 lines in 250 ranges" in page


@pytest.mark.parametrize(
    "value, shown",
    [(0.42, "42%"), (1, "100%"), (1.0, "100%"), (0, "0%"), (0.004, "under 1%"), (0.996, "over 99%"), (None, None), (1.5, "1.5"), ("most", '"most"'), (True, "true")],
)
def test_coverage_reads_as_a_percentage_that_never_rounds_to_none_or_all(value, shown):
    from server.ui.matches import coverage_text

    assert coverage_text(value) == shown


# --- exports and CEF ---------------------------------------------------------------------------


def test_exports_carry_the_kind_and_corpus_file_of_each_rule(client, enroll, reviewer):
    agent = enroll()
    record = _record(FINGERPRINT, fingerprint(source="billing/tax.py"), YARA, fingerprint(rule="acme_web", source="web/app.ts"))
    old = _record(YARA)
    assert _post(client, agent, record, old).status_code == 200
    csrf = _ui_session(client, reviewer)
    exported = client.post("/ui/events/export", data={"format": "csv", "csrf": csrf})
    assert exported.status_code == 200
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    assert rows[record["id"]]["rules"] == "acme_billing;private_key_pem;acme_web"
    assert rows[record["id"]]["rule_kinds"] == "fingerprint;yara;fingerprint"
    assert rows[record["id"]]["fingerprint_sources"] == "billing/invoice.py;billing/tax.py;web/app.ts"
    assert (rows[old["id"]]["rule_kinds"], rows[old["id"]]["fingerprint_sources"]) == ("yara", "")
    lines = client.post("/ui/events/export", data={"format": "jsonl", "csrf": csrf}).text.splitlines()
    exported_matches = {json.loads(line)["id"]: json.loads(line)["matches"] for line in lines}
    assert exported_matches[record["id"]][0] == FINGERPRINT

    shown = next(item for item in _events(client, reviewer) if item["id"] == record["id"])
    _, fields = parse_cef(format_cef(shown, product_version="0.1.0"))
    assert fields["cs1Label"] == "rules" and fields["cs1"] == "acme_billing,private_key_pem,acme_web"
    assert fields["cs6Label"] == "ruleKinds" and fields["cs6"] == "fingerprint,yara,fingerprint"
    assert fields["flexString1Label"] == "fingerprintSources" and fields["flexString1"] == "billing/invoice.py,billing/tax.py,web/app.ts"


@pytest.mark.parametrize("fmt", ["csv", "cef"])
def test_hostile_corpus_file_names_stay_inert_in_exports(fmt):
    item = {"id": "1", "type": "file.write", "channel": "file", "matches": [fingerprint(source="=HYPERLINK(\"x\")\n|a=b\u202e", kind="fingerprint")]}
    out = io.StringIO(newline="")
    write_events([item], out, fmt=fmt, product_version="0.1.0")  # type: ignore[arg-type]
    if fmt == "csv":
        row = dict(zip(CSV_COLUMNS, list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1]))
        assert row["fingerprint_sources"] == "'=HYPERLINK(\"x\")\n|a=b<U+202E>"
    else:
        _, fields = parse_cef(out.getvalue().rstrip("\n"))
        assert fields["flexString1"] == "=HYPERLINK(\"x\")\n|a=b<U+202E>"
