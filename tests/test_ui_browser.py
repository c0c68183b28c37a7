"""The review UI end to end: Debian's Chromium, driven by Playwright, against a real `dlp-server serve` on SQLite.

Every page visited is saved as a screenshot for people to look at: into ``$DLP_UI_SCREENSHOTS``
when set, else under this test's pytest temporary directory (the path is printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.collector_env import ServeProcess, event_record

CHROMIUM = "/usr/bin/chromium"
# What a leaker's program may call itself and run with: markup, CEF separators, a line break, a bidi override.
HOSTILE_EXE = '/tmp/<img src=x onerror="document.title=1">'
HOSTILE_CMDLINE = 'xclip -i "<script>document.title=2</script>" |x=y\nsecond line \u202egpj.exe'
OWNER = {"pid": 4242, "exe": HOSTILE_EXE, "cmdline": HOSTILE_CMDLINE, "uid": 1000, "user": "<b>mallory</b>", "ppid": 1, "parents": []}
CLEARED = {"action": "clear", "mode": "enforce", "done": True, "detail": "the clipboard selection was replaced by a notice"}
GOOD_PACK = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: apt-get install chromium (make test does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is missing: pip install -e '.[server,dev]' (make test does)"
    return None


@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    """A developer without Chromium gets a skip; CI, which runs make test, must have it."""
    missing = _missing()
    if missing and os.environ.get("CI"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def _dlp_server(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "server.cli", *args, "--json"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A collector on SQLite with two vendors' agents, a dozen events, a published pack and two users."""
    env = {k: v for k, v in os.environ.items() if k != "DLP_DATABASE_URL"}
    data_dir = tmp_path / "collector"
    first = _dlp_server("init", "--data-dir", str(data_dir), env=env)
    reviewer = _dlp_server("user", "add", "rita", "--role", "reviewer", "--data-dir", str(data_dir), env=env)
    serve = ServeProcess(data_dir, env)
    try:
        serve.wait_ready()
        now = datetime.now(UTC)
        for vendor, host in (("acme-bpo", "acme-ws-017"), ("globex-it", "globex-ws-003")):
            token = _dlp_server("token", "create", "--data-dir", str(data_dir), "--vendor", vendor, env=env)["token"]
            agent = requests.post(f"{serve.url}/api/v1/enroll", json={"token": token, "hostname": host, "os": "linux", "agent_version": "0.1.0"}, timeout=10).json()
            headers = {"Authorization": f"Bearer {agent['credential']}"}
            records = [event_record(host=host, occurred_at=_iso(now - timedelta(hours=3 * n + 1))) for n in range(3)]
            records.append(event_record(type="file.write", channel="file", severity="low", host=host, user="mallory", device=None, path="/home/mallory/Documents/q3-pricing.docx",
                                        matches=[{"rule": "confidentiality.marking", "severity": "low"}], occurred_at=_iso(now - timedelta(days=2))))
            records.append(event_record(type="clipboard.copy", channel="clipboard", severity="high", host=host, device=None, path=None, sha256="ab" * 32,
                                        matches=[{"rule": "credentials.aws_key", "severity": "high", "snippet": "aws_secret_access_key = w******* k***"}],
                                        occurred_at=_iso(now - timedelta(days=5)), process=OWNER, enforcement=CLEARED))
            assert requests.post(f"{serve.url}/api/v1/events", json={"events": records}, headers=headers, timeout=10).status_code == 200
            heartbeat = {"agent_version": "0.1.0", "ruleset_version": "148583d2a3f6984c", "spool_depth": 2, "dropped": 0}
            assert requests.post(f"{serve.url}/api/v1/heartbeat", json=heartbeat, headers=headers, timeout=10).status_code == 200
        admin_headers = {"Authorization": f"Bearer {first['api_token']}"}
        assert requests.post(f"{serve.url}/api/v1/signatures", json={"packs": {"quiet": GOOD_PACK}, "note": "starter"}, headers=admin_headers, timeout=30).status_code == 201
        yield {"url": serve.url, "admin": (first["admin_user"], first["admin_password"]), "reviewer": ("rita", reviewer["password"])}
    finally:
        assert serve.stop() == 0, serve.log.read_text()[-2000:]


