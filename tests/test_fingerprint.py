"""Fingerprint indexes: renamed, reformatted and excerpted copies of real code are found; other code is not.

The corpus is real code every Python has (a few standard-library modules copied to a
temporary folder), built without the default baseline (which is that same library).
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import keyword
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time
import tokenize as pytokenize
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agent.scanning import RuleError, ScanLimits, Scanner, load_rules
from agent.scanning.fpindex import INDEX_MAGIC, FingerprintIndex, FingerprintIndexError, check_index_bytes
from agent.scanning.fpmatch import find
from agent.scanning.results import Status
from agent.scanning.tokens import Lexicon, tokenize
from agent.scanning.winnow import K, W, guarantee, winnow
from signatures import fingerprint

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS_MODULES = ["textwrap.py", "shlex.py", "json/decoder.py", "json/encoder.py", "csv.py", "fnmatch.py"]
UNRELATED_MODULES = ["calendar.py", "difflib.py", "fractions.py", "heapq.py", "bisect.py", "colorsys.py", "gettext.py"]
C_SOURCE = """
/* A ring buffer of fixed-size records, as a customer's firmware might hold one. */
#include <stdint.h>
#include <string.h>

typedef struct ring {
    uint8_t *slots;
    size_t record_size, capacity, head, tail, count;
} ring_t;

int ring_init(ring_t *r, uint8_t *storage, size_t record_size, size_t capacity) {
    if (!r || !storage || record_size == 0 || capacity < 2) {
        return -1;
    }
    r->slots = storage;
    r->record_size = record_size;
    r->capacity = capacity;
    r->head = r->tail = r->count = 0;
    return 0;
}

int ring_push(ring_t *r, const void *record) {
    if (r->count == r->capacity) {
        r->tail = (r->tail + 1) % r->capacity;   /* overwrite the oldest */
        r->count--;
    }
    memcpy(r->slots + r->head * r->record_size, record, r->record_size);
    r->head = (r->head + 1) % r->capacity;
    r->count++;
    return 0;
}

int ring_pop(ring_t *r, void *out) {
    if (r->count == 0) {
        return -1;
    }
    memcpy(out, r->slots + r->tail * r->record_size, r->record_size);
    r->tail = (r->tail + 1) % r->capacity;
    r->count--;
    return 0;
}

size_t ring_drain(ring_t *r, void *out, size_t max_records) {
    size_t taken = 0;
    uint8_t *cursor = out;
    while (taken < max_records && ring_pop(r, cursor) == 0) {
        cursor += r->record_size;
        taken++;
    }
    return taken;
}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("customer") / "acme"
    for name in CORPUS_MODULES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STDLIB / name, target)
    (root / "firmware").mkdir()
    (root / "firmware" / "ring.c").write_text(C_SOURCE)
    (root / "README.md").write_text("# Acme\nInternal tools.\n")
    return root


@pytest.fixture(scope="module")
def index_dir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    report = fingerprint.build_index([str(corpus)], name="acme-code", out=str(out / "acme.fp"))
    assert report.kept > 0
    return out


@pytest.fixture(scope="module")
def index(index_dir: Path) -> FingerprintIndex:
    return FingerprintIndex.load(index_dir / "acme.fp")


# Variants a leaker makes -------------------------------------------------------------


def declared_names(source: str) -> set[str]:
    """Names the module itself defines: what a renamer renames (library names stay)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if not keyword.iskeyword(n) and n not in dir(builtins) and n != "self"}


def renamed(source: str, *, consistent: bool, seed: int = 1) -> str:
    """Every declared name renamed, the same way everywhere or each occurrence anew."""
    rng = random.Random(seed)
    targets = declared_names(source)
    mapping: dict[str, str] = {}
    out = []
    for tok in pytokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == pytokenize.NAME and tok.string in targets:
            if consistent:
                new = mapping.setdefault(tok.string, f"v{len(mapping)}_{rng.randrange(1000)}")
            else:
                new = f"n{rng.randrange(10**6)}"
            tok = tok._replace(string=new)
        out.append(tok)
    return pytokenize.untokenize(out)


def reformatted(source: str) -> str:
    """Reflowed by the standard library's own unparser: comments and layout gone."""
    return ast.unparse(ast.parse(source))


