"""``dlp-agent scan`` as a user runs it: exit codes, text and JSON output, jobs, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factories
from tests.conftest import SECRET_WORD, run_cli

WORD = SECRET_WORD.encode()
JSON_KEYS = {"path", "status", "sha256", "size", "matches", "reason"}
MATCH_KEYS = {"rule", "namespace", "severity", "category", "tags", "member", "offsets"}


def make_tree(root: Path) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "clean.py").write_text("print('hello')\n")
    (root / "src" / "deep" / "leak.py").write_bytes(b"token = '" + WORD + b"'\n")
    (root / "bundle.zip").write_bytes(factories.zip_bytes({"src/core.py": WORD, "README": b"hi"}))
    (root / "bomb.zip").write_bytes(factories.zeros_zip_bytes(50 * 1024 * 1024))
    (root / "locked.zip").write_bytes(factories.encrypted_zip_bytes({"a.py": WORD}))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage")
    (root / "dangling").symlink_to(root / "nowhere")
    os.mkfifo(root / "pipe")
    (root / os.fsdecode(b"r\xe9sum\xe9.txt")).write_bytes(b"plain")
    return root


def json_lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_json_output_and_exit_code(tmp_path: Path, rules_dir: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    proc = run_cli("scan", str(tree), "--rules", str(rules_dir), "--json")
    assert proc.returncode == 1, proc.stderr
    rows = json_lines(proc)
    by_name = {os.path.relpath(r["path"], tree): r for r in rows}
    assert all(set(r) == JSON_KEYS for r in rows)
    statuses = {name: r["status"] for name, r in by_name.items()}
    assert statuses == {
        "bomb.zip": "too_large",
        "broken.pdf": "unreadable",
        "bundle.zip": "match",
        "dangling": "unreadable",
        "locked.zip": "encrypted",
        "pipe": "skipped",
        os.fsdecode(b"r\xe9sum\xe9.txt"): "clean",
        "src/clean.py": "clean",
        "src/deep/leak.py": "match",
    }
    (match,) = by_name["bundle.zip"]["matches"]
    assert MATCH_KEYS <= set(match)
    assert (match["rule"], match["namespace"], match["member"], match["offsets"]) == ("secret_word", "testpack", "src/core.py", [0])
    leak = by_name["src/deep/leak.py"]
    assert leak["size"] == (tree / "src" / "deep" / "leak.py").stat().st_size and len(leak["sha256"]) == 64


def test_text_output(tmp_path: Path, rules_dir: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    proc = run_cli("scan", str(tree), "--rules", str(rules_dir))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert f"{tree}/bundle.zip: high: testpack.secret_word in src/core.py" in out
    assert f"{tree}/src/deep/leak.py: high: testpack.secret_word" in out
    assert "scanned 9 files" in out and "2 match" in out and "1 encrypted" in out
    assert f"{tree}/locked.zip: encrypted:" in proc.stderr.decode()


def test_exit_zero_when_nothing_matches(tmp_path: Path, rules_dir: Path) -> None:
    (tmp_path / "a.txt").write_text("nothing")
    proc = run_cli("scan", str(tmp_path / "a.txt"), "--rules", str(rules_dir))
    assert proc.returncode == 0, proc.stderr


def test_parallel_jobs_give_the_same_results(tmp_path: Path, rules_dir: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    for i in range(40):
        (tree / f"gen{i}.txt").write_bytes(b"x" * i + (WORD if i % 3 == 0 else b""))
    one = run_cli("scan", str(tree), "--rules", str(rules_dir), "--json")
    two = run_cli("scan", str(tree), "--rules", str(rules_dir), "--json", "--jobs", "2")
    assert one.returncode == two.returncode == 1
    assert json_lines(one) == json_lines(two)


def test_rule_syntax_error_exits_2_with_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yar").write_text('// pack\nrule a {\n  condition: undefined_thing\n}\n')
    (tmp_path / "f.txt").write_text("x")
    proc = run_cli("scan", str(tmp_path / "f.txt"), "--rules", str(rules))
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert f"{rules / 'broken.yar'}:3:" in err and "undefined_thing" in err
    assert proc.stdout == b""


@pytest.mark.parametrize("args", [["scan"], ["scan", "x", "--jobs", "0"], ["nosuchcommand"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run_cli(*args).returncode == 2


def test_default_rules_are_the_starter_packs(tmp_path: Path) -> None:
    f = tmp_path / "memo.txt"
    f.write_text("STRICTLY CONFIDENTIAL\nMerger terms.\n")
    proc = run_cli("scan", str(f), "--json")
    assert proc.returncode == 1
    (row,) = json_lines(proc)
    assert row["matches"][0]["rule"] == "proprietary_and_confidential"


def test_protected_folder_option(tmp_path: Path, rules_dir: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "engine.c").write_bytes(b"int engine(void) { return 42; }\n" * 10)
    target = tmp_path / "out"
    target.mkdir()
    shutil.copy(repo / "engine.c", target / "e.c")
    proc = run_cli("scan", str(target), "--rules", str(rules_dir), "--protected", str(repo), "--json")
    assert proc.returncode == 1
    (row,) = json_lines(proc)
    assert row["matches"][0]["protected_path"] == str(repo / "engine.c")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied_is_unreadable(tmp_path: Path, make_scanner) -> None:
    # Root reads everything: a forked child drops to nobody and scans there.
    secret = tmp_path / "secret.txt"
    secret.write_bytes(WORD)
    secret.chmod(0)
    tmp_path.chmod(0o755)
    scanner = make_scanner()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            result = scanner.scan_path(str(secret))
            os.write(write_end, json.dumps(result.to_dict()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        row = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert (row["status"], row["reason"]) == ("unreadable", "Permission denied")


# Never raw on the user's terminal: C0 and C1 controls (ESC, CSI, BEL, CR, backspace) and bidi controls.
RAW_CONTROL = "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"


def test_names_from_disk_show_controls_as_marks(tmp_path: Path, rules_dir: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "invoice\u202egpj.exe").write_bytes(WORD)
    (tree / "k.zip").write_bytes(factories.zip_bytes({"a\x1b[31m\r.py": WORD}))
    (tree / "x\x1b]0;owned\x07.zip").write_bytes(factories.encrypted_zip_bytes({"a.py": WORD}))

    text = run_cli("scan", str(tree), "--rules", str(rules_dir))
    out, err = text.stdout.decode(), text.stderr.decode()
    assert re.search(RAW_CONTROL, out) is None and re.search(RAW_CONTROL, err) is None
    assert f"{tree}/invoice<U+202E>gpj.exe: high: testpack.secret_word" in out
    assert f"{tree}/k.zip: high: testpack.secret_word in a<U+001B>[31m<U+000D>.py" in out
    assert f"{tree}/x<U+001B>]0;owned<U+0007>.zip: encrypted:" in err

    as_json = run_cli("scan", str(tree), "--rules", str(rules_dir), "--json")
    assert re.search(RAW_CONTROL, as_json.stdout.decode()) is None and "invoice\\u202egpj.exe" in as_json.stdout.decode()
    assert str(tree / "invoice\u202egpj.exe") in {row["path"] for row in json_lines(as_json)}, "JSON escapes, the value is unchanged"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path, jobs: str) -> None:
    """`dlp-agent scan --json | head -1`: the scan ends as `yes | head` does (141), quietly, workers included."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(1500):  # about 200 bytes of JSON each: more than a pipe holds
        (tree / f"f{i:04d}.txt").write_text(f"line {i}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "scan", "--json", "--jobs", jobs, str(tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["status"] == "clean"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode(errors="replace")
