"""Cases and vendor scoping end to end: Debian's Chromium, driven by Playwright, against a real `dlp-server serve` on SQLite.

A customer reviewer selects events in the list, makes a case, assigns, comments, closes it with an
outcome and exports it (the evidence zip is opened and its hashes recomputed). A reviewer scoped
to one vendor and that vendor's lead then look everywhere a record of another vendor could show:
the event list, an event's page by URL, the export, the vendors overview's charts, a search by a
hash both vendors have, the agents, and the cases. Screenshots go to ``$DLP_UI_SCREENSHOTS`` when
set, else under the test's temporary directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.collector_env import ServeProcess, event_record
from tests.test_ui_browser import _browser_installed, _dlp_server, _iso, _log_in, browser, shots  # noqa: F401  (fixtures)

SHARED_SHA256 = "5e" * 32
"""A file both vendors' staff copied: a search by it must show only the searcher's vendor."""
OTHER = "acme"
"""Every record of the vendor the scoped accounts may not see carries this word (vendor, host, user, path)."""
VENDORS = {"acme-bpo": ("acme-ws-017", "alice.acme"), "globex-it": ("globex-ws-003", "gary.globex")}


def _events(host: str, user: str, now: datetime) -> list[dict[str, Any]]:
    """Four events of one workstation: two USB copies (one of the shared file), a clipboard copy, a low file write."""
    tag = host.split("-")[0]
    usb = {"serial": f"{tag.upper()}-SN-1", "vendor": "SanDisk", "model": "Ultra", "fstype": "exfat", "mountpoint": "/media/stick"}
    return [
        event_record(host=host, user=user, sha256=SHARED_SHA256, path=f"/media/stick/{tag}-payroll.xlsx", device=usb, occurred_at=_iso(now - timedelta(hours=2))),
        event_record(host=host, user=user, sha256="7a" * 32, path=f"/media/stick/{tag}-contracts.zip", device=usb, severity="high", occurred_at=_iso(now - timedelta(hours=5))),
        event_record(type="clipboard.copy", channel="clipboard", severity="medium", host=host, user=user, device=None, path=None, sha256="3c" * 32,
                     matches=[{"rule": "credentials.aws_key", "severity": "medium"}], occurred_at=_iso(now - timedelta(days=1))),
        event_record(type="file.write", channel="file", severity="low", host=host, user=user, device=None, path=f"/home/{user}/Documents/{tag}-notes.docx",
                     matches=[{"rule": "confidentiality.marking", "severity": "low"}], occurred_at=_iso(now - timedelta(days=2))),
    ]  # fmt: skip


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two vendors' agents with four events each; a customer reviewer, a reviewer scoped to globex-it and
    globex-it's lead; a case of acme's events only and a case holding both vendors' events."""
    env = {k: v for k, v in os.environ.items() if k != "DLP_DATABASE_URL"}
    data_dir = tmp_path / "collector"
    first = _dlp_server("init", "--data-dir", str(data_dir), env=env)
    serve = ServeProcess(data_dir, env)
    try:
        serve.wait_ready()
        now = datetime.now(UTC)
        ids: dict[str, list[str]] = {}
        for vendor, (host, user) in VENDORS.items():
            token = _dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", vendor, env=env)["token"]
            agent = requests.post(f"{serve.url}/api/v1/enroll", json={"token": token, "hostname": host, "os": "linux", "agent_version": "0.1.0"}, timeout=10).json()
            records = _events(host, user, now)
            answer = requests.post(f"{serve.url}/api/v1/events", json={"events": records}, headers={"Authorization": f"Bearer {agent['credential']}"}, timeout=10)
            assert answer.status_code == 200, answer.text
            ids[vendor] = [record["id"] for record in records]
        accounts = {"admin": (first["admin_user"], first["admin_password"])}
        for name, role, vendor in (("rita", "reviewer", None), ("sam", "reviewer", "globex-it"), ("lena", "vendor_lead", "globex-it")):
            made = _dlp_server("user", "add", name, "--role", role, *(("--vendor", vendor) if vendor else ()), "--data-dir", str(data_dir), env=env)
            accounts[name] = (name, made["password"])
        admin = {"Authorization": f"Bearer {first['api_token']}"}
        cases = {}
        for key, title, events in (("acme", "acme-bpo payroll on a stick", ids["acme-bpo"][:2]), ("mixed", "Shared payroll file", [ids["acme-bpo"][0], ids["globex-it"][0]])):
            answer = requests.post(f"{serve.url}/api/v1/cases", json={"title": title, "events": events}, headers=admin, timeout=10)
            assert answer.status_code == 201, answer.text
            cases[key] = answer.json()["id"]
        internal = {"body": "Internal: legal wants the contract checked before we tell the vendor", "internal": True}
        assert requests.post(f"{serve.url}/api/v1/cases/{cases['mixed']}/comments", json=internal, headers=admin, timeout=10).status_code == 201
        yield {"url": serve.url, "accounts": accounts, "ids": ids, "cases": cases, "admin_headers": admin}
    finally:
        assert serve.stop() == 0, serve.log.read_text()[-2000:]