def excerpt(text: str, start: int, count: int) -> str:
    return "".join(text.splitlines(True)[start : start + count])


# Tokens and winnowing ------------------------------------------------------------------


def test_tokens_do_not_depend_on_names_layout_or_comments() -> None:
    original = "def area(width, height):\n    # the area\n    return width * height  # done\n"
    variants = [
        "def a1(x, y):\n    return x * y\n",
        "def   f ( q,\n  r ) :\n\n        return q*r\n",
        "def z(w, h):\n    '''doc'''\n    return w * h\n".replace("    '''doc'''\n", ""),
    ]
    base = tokenize(original.encode()).kinds
    for variant in variants:
        assert np.array_equal(tokenize(variant.encode()).kinds, base), variant


def test_tokens_of_an_excerpt_that_starts_inside_a_docstring_agree_with_the_original() -> None:
    source = (STDLIB / "textwrap.py").read_bytes()
    lines = source.splitlines(True)
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(b'"""') and i > 20) + 2
    part = b"".join(lines[start : start + 60])
    whole = tokenize(source)
    piece = tokenize(part)
    offset = int(np.searchsorted(whole.lines, start + 1))
    assert np.array_equal(piece.kinds, whole.kinds[offset : offset + len(piece)])


def test_lines_are_counted_across_blocks() -> None:
    text = b"x = 1\n" * 300_000  # 1.8 MB: lexed in two blocks
    tokens = tokenize(text)
    assert tokens.lines[0] == 1 and tokens.lines[-1] == 300_000
    assert len(tokens) == 900_000


def test_winnowing_guarantee_on_random_streams() -> None:
    rng = np.random.default_rng(7)
    shared = rng.integers(1, 60, guarantee()).astype(np.uint16)
    for trial in range(50):
        left = np.concatenate([rng.integers(1, 60, rng.integers(0, 200)), shared, rng.integers(1, 60, 50)]).astype(np.uint16)
        right = np.concatenate([rng.integers(1, 60, rng.integers(0, 200)), shared, rng.integers(1, 60, 50)]).astype(np.uint16)
        a = winnow(_tokens(left))
        b = winnow(_tokens(right))
        assert set(a.hashes.tolist()) & set(b.hashes.tolist()), trial
    assert K + W - 1 == guarantee()


def _tokens(kinds: np.ndarray):  # type: ignore[no-untyped-def]
    from agent.scanning.tokens import Tokens

    return Tokens(kinds, np.ones(len(kinds), dtype=np.uint32))


# Building ------------------------------------------------------------------------------


