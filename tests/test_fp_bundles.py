"""Fingerprint indexes in signed bundles: published (API and CLI, per vendor), refused when corrupt,
listed, rolled back, carried with their hash in the manifest, verified and unpacked by the agent,
swapped in without a restart, and reported in heartbeats (SQLite and PostgreSQL for the collector)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import BundleError, read_bundle
from agent.bundle_store import BundleStore
from agent.config import load_config
from agent.credentials import Credentials, save
from agent.daemon import Daemon
from agent.transport import Reply
from server.keys import public_key_hex
from server.signing import IndexSource, write_bundle
from tests.agent_process import write_config
from tests.waiting import wait_for

PACK = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'
STAMP = {"created_by": "alice", "created_at": "2026-12-02T09:00:00.000Z"}
CORPUS_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "strict_tar.py"


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small real indexes (``acme-code`` of strict_tar.py, ``globex-code`` of bundle.py) and a truncated copy."""
    from signatures.fingerprint import build_index

    root = tmp_path_factory.mktemp("fp")
    made = {}
    for name, source in (("acme-code", CORPUS_SOURCE), ("globex-code", CORPUS_SOURCE.with_name("bundle.py"))):
        corpus = root / f"{name}-corpus"
        corpus.mkdir()
        (corpus / source.name).write_bytes(source.read_bytes())
        build_index([str(corpus)], name=name, out=str(root / f"{name}.fp"))
        made[name] = root / f"{name}.fp"
    data = made["acme-code"].read_bytes()
    made["truncated"] = root / "truncated.fp"
    made["truncated"].write_bytes(data[: len(data) // 2])
    made["flipped"] = root / "flipped.fp"
    made["flipped"].write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    return made


def _source(name: str, path: Path) -> IndexSource:
    data = path.read_bytes()
    return IndexSource(name, hashlib.sha256(data).hexdigest(), len(data), lambda: (data[i : i + 1000] for i in range(0, len(data), 1000)))


def _bundle_file(tmp_path: Path, key: Ed25519PrivateKey, *, version: int = 1, indexes: dict[str, Path], packs: dict[str, str] | None = None) -> Path:
    out = tmp_path / f"bundle-{version}.tar.gz"
    with open(out, "wb") as handle:
        write_bundle(
            handle, version=version, vendor="acme-bpo", packs=packs if packs is not None else {"quiet": PACK},
            indexes=[_source(n, p) for n, p in indexes.items()], key=key, **STAMP,
        )  # fmt: skip
    return out


def _rewrite(path: Path, change) -> bytes:
    members = []
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as archive:
        for info in archive:
            members.append((info.name, archive.extractfile(info).read()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as archive:
        for name, body in members:
            body = change(name, body)
            if body is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return gzip.compress(out.getvalue())


# The format, through the agent's reader ---------------------------------------------------------


def test_an_index_travels_with_its_signed_hash_and_is_unpacked_as_it_was(tmp_path, indexes):
    key = Ed25519PrivateKey.generate()
    path = _bundle_file(tmp_path, key, indexes={"acme": indexes["acme-code"]})
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    bundle = read_bundle(path, public_key_hex=public_key_hex(key), vendor="acme-bpo", index_dir=str(unpack))
    data = indexes["acme-code"].read_bytes()
    assert bundle.manifest["format"] == 2
    assert bundle.manifest["indexes"] == [{"name": "acme", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]
    assert bundle.indexes == {"acme": str(unpack / "acme.fp")} and (unpack / "acme.fp").read_bytes() == data
    assert set(bundle.packs) == {"quiet"}
    assert read_bundle(path.read_bytes(), public_key_hex=public_key_hex(key), vendor="acme-bpo").indexes == {"acme": None}
    (tmp_path / "again").mkdir()
    again = _bundle_file(tmp_path / "again", key, indexes={"acme": indexes["acme-code"]})
    assert again.read_bytes() == path.read_bytes(), "deterministic bytes"


def test_a_bundle_of_packs_alone_keeps_format_1(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _bundle_file(tmp_path, key, indexes={})
    bundle = read_bundle(path, public_key_hex=public_key_hex(key), vendor="acme-bpo")
    assert bundle.manifest["format"] == 1 and "indexes" not in json.loads(_member(path, "manifest.json")) and bundle.indexes == {}


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as archive:
        return archive.extractfile(name).read()


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda name, body: body[:-1] + bytes([body[-1] ^ 1]) if name.endswith(".fp") else body, "index acme does not match its signed hash"),
        (lambda name, body: body + b"\0" if name.endswith(".fp") else body, "not the .* signed"),
        (lambda name, body: None if name.endswith(".fp") else body, "index acme is listed but missing"),
    ],
)
def test_a_tampered_or_missing_index_is_refused_and_nothing_is_left_unpacked(tmp_path, indexes, change, reason):
    key = Ed25519PrivateKey.generate()
    forged = tmp_path / "forged.tar.gz"
    forged.write_bytes(_rewrite(_bundle_file(tmp_path, key, indexes={"acme": indexes["acme-code"]}), change))
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    with pytest.raises(BundleError, match=reason):
        read_bundle(forged, public_key_hex=public_key_hex(key), vendor="acme-bpo", index_dir=str(unpack))
    assert list(unpack.iterdir()) == []


def test_an_index_smuggled_beside_a_signed_manifest_is_refused(tmp_path, indexes):
    key = Ed25519PrivateKey.generate()
    path = _bundle_file(tmp_path, key, indexes={})
    smuggled = indexes["acme-code"].read_bytes()
    tar = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as original, tarfile.open(fileobj=tar, mode="w:") as archive:
        for info in original:
            archive.addfile(info, original.extractfile(info))
        info = tarfile.TarInfo("indexes/acme.fp")
        info.size = len(smuggled)
        archive.addfile(info, io.BytesIO(smuggled))
    forged = tmp_path / "smuggled.tar.gz"
    forged.write_bytes(gzip.compress(tar.getvalue()))
    with pytest.raises(BundleError, match="does not list"):
        read_bundle(forged, public_key_hex=public_key_hex(key), vendor="acme-bpo", index_dir=str(tmp_path))
    assert not (tmp_path / "acme.fp").exists()


# The collector: publish, refuse, list, per vendor, roll back, heartbeats ------------------------


def _publish_index(client: Any, admin: Any, name: str, path: Path, **params: Any):
    return client.post(
        "/api/v1/signatures/indexes", params={"name": name, **params}, content=path.read_bytes(),
        headers={**admin.headers, "Content-Type": "application/octet-stream"},
    )  # fmt: skip


def _fetch(client: Any, agent: Any, collector: Any, tmp_path: Path, *, vendor: str = "acme-bpo", newer_than: int = 0):
    answer = client.get("/api/v1/signatures", headers=agent.headers)
    assert answer.status_code == 200, answer.text
    path = tmp_path / f"fetched-{vendor}.tar.gz"
    path.write_bytes(answer.content)
    unpack = tmp_path / f"unpack-{vendor}-{answer.headers['X-DLP-Bundle-Version']}"
    unpack.mkdir(exist_ok=True)
    return read_bundle(path, public_key_hex=collector.signing_public_key, vendor=vendor, newer_than=newer_than, index_dir=str(unpack)), answer


def test_publish_an_index_fetch_verify_and_list(client, collector, admin, enroll, indexes, tmp_path):
    agent = enroll()
    assert client.post("/api/v1/signatures", json={"packs": {"quiet": PACK}}, headers=admin.headers).status_code == 201
    published = _publish_index(client, admin, "acme", indexes["acme-code"], note="the ledger")
    assert published.status_code == 201, published.text
    body = published.json()
    assert body["version"] == 2 and body["rules"] == 1 and body["indexes"]["acme"]["name"] == "acme-code" and body["indexes"]["acme"]["fingerprints"] > 0

    bundle, answer = _fetch(client, agent, collector, tmp_path)
    assert bundle.version == 2 and set(bundle.packs) == {"quiet"} and Path(bundle.indexes["acme"]).read_bytes() == indexes["acme-code"].read_bytes()
    etag = answer.headers["ETag"]
    assert client.get("/api/v1/signatures", headers={**agent.headers, "If-None-Match": etag}).status_code == 304
    collector.bundles.clear()  # another process: the same bytes from the bundle kept on disk
    assert client.get("/api/v1/signatures", headers=agent.headers).headers["ETag"] == etag

    (latest, *_) = client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]
    (listed,) = latest["indexes"]
    data = indexes["acme-code"].read_bytes()
    assert listed["name"] == "acme" and listed["sha256"] == hashlib.sha256(data).hexdigest() and listed["size"] == len(data)
    assert listed["fingerprints"] == body["indexes"]["acme"]["fingerprints"] and listed["vendors"] is None and len(listed["index_version"]) == 16
    audit = client.get("/api/v1/audit", headers=admin.headers).json()["items"]
    entry = next(e for e in audit if e["target"] == "version 2")
    assert entry["action"] == "signatures.publish" and entry["details"]["indexes"]["acme"]["sha256"] == listed["sha256"] and entry["details"]["note"] == "the ledger"

    client.cookies.clear()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/ui/login").text).group(1)
    client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce, "next": "/ui/signatures"}, follow_redirects=False)
    page = client.get("/ui/signatures")
    assert page.status_code == 200 and "<code>acme.fp</code>" in page.text and f"{listed['fingerprints']:,} fingerprints" in page.text