def _open(chromium: Any, site: dict[str, Any], who: str) -> tuple[Any, Any]:
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{site['url']}/ui/events")
    _log_in(page, site["accounts"][who])
    assert "/ui/events" in page.url, page.url
    return context, page


def _chain_holds(entry: dict[str, Any]) -> bool:
    """The entry's hash recomputed from its own fields, as server/store/audit.py chains them."""
    content = json.dumps([entry["seq"], entry["at"], entry["actor"], entry["action"], entry["target"], entry["details_json"]], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((entry["prev_hash"] + content).encode("utf-8")).hexdigest() == entry["hash"]


def test_a_case_from_the_event_list_to_its_evidence_file(site, shots, browser):  # noqa: F811  (fixtures imported above)
    context, page = _open(browser, site, "rita")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None)

    page.goto(f"{site['url']}/ui/events?vendor=globex-it&channel=usb")
    picked = site["ids"]["globex-it"][:2]
    for event_id in picked:
        page.locator(f'input[name="ids"][value="{event_id}"]').check()
    page.locator("#case-title").fill("USB copies at globex")
    page.screenshot(path=str(shots / "c01-events-picked.png"), full_page=True)
    with page.expect_navigation():
        page.locator("#new-case").click()
    found = re.search(r"/ui/cases/(\d+)", page.url)
    assert found, page.url
    case_id = found.group(1)
    assert "USB copies at globex" in page.locator("h1#case-title").inner_text()
    assert sorted(page.locator("li.case-event").evaluate_all("items => items.map(item => item.dataset.eventId)")) == sorted(picked)

    form = page.locator("#case-update")
    form.locator('select[name="assignee"]').select_option("rita")
    form.locator('select[name="status"]').select_option("investigating")
    with page.expect_navigation():
        page.locator("#case-save").click()
    assert page.locator("#case-update select[name='status']").input_value() == "investigating"
    assert page.locator("#case-update select[name='assignee']").input_value() == "rita"

    comment = page.locator("#case-comment")
    comment.locator('textarea[name="body"]').fill("Both sticks were handed in; globex HR informed.")
    with page.expect_navigation():
        page.locator("#case-comment-submit").click()
    assert "Both sticks were handed in" in page.locator("li.comment").last.inner_text()

    form = page.locator("#case-update")
    form.locator('select[name="status"]').select_option("closed")
    form.locator('select[name="outcome"]').select_option("policy_breach")
    with page.expect_navigation():
        page.locator("#case-save").click()
    assert page.locator("#case-update select[name='status']").input_value() == "closed"
    assert page.locator("#case-update select[name='outcome']").input_value() == "policy_breach"
    history = page.locator("ol#case-history").inner_text()
    assert "case.create" in history and "case.comment" in history and "case.update" in history
    page.screenshot(path=str(shots / "c02-case-closed.png"), full_page=True)

    with page.expect_download() as download_info:
        page.locator("#case-export").click()
    data = Path(download_info.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert {"case.json", "summary.html", "SHA256SUMS"} <= files.keys()
    for line in files["SHA256SUMS"].decode().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256(files[name.lstrip("*")]).hexdigest() == digest, name
    evidence = json.loads(files["case.json"])
    assert str(evidence["case"]["id"]) == case_id and evidence["case"]["status"] == "closed" and evidence["case"]["outcome"] == "policy_breach"
    assert sorted(event["id"] for event in evidence["events"]) == sorted(picked)
    assert [c["body"] for c in evidence["comments"]] == ["Both sticks were handed in; globex HR informed."]
    actions = [entry["action"] for entry in evidence["audit"]]
    assert actions[0] == "case.create" and "case.comment" in actions and "case.update" in actions and actions[-1] == "case.export"
    assert all(_chain_holds(entry) for entry in evidence["audit"]), "every entry's hash recomputes from the file alone"
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in zip(evidence["audit"], evidence["audit"][1:]) if later["seq"] == earlier["seq"] + 1)
    assert evidence["chain"]["ok"] is True
    assert "Both sticks were handed in" in files["summary.html"].decode() and "<script" not in files["summary.html"].decode()

    page.goto(f"{site['url']}/ui/events/{picked[0]}")
    assert page.locator("section#event-cases a.case-link", has_text="USB copies at globex").count() == 1
    page.goto(f"{site['url']}/ui/cases?status=closed")
    rows = page.locator("table.cases tr.case-row")
    assert rows.count() == 1 and "USB copies at globex" in rows.first.inner_text()
    page.screenshot(path=str(shots / "c03-cases-closed.png"), full_page=True)
    context.close()
    assert errors == [], errors


def _nothing_of_acme(page: Any, where: str) -> None:
    html = page.content().lower()
    assert OTHER not in html, f"{where}: {html[max(0, html.find(OTHER) - 200) : html.find(OTHER) + 100]}"