def test_build_reports_languages_guarantee_and_size(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "acme.fp"
    report = fingerprint.build_index([str(corpus)], name="acme", out=str(out))
    text = "\n".join(report.summary())
    assert "Python 6" in text and "C 1" in text
    assert "README.md: document" in text
    assert f"any shared run of {guarantee()} tokens" in text
    assert report.bytes_per_fingerprint <= 16
    index = FingerprintIndex.load(out)
    assert index.count == report.kept and index.name == "acme"
    assert {f.split("/", 1)[1] for f in index.files} == {*CORPUS_MODULES, "firmware/ring.c"}
    assert "append" in index.lexicon.vocabulary  # used, never defined by the corpus
    assert "isinstance" not in index.lexicon.vocabulary  # json/encoder.py declares it (isinstance=isinstance)


def test_the_baseline_drops_common_code_and_says_where(corpus: Path, tmp_path: Path) -> None:
    """The customer's own code installed in a baseline folder empties the index: the error names the folder."""
    installed = tmp_path / "site-packages"
    shutil.copytree(corpus, installed / "acme")
    with pytest.raises(ValueError, match=r"site-packages/acme.*--no-default-baseline"):
        fingerprint.build_index([str(corpus)], name="acme", out=str(tmp_path / "x.fp"), baseline_roots=[str(installed)])
    half = tmp_path / "half"
    (half / "json").mkdir(parents=True)
    for name in CORPUS_MODULES[:4]:
        shutil.copy(STDLIB / name, half / name)
    report = fingerprint.build_index([str(corpus)], name="acme", out=str(tmp_path / "y.fp"), baseline_roots=[str(half)])
    assert report.dropped_baseline > 0
    assert any(line.startswith("warning:") and str(half) in line for line in report.summary())


def test_cli_builds_an_index(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.fp"
    done = subprocess.run(
        [sys.executable, "-m", "signatures.cli", "fingerprint", str(corpus), "--name", "acme", "--out", str(out),
         "--no-default-baseline", "--min-tokens", "80"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fingerprints:" in done.stdout and "guarantee:" in done.stdout
    assert FingerprintIndex.load(out).min_tokens == 80
    bad = subprocess.run(
        [sys.executable, "-m", "signatures.cli", "fingerprint", str(corpus), "--name", "a", "--out", str(tmp_path / "x.yar")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and ".fp" in bad.stderr


# Matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["textwrap.py", "shlex.py", "json/decoder.py", "csv.py"])
def test_renamed_reformatted_copies_and_excerpts_are_found(index: FingerprintIndex, module: str) -> None:
    source = (STDLIB / module).read_text()
    variants = {
        "verbatim": source,
        "consistent renaming": renamed(source, consistent=True),
        "inconsistent renaming": renamed(source, consistent=False),
        "reformatted without comments": reformatted(source),
        "renamed and reformatted": reformatted(renamed(source, consistent=True)),
    }
    for name, text in variants.items():
        hits = find([index], text.encode())
        assert hits and hits[0].source.endswith(module), name
        assert hits[0].coverage > 0.5, (name, hits[0].coverage)
    rng = random.Random(module)
    lines = source.splitlines(True)
    code_lines = [i for i in range(len(lines) - 60) if len(tokenize(excerpt(source, i, 50).encode())) > 250]
    whole = renamed(source, consistent=True)
    for start in rng.sample(code_lines, min(5, len(code_lines))):
        text = excerpt(whole, start, 50)
        hits = find([index], text.encode())
        assert hits and hits[0].source.endswith(module), start
        inside = [(a, b) for a, b in hits[0].source_lines if start - 5 <= a and b <= start + 55]
        assert sum(b - a for a, b in inside) >= 20, (start, hits[0].source_lines)


def test_a_match_names_line_ranges_on_both_sides(index: FingerprintIndex) -> None:
    source = (STDLIB / "shlex.py").read_text()
    text = "# pasted\n" * 10 + excerpt(source, 100, 60)
    hit = find([index], text.encode())[0]
    (first, last), (source_first, source_last) = hit.lines[0], hit.source_lines[0]
    assert 11 <= first <= 20 and last <= 70
    assert 101 <= source_first <= 110 and source_last <= 161
    assert abs((first - 10) - (source_first - 100)) <= 3


def test_c_code_renamed_and_reflowed_is_found(index: FingerprintIndex) -> None:
    text = C_SOURCE
    for old, new in [("ring_t", "buf_t"), ("ring", "q"), ("record_size", "rs"), ("capacity", "cap"), ("slots", "mem")]:
        text = text.replace(old, new)
    text = text.replace("{\n", "\n{\n").replace("    ", "\t")  # Allman braces, tabs
    hits = find([index], text.encode())
    assert hits and hits[0].source.endswith("firmware/ring.c")


def test_unrelated_code_does_not_match(index: FingerprintIndex) -> None:
    for module in UNRELATED_MODULES:
        assert find([index], (STDLIB / module).read_bytes()) == [], module


# Through the scanner and the CLI -------------------------------------------------------


def test_scanner_reports_fingerprint_matches_whatever_the_container(index_dir: Path, tmp_path: Path) -> None:
    source = renamed((STDLIB / "textwrap.py").read_text(), consistent=True)
    scanner = Scanner(load_rules(index_dir))
    assert scanner.ruleset.fingerprints and scanner.ruleset.fingerprints[0].name == "acme-code"
    as_text = tmp_path / "notes.txt"
    as_text.write_text(source)
    archive = tmp_path / "backup.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("src/wrap.py", source)
    document = tmp_path / "design.docx"
    _write_docx(document, source.splitlines())
    for path, member in [(as_text, None), (archive, "src/wrap.py"), (document, "word/document.xml")]:
        result = scanner.scan_path(str(path))
        assert result.status is Status.MATCH, path
        match = next(m for m in result.matches if m.kind == "fingerprint")
        assert match.rule == "acme-code" and match.source == "acme/textwrap.py" and match.member == member
        assert match.severity == "high" and match.category == "source_code"
    clip = scanner.scan_bytes(excerpt(source, 200, 80).encode(), name="clipboard")
    assert clip.status is Status.MATCH


def _write_docx(path: Path, paragraphs: list[str]) -> None:
    from xml.sax.saxutils import escape

    body = "".join(f"<w:p><w:r><w:t xml:space='preserve'>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs)
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        z.writestr("word/document.xml", f'<?xml version="1.0"?><w:document xmlns:w="{ns}"><w:body>{body}</w:body></w:document>')


def test_scan_json_carries_the_fingerprint_fields(index_dir: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(index_dir, rules)
    (rules / "local.yar").write_text('rule marker { strings: $a = "ACME-SECRET" condition: $a }')
    copy = tmp_path / "copy.txt"
    copy.write_text(reformatted((STDLIB / "csv.py").read_text()))
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "scan", "--json", "--rules", str(rules), str(copy)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = json.loads(done.stdout)
    assert line["status"] == "match"
    match = line["matches"][0]
    assert match["kind"] == "fingerprint" and match["rule"] == "acme-code" and match["source"] == "acme/csv.py"
    assert match["lines"] and len(match["lines"]) == len(match["source_lines"])
    assert all(a <= b for a, b in match["lines"] + match["source_lines"])
    assert 0.5 < match["coverage"] <= 1 and len(match["index_version"]) == 16
    assert "return" not in json.dumps(match)  # line numbers only: no code travels
    text = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "scan", "--rules", str(rules), str(copy)], capture_output=True, text=True, timeout=120
    )
    assert "fingerprint acme-code: copies acme/csv.py" in text.stdout


# Bad input -----------------------------------------------------------------------------


def _corrupt_variants(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    return {
        "truncated": data[: len(data) - 100],
        "a byte flipped": bytes(flipped),
        "not an index": b"rule x { condition: true }\n" * 10,
        "header only": data[:80],
        "empty": b"",
    }


def test_corrupt_or_truncated_indexes_are_refused_with_the_reason(index_dir: Path, tmp_path: Path) -> None:
    data = (index_dir / "acme.fp").read_bytes()
    assert data.startswith(INDEX_MAGIC)
    assert check_index_bytes(data, label="acme.fp")["fingerprints"] > 0
    for name, bad in _corrupt_variants(data).items():
        with pytest.raises(FingerprintIndexError, match="bad.fp"):
            check_index_bytes(bad, label="bad.fp")
        path = tmp_path / "rules" / "bad.fp"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bad)
        with pytest.raises(RuleError, match="bad.fp"):
            load_rules(path.parent)
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli.main", "scan", "--rules", str(path.parent), str(STDLIB / "csv.py")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and "bad.fp" in done.stderr, name


def test_an_index_from_another_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.scanning import fpindex

    def write(path: Path) -> None:
        fpindex.write_index(
            str(path), hashes=np.array([5, 7], dtype=np.uint64), files=np.zeros(2, np.uint32),
            first_lines=np.array([1, 2]), spans=np.zeros(2), positions=np.array([0, 9]), file_names=["a.py"],
            k=K, w=W, meta={"name": "x", "severity": "high", "category": "source_code", "min_tokens": 50},
        )  # fmt: skip

    write(tmp_path / "now.fp")
    assert FingerprintIndex.load(tmp_path / "now.fp").count == 2
    monkeypatch.setattr(fpindex, "TOKENIZER", "dlp-tokens-0")
    write(tmp_path / "old.fp")
    monkeypatch.undo()
    with pytest.raises(FingerprintIndexError, match="rebuild"):
        FingerprintIndex.load(tmp_path / "old.fp")


def test_hostile_text_is_bounded(index_dir: Path, tmp_path: Path) -> None:
    scanner = Scanner(load_rules(index_dir), limits=ScanLimits(timeout_s=20))
    minified = tmp_path / "bundle.min.js"
    minified.write_bytes(b"var a=function(b,c){return b+c};" * 160_000)  # one 5 MB line
    nested = tmp_path / "deep.py"
    nested.write_bytes(b"(" * 200_000 + b")" * 200_000)
    binary = tmp_path / "lib.py"
    binary.write_bytes(os.urandom(1 << 20) + b"\0")
    unknown = tmp_path / "prog.zz"
    unknown.write_bytes(b"@@ ~~ %% <<>> !! \n" * 50_000)
    for path in (minified, nested, binary, unknown):
        started = time.monotonic()
        result = scanner.scan_path(str(path))
        assert time.monotonic() - started < 20
        assert result.status in (Status.CLEAN, Status.MATCH, Status.TIMEOUT), (path, result)
        assert not any(m.kind == "fingerprint" for m in result.matches), path


def test_a_deadline_stops_fingerprinting_a_huge_text(index_dir: Path, tmp_path: Path) -> None:
    scanner = Scanner(load_rules(index_dir), limits=ScanLimits(timeout_s=0.2))
    big = tmp_path / "big.py"
    big.write_bytes((STDLIB / "difflib.py").read_bytes() * 200)  # about 16 MB
    result = scanner.scan_path(str(big))
    assert result.status is Status.TIMEOUT


def test_lexicon_is_part_of_the_index(index: FingerprintIndex) -> None:
    assert isinstance(index.lexicon, Lexicon)
    text = b"if not isinstance(value, str): raise TypeError(value)"
    assert not np.array_equal(tokenize(text, index.lexicon).kinds, tokenize(text).kinds)


# Guidance from ``build`` -------------------------------------------------------------


def test_build_points_to_fingerprints_and_names_the_baseline_that_holds_the_corpus(corpus: Path, tmp_path: Path) -> None:
    from signatures import build

    small = build.build_pack([str(corpus)], name="acme", out=str(tmp_path / "a.yar"), max_strings=20, measure_seconds=0)
    assert any("dlp-signatures fingerprint" in line for line in small.summary())
    roomy = build.build_pack([str(corpus)], name="acme", out=str(tmp_path / "b.yar"), measure_seconds=0)
    assert not any("dlp-signatures fingerprint" in line for line in roomy.summary())
    installed = tmp_path / "site-packages"
    (installed / "acme_tools" / "json").mkdir(parents=True)
    for name in CORPUS_MODULES[:4]:
        shutil.copy(STDLIB / name, installed / "acme_tools" / name)
    shadowed = build.build_pack(
        [str(corpus)], name="acme", out=str(tmp_path / "c.yar"), baseline_roots=[str(installed)], measure_seconds=0
    )
    warning = [line for line in shadowed.summary() if line.startswith("warning:")]
    assert warning and str(installed / "acme_tools") in warning[0]


def test_check_validates_indexes_beside_packs(index_dir: Path, tmp_path: Path) -> None:
    from signatures.check import check

    packs = tmp_path / "packs"
    packs.mkdir()
    shutil.copy(index_dir / "acme.fp", packs / "acme.fp")
    assert check(str(packs), str(tmp_path / "samples")) == []
    (packs / "broken.fp").write_bytes((index_dir / "acme.fp").read_bytes()[:-10])
    problems = check(str(packs), str(tmp_path / "samples"))
    assert len(problems) == 1 and "broken.fp" in str(problems[0])


# The daemon ----------------------------------------------------------------------------


def test_daemon_reports_copies_written_and_copied_to_the_clipboard(index_dir: Path, tmp_path: Path, xvfb_display: str) -> None:
    """``[rules] dir`` loads every ``*.fp``: a renamed copy saved as .txt and an excerpt on the clipboard become events."""
    import signal

    from tests.agent_process import Agent, write_config
    from tests.test_clipboard import copy
    from tests.waiting import wait_for

    rules = tmp_path / "rules"
    shutil.copytree(index_dir, rules)
    (rules / "marker.yar").write_text('rule marker { strings: $a = "ACME-SECRET" condition: $a }')
    config = write_config(tmp_path, rules)
    config.write_text(config.read_text().replace("[clipboard]\nenabled = false", "[clipboard]\nenabled = true\ninterval_ms = 100"))
    agent = Agent(config)
    try:
        wait_for(lambda: agent.status().get("sources", {}).get("clipboard", {}).get("state") == "ok", timeout=15)
        (index,) = agent.status()["fingerprints"]
        assert index["name"] == "acme-code" and index["fingerprints"] > 0 and index["files"] == len(CORPUS_MODULES) + 1
        source = renamed((STDLIB / "shlex.py").read_text(), consistent=True)
        (tmp_path / "Desktop" / "notes.txt").write_text(source)
        copy(excerpt(source, 150, 60))
        wait_for(lambda: len(agent.events()) >= 2, timeout=30, message="two events")
        by_type = {e["type"]: e for e in agent.events()}
        for kind in ("file.write", "clipboard.copy"):
            match = by_type[kind]["matches"][0]
            assert match["kind"] == "fingerprint" and match["source"] == "acme/shlex.py", kind
            assert match["lines"] and match["source_lines"] and by_type[kind]["severity"] == "high"
        spool = (tmp_path / "spool.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("spool.db-*"))
        assert b"shlex" in spool and b"No closing quotation" not in spool  # names and numbers, no code
    finally:
        agent.stop(signal.SIGKILL)


def test_corpus_names_are_valid_utf8_and_bounded() -> None:
    assert fingerprint.reportable("src/caf\udce9.py") == "src/caf\ufffd.py"
    long = "d/" * 1000 + "x.py"
    assert len(fingerprint.reportable(long)) == fingerprint.MAX_NAME_CHARS and fingerprint.reportable(long).endswith("x.py")


def test_long_hex_constants_do_not_become_vocabulary(tmp_path: Path) -> None:
    """``0xFFFF...`` is a number, not a name ``xFFFF...``: an index built from it loads."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    for name in ("a.py", "b.py"):
        (corpus / name).write_text(f"p = 0x{'F' * 300}\nq = 1e10\nr = call(p, q) + other(p) * third(q, p)\n" * 3)
    report = fingerprint.build_index([str(corpus)], name="hex", out=str(tmp_path / "hex.fp"), min_tokens=15)
    vocabulary = FingerprintIndex.load(tmp_path / "hex.fp").lexicon.vocabulary
    assert "call" in vocabulary and not any(v.startswith(("xF", "e10")) for v in vocabulary)
    assert report.kept > 0


def test_a_copy_deep_in_a_large_file_is_found_at_its_own_lines(index_dir: Path, tmp_path: Path) -> None:
    """Content larger than a chunk is fingerprinted window by window; lines count from the file's start."""
    scanner = Scanner(load_rules(index_dir), limits=ScanLimits(chunk_bytes=1 << 20, overlap_bytes=1 << 16))
    filler = "".join(f"entry_{i} = {i}\n" for i in range(150_000))  # about 2.3 MB, 150,000 lines
    copy = tmp_path / "dump.txt"
    copy.write_text(filler + (STDLIB / "shlex.py").read_text())
    result = scanner.scan_path(str(copy))
    match = next(m for m in result.matches if m.kind == "fingerprint")
    assert match.source == "acme/shlex.py"
    first, last = match.lines[0]
    source_first, _ = match.source_lines[0]
    assert abs((first - 150_000) - source_first) <= 3 and last > first
