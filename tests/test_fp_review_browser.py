"""A fingerprint match as a reviewer sees it: Debian's Chromium, driven by Playwright, against a real
`dlp-server serve` on SQLite. Screenshots go where tests/test_ui_browser.py puts them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.collector_env import ServeProcess, event_record
from tests.test_fp_review import FINGERPRINT, YARA
from tests.test_ui_browser import _browser_installed, _dlp_server, _log_in, browser, shots  # noqa: F401  (fixtures)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A collector with one agent's event holding a fingerprint match beside a YARA one."""
    env = {k: v for k, v in os.environ.items() if k != "DLP_DATABASE_URL"}
    data_dir = tmp_path / "collector"
    _dlp_server("init", "--data-dir", str(data_dir), env=env)
    reviewer = _dlp_server("user", "add", "rita", "--role", "reviewer", "--data-dir", str(data_dir), env=env)
    serve = ServeProcess(data_dir, env)
    try:
        serve.wait_ready()
        token = _dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", "acme-bpo", env=env)["token"]
        agent = requests.post(f"{serve.url}/api/v1/enroll", json={"token": token, "hostname": "acme-ws-017", "os": "linux", "agent_version": "0.1.0"}, timeout=10).json()
        record = event_record(
            type="file.write", channel="file", device=None, severity="critical", host="acme-ws-017",
            path="/home/jdoe/Desktop/notes.txt", matches=[FINGERPRINT, YARA],
        )  # fmt: skip
        response = requests.post(f"{serve.url}/api/v1/events", json={"events": [record]}, headers={"Authorization": f"Bearer {agent['credential']}"}, timeout=10)
        assert response.status_code == 200, response.text
        yield {"url": serve.url, "reviewer": ("rita", reviewer["password"]), "event": record["id"]}
    finally:
        assert serve.stop() == 0, serve.log.read_text()[-2000:]


def test_a_reviewer_reads_a_fingerprint_match_side_by_side(site, shots, browser):  # noqa: F811  (fixtures imported above)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda error: blocked.append(str(error)))

    page.goto(f"{site['url']}/ui/events")
    _log_in(page, site["reviewer"])
    row = page.locator("table.events tbody tr")
    assert row.count() == 1
    rules = row.locator("td.rules")
    assert rules.locator("a").inner_text() == "acme_billing" and rules.locator(".kind").inner_text() == "fingerprint"
    page.screenshot(path=str(shots / "fp-01-events.png"), full_page=True)

    rules.locator("a").click()
    page.wait_for_load_state()
    assert page.url.endswith("?rule=acme_billing"), "the index name filters like a rule"
    row.locator("td a").first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/ui/events/{site['event']}")

    card = page.locator("section.fingerprint")
    assert card.get_by_role("heading", level=2).inner_text().startswith("Fingerprint match: acme_billing")
    facts = card.locator("dl.facts").inner_text()
    assert "billing/invoice.py" in facts and "42% of the scanned text's tokens" in facts and "38 lines in 3 ranges" in facts
    ranges = card.get_by_role("table", name="Matched lines, side by side")
    assert ranges.is_visible()
    headers = [cell.inner_text() for cell in ranges.locator("thead th").all()]
    assert headers[1].startswith("Scanned file") and headers[2].startswith("Corpus file") and "billing/invoice.py" in headers[2]
    cells = [[cell.inner_text() for cell in line.locator("td").all()] for line in ranges.locator("tbody tr").all()]
    assert cells == [["1", "12–31", "140–159"], ["2", "40", "170"], ["3", "55–71", "201–217"]]
    page.get_by_role("link", name="lines side by side").click()
    assert page.url.endswith("#fingerprint-1")
    assert card.bounding_box()["y"] < 900, "the link from the rules table scrolls the match's card into view"
    page.screenshot(path=str(shots / "fp-02-event-detail.png"), full_page=True)
    context.close()
    assert blocked == [], blocked