@pytest.mark.parametrize("who", ["sam", "lena"])
def test_a_vendor_scoped_account_sees_nothing_of_another_vendor(site, shots, browser, who):  # noqa: F811  (fixtures imported above)
    context, page = _open(browser, site, who)
    base = site["url"]
    acme_event, globex_event = site["ids"]["acme-bpo"][0], site["ids"]["globex-it"][0]

    page.goto(f"{base}/ui/events")
    assert page.locator("table.events tbody tr").count() == 4
    _nothing_of_acme(page, "event list")
    if who == "lena":
        assert "gary.globex" not in page.content() and "person-" in page.content(), "a vendor lead sees staff as pseudonyms"
    page.screenshot(path=str(shots / f"s01-{who}-events.png"), full_page=True)

    response = page.goto(f"{base}/ui/events/{acme_event}")
    assert response is not None and response.status == 404
    _nothing_of_acme(page, "another vendor's event by URL")
    response = page.goto(f"{base}/ui/events/{globex_event}")
    assert response is not None and response.status == 200
    _nothing_of_acme(page, "own event page")

    page.goto(f"{base}/ui/events?sha256={SHARED_SHA256}")
    rows = page.locator("table.events tbody tr")
    assert rows.count() == 1 and "globex-ws-003" in rows.first.inner_text()
    _nothing_of_acme(page, "search by hash")

    page.goto(f"{base}/ui/events")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="JSON lines").click()
    exported = [json.loads(line) for line in Path(download_info.value.path()).read_text().splitlines() if line.strip()]
    assert sorted(item["id"] for item in exported) == sorted(site["ids"]["globex-it"])
    assert OTHER not in json.dumps(exported).lower()
    if who == "lena":
        assert "gary.globex" not in json.dumps(exported)

    for path in ("/ui/vendors", "/ui/vendors?days=90", "/ui/agents"):
        response = page.goto(base + path)
        assert response is not None and response.status == 200, path
        _nothing_of_acme(page, path)
    assert "globex-ws-003" in page.content()
    page.goto(f"{base}/ui/vendors")
    assert page.locator("svg").count() >= 1 and "globex-it" in page.content()
    page.screenshot(path=str(shots / f"s02-{who}-vendors.png"), full_page=True)

    page.goto(f"{base}/ui/cases")
    rows = page.locator("table.cases tr.case-row")
    assert rows.count() == 1 and "Shared payroll file" in rows.first.inner_text()
    _nothing_of_acme(page, "case list")
    response = page.goto(f"{base}/ui/cases/{site['cases']['acme']}")
    assert response is not None and response.status == 404
    _nothing_of_acme(page, "another vendor's case by URL")
    response = page.goto(f"{base}/ui/cases/{site['cases']['mixed']}")
    assert response is not None and response.status == 200
    assert page.locator("li.case-event").evaluate_all("items => items.map(item => item.dataset.eventId)") == [globex_event]
    assert ("legal wants" in page.content()) == (who == "sam"), "internal comments are the customer's side only"
    if who == "lena":
        assert page.locator("#case-update").count() == 0, "a vendor lead may not change a case"
        assert page.locator('#case-comment input[name="internal"]').count() == 0
        assert "gary.globex" not in page.content() and "person-" in page.content()
        page.locator('#case-comment textarea[name="body"]').fill("Our staff member returned the stick.")
        with page.expect_navigation():
            page.locator("#case-comment-submit").click()
        assert "Our staff member returned the stick." in page.locator("li.comment").last.inner_text()
    page.screenshot(path=str(shots / f"s03-{who}-case.png"), full_page=True)
    with page.expect_download() as download_info:
        page.locator("#case-export").click()
    with zipfile.ZipFile(download_info.value.path()) as archive:
        evidence = json.loads(archive.read("case.json"))
        summary = archive.read("summary.html").decode().lower()
    assert [event["id"] for event in evidence["events"]] == [globex_event]
    shown = {key: value for key, value in evidence.items() if key != "audit"}
    assert OTHER not in json.dumps(shown).lower() and OTHER not in summary
    assert all(entry.get("withheld") or acme_event not in entry["details_json"] for entry in evidence["audit"])

    if who == "lena":
        for path in ("/ui/people", "/ui/timeline?user=gary.globex", "/ui/watchlist"):
            response = page.goto(base + path)
            assert response is not None and response.status == 403, path
    else:
        for path in ("/ui/people", "/ui/timeline?host=globex-ws-003", f"/ui/timeline?device={'GLOBEX-SN-1'}", "/ui/timeline?user=alice.acme", "/ui/timeline?host=acme-ws-017"):
            response = page.goto(base + path)
            assert response is not None and response.status in (200, 404), path
            html = page.content().lower()
            assert OTHER not in html.replace("alice.acme", "").replace("acme-ws-017", "") and "acme-bpo" not in html, path
            assert "/ui/events/" + acme_event not in html, path
    context.close()