@pytest.fixture
def shots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = Path(os.environ.get("DLP_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield instance
        instance.close()


def _log_in(page: Any, who: tuple[str, str]) -> None:
    page.get_by_label("User name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_review_workflow_in_a_real_browser(site, shots, browser):
    base = site["url"]
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda error: blocked.append(str(error)))

    page.goto(f"{base}/ui/events?severity=critical")
    assert "/ui/login" in page.url
    page.screenshot(path=str(shots / "01-login.png"), full_page=True)
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type(site["admin"][0])  # by keyboard alone
    page.keyboard.press("Tab")
    page.keyboard.type(site["admin"][1])
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/ui/events?severity=critical"), "the login returns to the page first asked for"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.locator("table.events tbody tr").count() == 6
    page.goto(f"{base}/ui/events")
    assert page.locator("table.events tbody tr").count() == 10
    page.screenshot(path=str(shots / "02-events.png"), full_page=True)

    page.get_by_label("Vendor").select_option("globex-it")
    page.get_by_label("Severity").select_option("high,critical")
    page.get_by_label("Order").select_option("severity")
    page.get_by_role("button", name="Apply", exact=True).click()
    page.wait_for_load_state()
    assert "vendor=globex-it" in page.url and "sort=severity" in page.url
    rows = page.locator("table.events tbody tr")
    assert rows.count() == 4
    assert [rows.nth(n).locator(".sev").inner_text().lower() for n in range(4)] == ["critical"] * 3 + ["high"]
    page.screenshot(path=str(shots / "03-events-filtered.png"), full_page=True)

    rows.first.locator("td a").first.click()
    page.wait_for_load_state()
    assert "/ui/events/" in page.url
    event_id = page.url.rsplit("/", 1)[1]
    assert page.get_by_text("globex-ws-003").first.is_visible()
    assert page.get_by_text("4C530001").first.is_visible()
    page.get_by_label("Status").select_option("confirmed_leak")
    page.get_by_label("Assignee").select_option("rita")
    page.get_by_role("button", name="Save triage").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").inner_text() == "Triage updated."
    page.get_by_label("Add a comment").fill("USB stick collected from the desk; HR informed.")
    page.get_by_role("button", name="Add comment").click()
    page.wait_for_load_state()
    assert page.get_by_text("USB stick collected from the desk; HR informed.").is_visible()
    assert "confirmed leak" in page.locator("aside").inner_text()
    page.screenshot(path=str(shots / "04-event-detail.png"), full_page=True)

    page.goto(f"{base}/ui/audit")
    assert "Hash chain verified" in page.get_by_role("status").inner_text()
    first_row = page.locator("table.audit tbody tr").first
    assert "event.comment" in first_row.inner_text()
    triage_row = page.locator("table.audit tbody tr", has_text="event.triage")
    assert event_id in triage_row.inner_text() and "confirmed_leak" in triage_row.inner_text()
    page.screenshot(path=str(shots / "05-audit.png"), full_page=True)

    for name, path in (("06-vendors", "/ui/vendors"), ("07-agents", "/ui/agents"), ("08-signatures", "/ui/signatures")):
        page.goto(base + path)
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert page.locator("table tbody tr").count() == 1 and "quiet" in page.locator("table").inner_text()
    page.get_by_label("Pack name", exact=True).fill("broken")
    page.get_by_label("Pack source", exact=True).fill('rule broken { strings: $a = "x" condition: $b }')
    page.get_by_role("button", name="Compile and publish").click()
    page.wait_for_load_state()
    assert 'undefined string "$b"' in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(shots / "09-signatures-refused.png"), full_page=True)

    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    assert "/ui/login" in page.url
    page.goto(f"{base}/ui/events")
    assert "/ui/login" in page.url, "the session ended with the logout"
    _log_in(page, site["reviewer"])
    nav = page.get_by_role("navigation", name="Main").inner_text()
    assert "Events" in nav and "Signatures" not in nav and "Audit" not in nav
    response = page.goto(f"{base}/ui/signatures")
    assert response is not None and response.status == 403
    assert "admins" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(shots / "10-reviewer-forbidden.png"), full_page=True)
    context.close()
    assert blocked == [], blocked


def test_a_hostile_process_reads_as_text_in_a_real_browser(site, shots, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{site['url']}/ui/events?channel=clipboard")
    _log_in(page, site["reviewer"])
    cell = page.locator("table.events tbody tr td.process span").first
    assert cell.inner_text() == HOSTILE_EXE.rsplit("/", 1)[1][:23] + "…"  # the full name is on the event's page
    assert cell.get_attribute("title") == HOSTILE_CMDLINE.replace("\u202e", "<U+202E>") + " (as <b>mallory</b>)"
    page.locator("table.events tbody tr td a").first.click()
    page.wait_for_load_state()
    process = page.locator("section.process")
    assert HOSTILE_EXE in process.inner_text() and "<b>mallory</b>" in process.inner_text()
    assert "second line <U+202E>gpj.exe" in process.inner_text()
    assert page.locator("section.enforcement").inner_text().count("cleared") == 1
    assert page.locator("section.process img, section.process script, section.process b").count() == 0
    assert dialogs == [] and page.title() not in ("1", "2")
    page.screenshot(path=str(shots / "11-event-process.png"), full_page=True)
    context.close()