def test_an_agent_is_told_to_come_back_while_a_large_bundle_is_built(client, collector, admin, enroll, indexes, monkeypatch):
    import threading

    import server.api.signature_routes as routes

    agent = enroll()
    assert _publish_index(client, admin, "acme", indexes["acme-code"]).status_code == 201
    release = threading.Event()
    build = routes._bundle_file

    def slow(*args: Any) -> Any:
        release.wait(30)
        return build(*args)

    monkeypatch.setattr(routes, "_bundle_file", slow)
    monkeypatch.setattr(routes, "BUILD_WAIT_S", 0.05)
    busy = client.get("/api/v1/signatures", headers=agent.headers)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == str(routes.BUILD_RETRY_S) and "being built" in busy.json()["detail"]
    release.set()
    monkeypatch.setattr(routes, "BUILD_WAIT_S", 10.0)
    assert client.get("/api/v1/signatures", headers=agent.headers).status_code == 200


@pytest.mark.parametrize("which, reason", [("truncated", "truncated"), ("flipped", "")])
def test_a_corrupt_index_is_refused_and_never_replaces_a_working_one(client, collector, admin, enroll, indexes, tmp_path, which, reason):
    agent = enroll()
    assert _publish_index(client, admin, "acme", indexes["acme-code"]).status_code == 201
    refused = _publish_index(client, admin, "acme", indexes[which])
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("not published: ") and "acme.fp" in detail and reason in detail
    versions = client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]
    assert [v["version"] for v in versions] == [1]
    bundle, _ = _fetch(client, agent, collector, tmp_path)
    assert Path(bundle.indexes["acme"]).read_bytes() == indexes["acme-code"].read_bytes()
    assert [e["action"] for e in client.get("/api/v1/audit", headers=admin.headers).json()["items"]] == ["signatures.publish"]
    assert not any((Path(collector.settings.data_dir) / "staging").iterdir()), "the upload is not left behind"


