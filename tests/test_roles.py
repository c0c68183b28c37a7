"""Accounts and their reach: the vendor_lead role and vendor-scoped reviewers, made by CLI and API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.store import users as user_store
from server.store.scope import Scope


def dlp_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("role", "vendor_ids", "problem"),
    [
        ("admin", (1,), "every vendor"),
        ("vendor_lead", None, "exactly one vendor"),
        ("vendor_lead", (1, 2), "exactly one vendor"),
        ("reviewer", (), "at least one vendor"),
        ("auditor", None, "role must be one of"),
    ],
)
def test_roles_that_do_not_fit_their_scope_are_refused(role, vendor_ids, problem):
    with pytest.raises(ValueError, match=problem):
        user_store.check_role(role, vendor_ids)


def test_an_accounts_scope_follows_its_role():
    assert user_store.User(1, "root", "admin").scope == Scope.everything()
    assert user_store.User(2, "rita", "reviewer").scope.unrestricted
    scoped = user_store.User(3, "sam", "reviewer", (4, 2)).scope
    assert scoped.vendor_ids == frozenset({2, 4}) and not scoped.pseudonymize
    assert scoped.allows(2) and not scoped.allows(3) and not scoped.allows(None)
    lead = user_store.User(4, "lee", "vendor_lead", (2,)).scope
    assert lead.vendor_ids == frozenset({2}) and lead.pseudonymize
    assert Scope.vendors(()).where(object()) is not None  # an empty scope filters everything out


def test_cli_adds_a_vendor_lead_and_a_scoped_reviewer(tmp_path: Path, database_url: str):
    env = {**os.environ, "DLP_DATABASE_URL": database_url}
    data_dir = str(tmp_path / "collector")
    assert dlp_server("init", "--data-dir", data_dir, "--json", env=env).returncode == 0
    typo = dlp_server("user", "add", "lee", "--role", "vendor_lead", "--vendor", "acme-bpo", "--data-dir", data_dir, env=env)
    assert typo.returncode == 1 and "no vendor 'acme-bpo'" in typo.stderr, "an unknown vendor is refused, never created in passing"
    for vendor in ("acme-bpo", "globex"):
        assert dlp_server("token", "create", "--vendor", vendor, "--data-dir", data_dir, env=env).returncode == 0
    lead = dlp_server("user", "add", "lee", "--role", "vendor_lead", "--vendor", "acme-bpo", "--data-dir", data_dir, "--json", env=env)
    assert lead.returncode == 0, lead.stderr
    assert set(json.loads(lead.stdout)) == {"user", "password", "api_token"}
    scoped = dlp_server("user", "add", "sam", "--role", "reviewer", "--vendor", "acme-bpo", "--vendor", "globex", "--data-dir", data_dir, env=env)
    assert scoped.returncode == 0 and "vendors acme-bpo, globex" in scoped.stdout
    refused = dlp_server("user", "add", "lou", "--role", "vendor_lead", "--data-dir", data_dir, env=env)
    assert refused.returncode != 0 and "exactly one vendor" in refused.stderr


def test_api_creates_scoped_accounts_and_lists_their_vendors(client, admin):
    for vendor in ("acme-bpo", "globex"):
        assert client.post("/api/v1/vendors", json={"name": vendor}, headers=admin.headers).status_code == 201
    made = client.post("/api/v1/users", json={"name": "lee", "role": "vendor_lead", "vendors": ["acme-bpo"]}, headers=admin.headers)
    assert made.status_code == 201 and made.json()["vendors"] == ["acme-bpo"]
    both = client.post("/api/v1/users", json={"name": "sam", "role": "reviewer", "vendors": ["globex", "acme-bpo"]}, headers=admin.headers)
    assert both.status_code == 201
    bad = client.post("/api/v1/users", json={"name": "ann", "role": "admin", "vendors": ["acme-bpo"]}, headers=admin.headers)
    assert bad.status_code == 422 and "every vendor" in bad.text
    listed = {u["name"]: u for u in client.get("/api/v1/users", headers=admin.headers).json()["items"]}
    assert listed["lee"]["role"] == "vendor_lead" and listed["lee"]["vendors"] == ["acme-bpo"]
    assert listed["sam"]["vendors"] == ["acme-bpo", "globex"]
    assert listed["alice"]["vendors"] is None
    entries = client.get("/api/v1/audit", headers=admin.headers).json()["items"]
    created = [e for e in entries if e["action"] == "user.create" and e["target"] == "lee"]
    assert created and created[0]["details"]["vendors"] == ["acme-bpo"]


def test_api_refuses_an_account_of_an_unknown_vendor(client, admin):
    """A typo in a vendor's name must not create that vendor in passing (unaudited, with no ranges)."""
    assert client.post("/api/v1/vendors", json={"name": "acme-bpo"}, headers=admin.headers).status_code == 201
    refused = client.post("/api/v1/users", json={"name": "sam", "role": "reviewer", "vendors": ["acme-bpo", "acme-bop"]}, headers=admin.headers)
    assert refused.status_code == 404 and "acme-bop" in refused.json()["detail"]
    assert [v["name"] for v in client.get("/api/v1/vendors", headers=admin.headers).json()["items"]] == ["acme-bpo"]
    assert "sam" not in {u["name"] for u in client.get("/api/v1/users", headers=admin.headers).json()["items"]}
