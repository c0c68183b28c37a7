"""The Marks page and the event's Marks card (SQLite and PostgreSQL): admins mint, mark and trace;
reviewers reach none of it and see a seat only on an event that carries a mark."""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from typing import Any

from sqlalchemy import select

from agent.marks.payload import read_canaries
from server.db.tables import audit_log
from server.store import vendors
from tests.collector_env import event_record
from tests.test_ui_views import _log_in

VENDOR = "acme-bpo"
PROSE = "\n\n".join(
    f"Paragraph {n}. The quarterly pricing review covers every service line we offer to partners, "
    "with the proposed rates, the expected volumes and the risks each change brings to the contract renewals this year." * 2
    for n in range(8)
)


def _vendor(collector: Any, name: str = VENDOR) -> None:
    with collector.db.write() as conn:
        vendors.get_or_create(conn, name=name, now=collector.clock())


def _audit(collector: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """The audit entries of marks and signatures (logins left out)."""
    with collector.db.read() as conn:
        entries = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    return [(e.action, e.actor, json.loads(e.details)) for e in entries if e.action.startswith(("marks.", "signatures."))]


def _canary(client: Any, csrf: str, kind: str = "code", seat: str = "jdoe", vendor: str = VENDOR) -> Any:
    return client.post("/ui/marks/canary", data={"csrf": csrf, "vendor": vendor, "seat": seat, "kind": kind})


def test_reviewers_reach_no_marks_page_and_see_no_link(client, collector, admin, reviewer):
    _vendor(collector)
    csrf = _log_in(client, reviewer)
    assert 'href="/ui/marks"' not in client.get("/ui/events").text
    assert client.get("/ui/marks").status_code == 403
    assert _canary(client, csrf).status_code == 403
    files = [("files", ("a.txt", PROSE.encode(), "text/plain"))]
    assert client.post("/ui/marks/apply", data={"csrf": csrf, "vendor": VENDOR, "seat": "jdoe"}, files=files).status_code == 403
    assert client.post("/ui/marks/trace", data={"csrf": csrf}, files=files).status_code == 403
    assert [action for action, _, _ in _audit(collector)] == []
    _log_in(client, admin)
    assert 'href="/ui/marks"' in client.get("/ui/events").text
    assert client.get("/ui/marks").status_code == 200
    # A form from another site (no CSRF token) is refused before anything is made.
    assert client.post("/ui/marks/canary", data={"vendor": VENDOR, "seat": "jdoe", "kind": "code"}).status_code == 403
    assert [action for action, _, _ in _audit(collector)] == []


def test_admin_mints_a_canary_sees_it_listed_and_traces_the_decoy(client, collector, admin):
    _vendor(collector)
    _vendor(collector, "globex-it")
    csrf = _log_in(client, admin)
    answer = _canary(client, csrf, seat="<b>j.doe</b>")
    assert answer.status_code == 200, answer.text
    mark_id = answer.headers["x-dlp-mark-id"]
    assert re.fullmatch(r"mk_[0-9a-f]{16}", mark_id) and answer.headers["x-dlp-signature-version"] == "1"
    name = re.search(r'filename="([^"]+)"', answer.headers["content-disposition"]).group(1)
    assert name.endswith(".py")
    ast.parse(answer.content)
    page = client.get("/ui/marks").text
    assert mark_id in page and "&lt;b&gt;j.doe&lt;/b&gt;" in page and "<b>j.doe" not in page and name in page
    assert mark_id not in client.get("/ui/marks?vendor=globex-it").text
    assert mark_id in client.get("/ui/marks?seat=%3Cb%3EJ.DOE%3C/b%3E&kind=canary").text
    assert mark_id not in client.get("/ui/marks?kind=watermark").text

    traced = client.post("/ui/marks/trace", data={"csrf": csrf}, files=[("files", ("found.py", answer.content, "text/plain")), ("files", ("other.txt", PROSE.encode(), "text/plain"))])
    assert traced.status_code == 200, traced.text
    results = traced.text.split('id="trace-results"', 1)[1].split("</section>", 1)[0]
    found_row, other_row = results.split("found.py", 1)[1].split("other.txt", 1)
    assert mark_id in found_row and "&lt;b&gt;j.doe&lt;/b&gt;" in found_row and VENDOR in found_row and "conclusive" in found_row
    assert "No registered mark." in other_row and mark_id not in other_row
    actions = _audit(collector)
    assert [(action, actor) for action, actor, _ in actions] == [("signatures.publish", "alice"), ("marks.canary", "alice"), ("marks.trace", "alice")]
    secret = read_canaries(answer.content.decode())[0].payload.decode()
    assert secret not in json.dumps([details for _, _, details in actions])


def test_canary_form_problems_are_shown_and_nothing_is_made(client, collector, admin):
    _vendor(collector)
    csrf = _log_in(client, admin)
    unknown = _canary(client, csrf, vendor="nobody-inc")
    assert unknown.status_code == 404 and "No canary was made" in unknown.text and "nobody-inc" in unknown.text
    odd = _canary(client, csrf, kind="spreadsheet")
    assert odd.status_code == 422 and "Choose the kind of decoy" in odd.text
    assert _canary(client, csrf, vendor="").status_code == 422
    assert [action for action, _, _ in _audit(collector)] == []


def test_apply_downloads_one_marked_copy_or_a_zip_and_says_what_was_not_marked(client, collector, admin):
    _vendor(collector)
    csrf = _log_in(client, admin)
    form = {"csrf": csrf, "vendor": VENDOR, "seat": "jdoe", "note": "Q3 pricing pack"}
    one = client.post("/ui/marks/apply", data=form, files=[("files", ("pricing.txt", PROSE.encode(), "text/plain"))])
    assert one.status_code == 200, one.text
    assert 'filename="pricing.txt"' in one.headers["content-disposition"] and one.content != PROSE.encode()
    mark_id = one.headers["x-dlp-mark-id"]
    traced = client.post("/ui/marks/trace", data={"csrf": csrf}, files=[("files", ("leaked.txt", one.content, "text/plain"))]).text
    assert mark_id in traced and "jdoe" in traced

    several = client.post(
        "/ui/marks/apply",
        data=form,
        files=[("files", ("a.txt", PROSE.encode(), "text/plain")), ("files", ("a.txt", PROSE.encode(), "text/plain")), ("files", ("blob.bin", bytes(range(256)) * 8, "application/octet-stream"))],
    )
    assert several.status_code == 200, several.text
    assert several.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(several.content)) as archive:
        names = archive.namelist()
        listing = archive.read("MARKS.txt").decode()
    assert names == ["a.txt", "a (2).txt", "MARKS.txt"]
    assert "Not marked:\nblob.bin: " in listing
    page = client.get("/ui/marks?vendor=acme-bpo&kind=watermark").text
    assert page.count("Q3 pricing pack") == 3

    nothing = client.post("/ui/marks/apply", data=form, files=[("files", ("blob.bin", bytes(range(256)) * 8, "application/octet-stream"))])
    assert nothing.status_code == 422 and "Nothing was marked: blob.bin" in nothing.text
    missing = client.post("/ui/marks/apply", data=form)
    assert missing.status_code == 422 and "Choose at least one file" in missing.text