def test_an_empty_or_oversized_upload_is_refused(client, admin, monkeypatch, indexes):
    import server.api.signature_routes as routes

    empty = client.post("/api/v1/signatures/indexes", params={"name": "acme"}, content=b"", headers=admin.headers)
    assert empty.status_code == 422 and "acme.fp" in empty.json()["detail"]
    monkeypatch.setattr(routes, "MAX_INDEX_BYTES", 1000)
    large = _publish_index(client, admin, "acme", indexes["acme-code"])
    assert large.status_code == 413 and "at most 1000 bytes" in large.json()["detail"]
    assert client.post("/api/v1/signatures/indexes", params={"name": "../x"}, content=b"x", headers=admin.headers).status_code == 422
    monkeypatch.undo()
    for params in ({"note": "a\x00b"}, {"vendor": "bad/vendor"}):
        unstorable = _publish_index(client, admin, "acme", indexes["acme-code"], **params)
        assert unstorable.status_code in (400, 422), (params, unstorable.text)
    gzipped = client.post("/api/v1/signatures/indexes", params={"name": "acme"}, content=b"x", headers={**admin.headers, "Content-Encoding": "gzip"})
    assert gzipped.status_code == 415
    assert client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"] == []


def test_reviewers_cannot_publish_indexes(client, reviewer, indexes):
    assert _publish_index(client, reviewer, "acme", indexes["acme-code"]).status_code == 403


