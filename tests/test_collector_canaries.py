"""Canaries: decoys that are valid files of their kind, and (SQLite and PostgreSQL) the vendor's
canary pack rebuilt and published with each canary, whose rules fire on the decoys and hold no secret."""

from __future__ import annotations

import ast
import configparser
import hashlib
import io
import json
import random
import re
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yara
from sqlalchemy import select

from agent.bundle import read_bundle
from agent.marks.payload import CANARY, CANARY_RE, read_canaries
from server import canaries, decoys
from server.db.tables import audit_log
from server.db.tables import marks as mark_table
from server.errors import InvalidInput, NotFound
from server.keys import marks_key
from server.store import marks, vendors
from server.store import signatures as signature_store

VENDOR = "acme-bpo"


def _docx_text(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return "\n".join(re.sub(r"<[^>]+>", " ", archive.read(name).decode("utf-8")) for name in ("word/document.xml", "docProps/custom.xml"))


def _text(made: decoys.Decoy) -> str:
    return _docx_text(made.data) if made.name.endswith(".docx") else made.data.decode("utf-8")


def _pdf_text(data: bytes, name: str, tmp_path: Path) -> str:
    source = tmp_path / name
    source.write_bytes(data)
    profile = f"file:///tmp/lo-h4-{uuid.uuid4().hex}"
    subprocess.run(
        ["libreoffice", f"-env:UserInstallation={profile}", "--headless", "--convert-to", "pdf", "--outdir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    pdf = source.with_suffix(".pdf")
    assert pdf.stat().st_size > 0
    return subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True, timeout=60).stdout


# --- decoys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_decoys_are_valid_files_of_their_kind_holding_their_secret(seed):
    code = decoys.decoy("code", secret_seed=random.Random(seed))
    tree = ast.parse(code.data)
    compile(tree, code.name, "exec")
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert code.name.endswith(".py") and code.secret in constants and code.secret.startswith("DLPC1-")

    credential = decoys.decoy("credential", secret_seed=random.Random(seed))
    parser = configparser.ConfigParser()
    parser.read_string(credential.data.decode("ascii"))
    (profile,) = parser.sections()
    assert parser[profile]["aws_access_key_id"] == credential.secret and credential.secret.startswith("AKIA")
    assert re.fullmatch(r"[A-Za-z0-9+/]{40}", parser[profile]["aws_secret_access_key"])

    document = decoys.decoy("document", secret_seed=random.Random(seed))
    with zipfile.ZipFile(io.BytesIO(document.data)) as archive:
        assert archive.testzip() is None
        assert document.secret in archive.read("docProps/custom.xml").decode() and document.secret in archive.read("word/document.xml").decode()
    for made in (code, credential, document):
        assert CANARY_RE.fullmatch(made.secret)
        assert [f.payload for f in read_canaries(_text(made))] == [made.secret.encode()]


def test_document_decoy_opens_in_libreoffice_and_its_secret_survives_pdf(tmp_path):
    made = decoys.decoy("document")
    text = _pdf_text(made.data, made.name, tmp_path)
    assert "Confidential" in text and "Band A" in text
    assert made.secret in text  # on a line of its own: no line break inside the token


def test_decoys_vary_and_a_seed_repeats_one():
    made = [decoys.decoy(kind) for kind in decoys.KINDS for _ in range(12)]
    assert len({m.secret for m in made}) == len(made)
    for kind in decoys.KINDS:
        assert len({m.name for m in made if _kind_of(m) == kind}) > 1
    assert decoys.decoy("document", secret_seed=random.Random(5)) == decoys.decoy("document", secret_seed=random.Random(5))
    with pytest.raises(ValueError, match="code, document, credential"):
        decoys.decoy("spreadsheet")


def _kind_of(made: decoys.Decoy) -> str:
    return "code" if made.name.endswith(".py") else "document" if made.name.endswith(".docx") else "credential"


# --- the pack -----------------------------------------------------------------------------------


def _rule(mark_id: str, made: decoys.Decoy) -> tuple[str, str, str]:
    return (mark_id, _kind_of(made), hashlib.sha256(made.secret.encode()).hexdigest())


def test_pack_rule_fires_on_its_own_secret_only_and_holds_none():
    made = [decoys.decoy(kind) for kind in ("code", "credential", "document", "code")]
    ids = [f"mk_{i:016x}" for i in range(len(made))]
    pack = canaries.canary_pack([_rule(mark_id, m) for mark_id, m in zip(ids, made, strict=True)])
    for m in made:
        assert m.secret not in pack
    rules = yara.compile(source=pack)
    for mark_id, m in zip(ids, made, strict=True):
        hits = rules.match(data=_text(m).encode())
        assert [(hit.rule, hit.meta["mark"], hit.meta["severity"], hit.meta["category"]) for hit in hits] == [(f"canary_{mark_id[3:]}", mark_id, "critical", "canary")]
    stranger = decoys.decoy("code")  # same form, a secret nobody registered
    assert rules.match(data=stranger.data) == []
    assert rules.match(data=made[0].secret[:-1].encode()) == []
    assert yara.compile(source=canaries.canary_pack([])).match(data=made[0].data) == []


@pytest.mark.parametrize(
    "rule",
    [
        ('mk_0000000000000001" condition: true }', "code", "0" * 64),
        ("mk_0000000000000001", 'code"\n', "0" * 64),
        ("mk_0000000000000001", "code", '" or true or "'),
        ("mk_0000000000000001", "watermark", "0" * 64),
    ],
)
def test_pack_refuses_values_outside_their_forms(rule):
    with pytest.raises(ValueError, match="not a canary rule"):
        canaries.canary_pack([rule])


def test_pack_names_are_valid_and_distinct_per_vendor():
    assert canaries.pack_name("acme-bpo") == "canaries-acme-bpo"
    odd = [canaries.pack_name(v) for v in ("Acme BPO", "Acme_BPO", "acme@bpo", "x" * 128)]
    assert len(set(odd)) == len(odd)
    from agent.bundle import PACK_NAME

    assert all(PACK_NAME.match(name) for name in odd)


# --- minting and publishing (SQLite and PostgreSQL) ---------------------------------------------


def _vendor(collector: Any, name: str = VENDOR) -> None:
    with collector.db.write() as conn:
        vendors.get_or_create(conn, name=name, now=collector.clock())


def _mint(collector: Any, kind: str, vendor: str = VENDOR, seat: str | None = "jdoe") -> canaries.Canary:
    key = marks_key(collector.settings.data_dir)
    with collector.db.write() as conn:
        return canaries.create_canary(conn, key=key, vendor=vendor, seat=seat, kind=kind, actor="alice", now=collector.clock(), address="192.0.2.7")


def _scanner(collector: Any, version: int, vendor: str, tmp_path: Path) -> Any:
    """The agent's scanner with the packs ``vendor``'s agents get in ``version``."""
    from agent.scanning import Scanner, load_rules

    rules_dir = tmp_path / f"rules-{vendor}-{version}"
    rules_dir.mkdir()
    with collector.db.read() as conn:
        for name, body in signature_store.packs_for(conn, version=version, vendor=vendor).items():
            (rules_dir / f"{name}.yar").write_text(body)
    return Scanner(load_rules(rules_dir))


def test_a_canary_is_minted_registered_and_its_rule_published_for_its_vendor_only(collector, tmp_path):
    _vendor(collector)
    _vendor(collector, "globex-it")
    made = _mint(collector, "code")
    assert re.fullmatch(r"mk_[0-9a-f]{16}", made.mark_id) and made.kind == "code" and made.name.endswith(".py")
    secret = next(f.payload for f in read_canaries(made.data.decode())).decode()
    with collector.db.read() as conn:
        assert signature_store.current_version(conn) == made.signature_version
        mine = signature_store.packs_for(conn, version=made.signature_version, vendor=VENDOR)
        theirs = signature_store.packs_for(conn, version=made.signature_version, vendor="globex-it")
        row = conn.execute(select(mark_table).where(mark_table.c.id == made.mark_id)).one()
        entries = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
        traced = marks.resolve(conn, key=marks_key(collector.settings.data_dir), found=read_canaries(made.data.decode()), sha256=hashlib.sha256(made.data).hexdigest())
    assert set(mine) == {"canaries-acme-bpo"} and theirs == {}
    assert f'mark = "{made.mark_id}"' in mine["canaries-acme-bpo"]
    assert yara.compile(source=mine["canaries-acme-bpo"]).match(data=made.data)[0].meta["mark"] == made.mark_id
    # The secret is nowhere the collector keeps: neither the pack, nor the mark's row, nor the audit log.
    assert secret not in mine["canaries-acme-bpo"]
    assert secret not in json.dumps([str(v) for v in row]) and row.rule_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert row.kind == "canary" and row.canary_kind == "code" and row.seat == "jdoe" and row.marked_sha256 == hashlib.sha256(made.data).hexdigest()
    assert [(e.action, e.actor, e.address) for e in entries] == [("signatures.publish", "alice", "192.0.2.7"), ("marks.canary", "alice", "192.0.2.7")]
    published, minted = (json.loads(e.details) for e in entries)
    assert entries[0].target == f"version {made.signature_version}" and published["packs"] == ["canaries-acme-bpo"] and published["vendors"] == [VENDOR]
    assert entries[1].target == made.mark_id and minted["signature_version"] == made.signature_version and minted["seat"] == "jdoe"
    assert secret not in entries[0].details + entries[1].details
    # Tracing the decoy: the canary secret and the byte-identical copy both name the seat.
    assert [(t["mark_id"], t["vendor"], t["seat"], t["kind"], t["evidence"]["carriers"], t["evidence"]["strength"]) for t in traced] == [
        (made.mark_id, VENDOR, "jdoe", "canary", [CANARY, "copy"], "conclusive")
    ]


def test_a_second_canary_keeps_the_first_ones_rule_and_agents_fetch_both(collector, clock, client, enroll, tmp_path):
    _vendor(collector)
    first = _mint(collector, "document")
    clock.advance(minutes=1)
    second = _mint(collector, "credential", seat=None)
    clock.advance(minutes=1)
    third = _mint(collector, "code", seat="ws-7")
    assert first.signature_version < second.signature_version < third.signature_version
    scanner = _scanner(collector, third.signature_version, VENDOR, tmp_path)
    for made in (first, second, third):
        result = scanner.scan_bytes(made.data, name=made.name)
        canary_hits = {(m.rule, m.severity, m.category, m.kind, m.carrier, m.mark_id) for m in result.matches if m.namespace == "canaries-acme-bpo"}
        assert canary_hits == {(f"canary_{made.mark_id[3:]}", "critical", "canary", "mark", CANARY, made.mark_id)}, result.to_dict()
    agent = enroll(vendor=VENDOR)
    answer = client.get("/api/v1/signatures", headers=agent.headers)
    assert answer.status_code == 200, answer.text
    bundle = read_bundle(answer.content, public_key_hex=collector.signing_public_key, vendor=VENDOR)
    assert bundle.version == third.signature_version
    body = bundle.packs["canaries-acme-bpo"].decode()
    assert all(f'mark = "{m.mark_id}"' in body for m in (first, second, third))
    with collector.db.read() as conn:
        listed = marks.list_marks(conn, vendor=VENDOR, kind="canary")
    assert [(m["mark_id"], m["seat"], m["canary_kind"]) for m in listed] == [(third.mark_id, "ws-7", "code"), (second.mark_id, None, "credential"), (first.mark_id, "jdoe", "document")]


def test_a_refused_canary_leaves_no_mark_and_no_version(collector):
    _vendor(collector)
    with pytest.raises(NotFound):
        _mint(collector, "code", vendor="nobody-inc")
    with pytest.raises(InvalidInput, match="kind"):
        _mint(collector, "spreadsheet")
    with pytest.raises(InvalidInput, match="control"):
        _mint(collector, "code", seat="jdoe\x1b[2J")
    # An admin's own pack under the vendor's canary pack name, for every vendor: not replaced.
    with collector.db.write() as conn:
        signature_store.publish(conn, packs={"canaries-acme-bpo": "rule mine { condition: false }"}, vendors=None, created_by="alice", note="", now=collector.clock())
    with pytest.raises(InvalidInput, match="not acme-bpo's canary pack"):
        _mint(collector, "code")
    with collector.db.read() as conn:
        assert conn.execute(select(mark_table)).all() == []
        assert signature_store.current_version(conn) == 1
        assert [e.action for e in conn.execute(select(audit_log)).all()] == []


def test_the_canary_kinds_are_one_list():
    from typing import get_args

    from server.api.mark_schemas import CanaryIn
    from server.store import marks as mark_store

    assert get_args(CanaryIn.model_fields["kind"].annotation) == decoys.KINDS
    assert mark_store.CANARY_KINDS is decoys.KINDS
    assert canaries.SECRET_PATTERNS.keys() == canaries.FORMATS.keys() == set(decoys.KINDS)