def test_event_page_shows_the_marks_card_with_seat_and_elsewhere(client, collector, admin, reviewer, enroll):
    _vendor(collector)
    csrf = _log_in(client, admin)
    decoy = _canary(client, csrf, seat="jdoe")
    mark_id = decoy.headers["x-dlp-mark-id"]
    match = {"kind": "mark", "rule": f"canary_{mark_id[3:]}", "namespace": "canaries-acme-bpo", "severity": "critical", "category": "canary",
             "tags": [], "offsets": [120], "carrier": "canary", "mark_id": mark_id}  # fmt: skip
    own = enroll(vendor=VENDOR, hostname="ws-1")
    other = enroll(vendor=VENDOR, hostname="ws-9")  # another seat of the vendor: only its own agents have its canary rules
    home, away, plain = event_record(user="jdoe", matches=[match]), event_record(user="mallory", host="ws-9", matches=[match]), event_record()
    for agent, record in ((own, home), (other, away), (own, plain)):
        answer = client.post("/api/v1/events", json={"events": [record]}, headers=agent.headers)
        assert answer.status_code == 200, answer.text
    _log_in(client, reviewer)
    home_page = client.get(f"/ui/events/{home['id']}").text
    card = home_page.split("<h2>Marks</h2>", 1)[1].split("</section>", 1)[0]
    assert mark_id in card and "jdoe" in card and VENDOR in card and "its own seat" in card and "another seat or vendor turned up" not in card
    away_card = client.get(f"/ui/events/{away['id']}").text.split("<h2>Marks</h2>", 1)[1].split("</section>", 1)[0]
    assert mark_id in away_card and "jdoe" in away_card and "<strong>elsewhere</strong>" in away_card and "another seat or vendor turned up" in away_card
    assert "<h2>Marks</h2>" not in client.get(f"/ui/events/{plain['id']}").text


def test_trace_takes_files_past_the_default_body_limit(client, collector, admin):
    _vendor(collector)
    csrf = _log_in(client, admin)
    decoy = _canary(client, csrf, kind="credential", seat="ws-3")
    big = PROSE.encode() * (4 * 1024 * 1024 // len(PROSE)) + decoy.content  # a dump with the key file at its end
    assert len(big) > 3 << 20
    traced = client.post("/ui/marks/trace", data={"csrf": csrf}, files=[("files", ("dump.txt", big, "text/plain"))])
    assert traced.status_code == 200, traced.text[:500]
    assert decoy.headers["x-dlp-mark-id"] in traced.text and "ws-3" in traced.text


def test_marking_canaries_and_tracing_run_off_the_event_loop(client, collector, admin, monkeypatch):
    from server.ui import mark_pages

    ran: list[str] = []
    real = mark_pages.run_in_threadpool

    async def recorded(func: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(getattr(func, "__name__", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(mark_pages, "run_in_threadpool", recorded)
    _vendor(collector)
    csrf = _log_in(client, admin)
    marked = client.post("/ui/marks/apply", data={"csrf": csrf, "vendor": VENDOR, "seat": "jdoe"}, files=[("files", ("p.txt", PROSE.encode(), "text/plain"))])
    assert marked.status_code == 200, marked.text
    assert _canary(client, csrf).status_code == 200
    assert client.post("/ui/marks/trace", data={"csrf": csrf}, files=[("files", ("p.txt", marked.content, "text/plain"))]).status_code == 200
    assert len(ran) == 3, ran