def test_vendor_indexes_reach_only_that_vendors_agents_and_rollback_carries_them(client, collector, admin, enroll, indexes, tmp_path):
    acme, globex = enroll(vendor="acme-bpo", hostname="a"), enroll(vendor="globex-it", hostname="g")
    assert _publish_index(client, admin, "common", indexes["globex-code"]).status_code == 201
    assert _publish_index(client, admin, "acme", indexes["acme-code"], vendor=["acme-bpo"]).status_code == 201
    assert set(_fetch(client, acme, collector, tmp_path)[0].indexes) == {"common", "acme"}
    assert set(_fetch(client, globex, collector, tmp_path, vendor="globex-it")[0].indexes) == {"common"}

    removed = client.post("/api/v1/signatures", json={"remove": ["acme"]}, headers=admin.headers)
    assert removed.status_code == 201 and removed.json() == {"version": 3, "rules": 0}
    assert set(_fetch(client, acme, collector, tmp_path, newer_than=2)[0].indexes) == {"common"}
    rolled = client.post("/api/v1/signatures/rollback", json={"version": 2}, headers=admin.headers)
    assert rolled.status_code == 201 and rolled.json()["version"] == 4
    bundle, _ = _fetch(client, acme, collector, tmp_path, newer_than=3)
    assert bundle.version == 4 and Path(bundle.indexes["acme"]).read_bytes() == indexes["acme-code"].read_bytes()
    versions = {v["version"]: v for v in client.get("/api/v1/signatures/versions", headers=admin.headers).json()["items"]}
    assert [i["name"] for i in versions[4]["indexes"]] == ["acme", "common"] and versions[4]["indexes"][0]["vendors"] == ["acme-bpo"]


def test_names_are_one_namespace_and_index_names_must_differ(client, admin, indexes):
    assert client.post("/api/v1/signatures", json={"packs": {"acme": PACK}}, headers=admin.headers).status_code == 201
    clash = _publish_index(client, admin, "acme", indexes["acme-code"])
    assert clash.status_code == 422 and "names a pack" in clash.json()["detail"]
    assert _publish_index(client, admin, "one", indexes["acme-code"]).status_code == 201
    twice = _publish_index(client, admin, "two", indexes["acme-code"])
    assert twice.status_code == 422 and "acme-code" in twice.json()["detail"]


def test_heartbeats_report_the_indexes_an_agent_runs(client, admin, enroll):
    agent = enroll()
    report = {"agent_version": "0.1.0", "bundle_version": 2, "fingerprints": [{"name": "acme-code", "version": "0123456789abcdef", "fingerprints": 1139, "k": 9}]}
    assert client.post("/api/v1/heartbeat", json=report, headers=agent.headers).status_code == 200
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert listed["fingerprints"] == [{"name": "acme-code", "version": "0123456789abcdef", "fingerprints": 1139}]
    assert client.get(f"/api/v1/agents/{listed['id']}", headers=admin.headers).json()["fingerprints"] == listed["fingerprints"]
    assert client.post("/api/v1/heartbeat", json={"agent_version": "0.1.0"}, headers=agent.headers).status_code == 200
    (listed,) = client.get("/api/v1/agents", headers=admin.headers).json()["items"]
    assert listed["fingerprints"] is None
    too_many = {"agent_version": "0.1.0", "fingerprints": [{"name": f"i{n}"} for n in range(65)]}
    assert client.post("/api/v1/heartbeat", json=too_many, headers=agent.headers).status_code == 422


def dlp_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_cli_publishes_a_directory_of_packs_and_indexes_and_a_single_index(collector, database_url, indexes, tmp_path):
    env = {**os.environ, "DLP_DATABASE_URL": database_url}
    data_dir = str(tmp_path / "data")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "quiet.yar").write_text(PACK)
    (rules / "acme.fp").write_bytes(indexes["acme-code"].read_bytes())
    published = dlp_server("signatures", "publish", str(rules), "--data-dir", data_dir, "--vendor", "acme-bpo", "--json", env=env)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["version"] == 1 and json.loads(published.stdout)["indexes"]["acme"]["name"] == "acme-code"

    single = tmp_path / "globex.fp"
    single.write_bytes(indexes["globex-code"].read_bytes())
    text = dlp_server("signatures", "publish", str(single), "--data-dir", data_dir, env=env)
    assert text.returncode == 0 and "globex.fp (" in text.stdout and "fingerprints" in text.stdout, text.stderr

    corrupt = tmp_path / "broken.fp"
    corrupt.write_bytes(indexes["truncated"].read_bytes())
    refused = dlp_server("signatures", "publish", str(corrupt), "--data-dir", data_dir, env=env)
    assert refused.returncode == 1 and "broken.fp" in refused.stderr and "not published" in refused.stderr

    listed = dlp_server("signatures", "list", "--data-dir", data_dir, env=env)
    assert listed.returncode == 0 and "index acme.fp [acme-bpo]" in listed.stdout and "index globex.fp:" in listed.stdout
    items = json.loads(dlp_server("signatures", "list", "--data-dir", data_dir, "--json", env=env).stdout)["items"]
    assert [v["version"] for v in items] == [2, 1] and {i["name"] for i in items[0]["indexes"]} == {"acme", "globex"}


# The agent: verify, unpack, swap without a restart, report -------------------------------------


class FakeCollector:
    """Serves whichever bundle file the test sets; takes heartbeats."""

    def __init__(self) -> None:
        self.bundle: Path | None = None
        self.heartbeats: list[dict[str, Any]] = []

    def get_signatures(self, etag: str | None, *, max_bytes: int, sink: str | None = None) -> Reply:
        if self.bundle is None:
            return Reply("none")
        if etag == self.bundle.name:
            return Reply("unchanged")
        assert sink is not None, "a bundle is downloaded to a file, not into memory"
        Path(sink).write_bytes(self.bundle.read_bytes())
        return Reply("ok", etag=self.bundle.name)

    def heartbeat(self, report: dict[str, Any]) -> Reply:
        self.heartbeats.append(report)
        return Reply("ok", body={"heartbeat_interval_s": 1})

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        return Reply("ok", body={"accepted": len(events), "duplicates": [], "conflicts": []})

    def close(self) -> None:
        pass


def test_the_agent_verifies_unpacks_swaps_and_reports_an_index_and_keeps_it_over_a_corrupt_one(tmp_path, rules_dir, monkeypatch, indexes):
    key = Ed25519PrivateKey.generate()
    config = load_config(str(write_config(tmp_path, rules_dir, **{"server": "timeout_s = 5"})))
    config.rules.poll_interval_s = 5
    save(
        config.server.credentials,
        Credentials(
            server_url="https://collector.invalid", agent_id="a-1", credential="secret", vendor="acme-bpo",
            signing_public_key=public_key_hex(key), heartbeat_interval_s=1, enrolled_at="2026-12-02T09:00:00Z",
        ),
    )  # fmt: skip
    collector = FakeCollector()
    monkeypatch.setattr(Daemon, "_client_for", lambda self, credentials: collector)
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.scanner is not None and daemon.scanner.ruleset.fingerprints == ()
        excerpt = CORPUS_SOURCE.read_bytes()
        assert not [m for m in daemon.scanner.scan_bytes(excerpt).matches if m.to_dict().get("kind") == "fingerprint"]

        collector.bundle = _bundle_file(tmp_path, key, version=1, indexes={"acme": indexes["acme-code"]})
        assert daemon.rules_updater.check_once(*_link(daemon))
        (loaded,) = daemon.scanner.ruleset.fingerprints
        assert loaded.name == "acme-code" and loaded.path.endswith(os.path.join("packs-1", "acme.fp"))
        hits = [m.to_dict() for m in daemon.scanner.scan_bytes(excerpt).matches if m.to_dict().get("kind") == "fingerprint"]
        assert hits and hits[0]["rule"] == "acme-code"
        wait_for(lambda: any(b.get("fingerprints") == [{"name": "acme-code", "version": loaded.version, "fingerprints": loaded.count}] for b in collector.heartbeats),
                 timeout=15, message="the index in a heartbeat")  # fmt: skip
        stored = Path(config.rules.bundle_dir)
        # Beside the bundle and its unpacked packs, only the compiled-rules cache (agent/scanning/rulecache.py).
        assert sorted(p.name for p in stored.iterdir()) == ["bundle.json", "bundle.tar.gz", "compiled", "packs-1"]

        # Version 2 is signed but its index does not load: the agent keeps version 1 and says why.
        collector.bundle = _bundle_file(tmp_path, key, version=2, indexes={"acme": indexes["flipped"]})
        assert not daemon.rules_updater.check_once(*_link(daemon))
        assert daemon.rules_updater.version == 1 and "acme.fp" in (daemon.rules_updater.error or "")
        assert daemon.scanner.ruleset.fingerprints == (loaded,)
        assert sorted(p.name for p in stored.iterdir()) == ["bundle.json", "bundle.tar.gz", "compiled", "packs-1"]

        # Version 3 drops the index: swapped out, and heartbeats stop naming it.
        collector.bundle = _bundle_file(tmp_path, key, version=3, indexes={})
        assert daemon.rules_updater.check_once(*_link(daemon))
        assert daemon.scanner.ruleset.fingerprints == () and daemon.rules_updater.error is None
        assert "fingerprints" not in daemon._heartbeat_report()
        assert sorted(p.name for p in stored.iterdir()) == ["bundle.json", "bundle.tar.gz", "compiled", "packs-3"]
    finally:
        daemon.stop()


def _link(daemon: Daemon) -> tuple[Any, Any]:
    return daemon.rules_updater._link.current()


def test_a_restarted_agent_unpacks_its_stored_index_again_and_refuses_one_tampered_on_disk(tmp_path, indexes):
    key = Ed25519PrivateKey.generate()
    store = BundleStore(str(tmp_path / "bundle"))
    path = _bundle_file(tmp_path, key, indexes={"acme": indexes["acme-code"]})
    bundle = store.verify(str(path), public_key_hex=public_key_hex(key), vendor="acme-bpo")
    files = store.unpack(bundle)
    store.save(str(path), bundle, "etag-1")
    assert Path(files["acme"]).read_bytes() == indexes["acme-code"].read_bytes() and Path(files["quiet"]).read_text() == PACK

    loaded, etag = store.load(public_key_hex=public_key_hex(key), vendor="acme-bpo")
    assert etag == "etag-1" and store.unpack(loaded) == files and Path(files["acme"]).read_bytes() == indexes["acme-code"].read_bytes()
    kept = tmp_path / "bundle" / "bundle.tar.gz"
    kept.write_bytes(_rewrite(kept, lambda name, body: body[:-1] + bytes([body[-1] ^ 1]) if name.endswith(".fp") else body))
    with pytest.raises(BundleError, match="tampered"):
        store.load(public_key_hex=public_key_hex(key), vendor="acme-bpo")
    assert not [p for p in (tmp_path / "bundle").iterdir() if p.name.startswith(".unpack-")]


class _Endless:
    """A collector whose bundle never ends (or that asks to be called back), for the agent's download."""

    @staticmethod
    def serve(status: int = 200, headers: dict[str, str] | None = None) -> Any:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    for _ in range(64):
                        self.wfile.write(b"\0" * (1 << 20))
                except OSError:
                    pass  # the agent hung up, as it should

            def log_message(self, *args: object) -> None:
                pass

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def test_a_bundle_downloaded_to_a_file_is_bounded_and_leaves_nothing(tmp_path):
    import threading

    from agent.transport import CollectorClient

    server = _Endless.serve(headers={"ETag": '"big"'})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = CollectorClient(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=10)
    sink = tmp_path / "download.tar.gz"
    try:
        reply = client.get_signatures(None, max_bytes=4 << 20, sink=str(sink))
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join()
    assert reply.kind == "too_large" and str(4 << 20) in reply.detail and not sink.exists()


def test_the_updater_comes_back_when_the_collector_says_a_bundle_is_being_built(tmp_path):
    from agent.rules_updater import MIN_COME_BACK_S, RulesUpdater

    class Busy:
        def get_signatures(self, etag: str | None, *, max_bytes: int, sink: str | None = None) -> Reply:
            return Reply("retry", "HTTP 503: being built", retry_after=15.0)

    class Link:
        def current(self) -> tuple[Any, Any]:
            return Busy(), Credentials(
                server_url="http://x", agent_id="a", credential="c", vendor="acme-bpo", signing_public_key="00" * 32,
                heartbeat_interval_s=60, enrolled_at="2026-12-02T09:00:00Z",
            )  # fmt: skip

        def close(self) -> None:
            pass

    updater = RulesUpdater(Link(), BundleStore(str(tmp_path / "bundle")), lambda bundle, files: None, interval_s=3600)  # type: ignore[arg-type]
    waits: list[float] = []
    updater.wait = lambda seconds: waits.append(seconds) or len(waits) > 1  # type: ignore[method-assign]
    updater.run_loop()
    assert waits[0] == 15.0 and MIN_COME_BACK_S <= waits[0] < 3600
