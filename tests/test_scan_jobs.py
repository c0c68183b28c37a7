"""``dlp-agent scan --jobs N``: worker processes give what one job gives, and never outlive the scan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent.scanning import ScanError, ScanLimits, Scanner, ScanResult, Status
from agent.scanning.pool import scan_in_processes
from agent.scanning.walk import iter_targets
from tests import factories
from tests.conftest import SECRET_WORD, TEST_PACK, run_cli
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are forked")

WORD = SECRET_WORD.encode()
SLOW_PACK = """
rule slow_pattern
{
    strings:
        $a = /aa[a-z]{0,200}q/
    condition:
        $a
}
"""
"""Every position of a run of ``a`` starts a 200-letter search: 8 MB of them take far longer than a second."""


@pytest.fixture
def slow_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "slow-rules"
    rules.mkdir()
    (rules / "testpack.yar").write_text(TEST_PACK)
    (rules / "slow.yar").write_text(SLOW_PACK)
    return rules


def mixed_tree(root: Path) -> Path:
    """Every status a scan gives, archives, and enough small files for many batches."""
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "leak.py").write_bytes(b"token = '" + WORD + b"'\n")
    (root / "bundle.zip").write_bytes(factories.zip_bytes({"src/core.py": WORD, "README": b"hi"}))
    (root / "nested.zip").write_bytes(factories.zip_bytes({"inner.zip": factories.zip_bytes({"a.py": WORD})}))
    (root / "bomb.zip").write_bytes(factories.zeros_zip_bytes(50 * 1024 * 1024))
    (root / "locked.zip").write_bytes(factories.encrypted_zip_bytes({"a.py": WORD}))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage")
    (root / "dangling").symlink_to(root / "nowhere")
    os.mkfifo(root / "pipe")
    with open(root / "big.log", "wb") as f:
        f.truncate(9_500_000)  # past --max-file-size below
    (root / "slow.txt").write_bytes(b"a" * 8_000_000)  # the slow rule's timeout
    for i in range(120):
        folder = root / "gen" / f"d{i // 40}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03d}.txt").write_bytes(b"line\n" * i + (WORD if i % 7 == 0 else b""))
    return root


def scan(tree: Path, rules: Path, *extra: str) -> tuple[int, list[dict]]:
    proc = run_cli("scan", str(tree), "--rules", str(rules), "--json", "--timeout", "1", "--max-file-size", "9000000", *extra)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_jobs_give_the_same_results_statuses_and_order(tmp_path: Path, slow_rules: Path) -> None:
    tree = mixed_tree(tmp_path / "tree")
    code, one = scan(tree, slow_rules)
    assert code == 1
    statuses = {row["status"] for row in one}
    assert statuses == {s.value for s in Status}, "the tree gives every status"
    by_name = {os.path.relpath(r["path"], tree): r["status"] for r in one}
    assert (by_name["slow.txt"], by_name["big.log"], by_name["nested.zip"]) == ("timeout", "too_large", "match")
    for jobs in ("2", "3"):
        assert scan(tree, slow_rules, "--jobs", jobs) == (code, one)


def test_jobs_exit_codes(tmp_path: Path, rules_dir: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(10):
        (clean / f"{i}.txt").write_text("nothing here\n")
    assert run_cli("scan", str(clean), "--rules", str(rules_dir), "--jobs", "2").returncode == 0
    (clean / "leak.txt").write_bytes(WORD)
    assert run_cli("scan", str(clean), "--rules", str(rules_dir), "--jobs", "2").returncode == 1
    broken = tmp_path / "broken-rules"
    broken.mkdir()
    (broken / "x.yar").write_text("rule x { condition: nothing }")
    assert run_cli("scan", str(clean), "--rules", str(broken), "--jobs", "2").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("scan", str(empty), "--rules", str(rules_dir), "--jobs", "2")
    assert proc.returncode == 0 and "scanned 0 files" in proc.stdout.decode()


class _Faulty(Scanner):
    """A real scanner that dies, or hangs, on one chosen file (the fault a parser bug would cause)."""

    fault: str = ""
    victim: str = ""

    def scan_path(self, path: str) -> ScanResult:
        if path == self.victim:
            if self.fault == "die":
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does; a crashing parser is SIGSEGV
            if self.fault == "raise":
                raise RuntimeError("a bug in the scanner")
            time.sleep(3600)
        return super().scan_path(path)


@pytest.mark.parametrize("fault", ["die", "hang"])
def test_a_worker_dying_or_stuck_costs_only_its_file(tmp_path: Path, make_scanner, fault: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(60):
        (tree / f"f{i:02d}.txt").write_bytes(b"plain\n" + (WORD if i % 5 == 0 else b""))
    plain = make_scanner()
    expected = [plain.scan_path(t.path) for t in iter_targets([str(tree)])]
    faulty = _Faulty(plain.ruleset, limits=ScanLimits(timeout_s=0.5))
    faulty.fault, faulty.victim = fault, str(tree / "f17.txt")

    got = list(scan_in_processes(faulty, iter_targets([str(tree)]), jobs=2, stuck_after_s=2.0))

    assert [r.path for r in got] == [r.path for r in expected]
    victim = got[17]
    if fault == "die":
        assert (victim.status, victim.reason) == (Status.UNREADABLE, "the scanning process died on this file (killed by SIGKILL)")
    else:
        assert victim.status is Status.TIMEOUT and "its process was stopped" in (victim.reason or "")
    assert [r.to_dict() for r in got[:17] + got[18:]] == [r.to_dict() for r in expected[:17] + expected[18:]]


def test_a_worker_error_stops_the_scan(tmp_path: Path, make_scanner) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"f{i:02d}.txt").write_bytes(b"plain\n")
    faulty = _Faulty(make_scanner().ruleset)
    faulty.fault, faulty.victim = "raise", str(tree / "f30.txt")
    with pytest.raises(ScanError, match="(?s)f30.txt: Traceback .*RuntimeError: a bug in the scanner"):
        list(scan_in_processes(faulty, iter_targets([str(tree)]), jobs=2))


def test_an_abandoned_scan_reaps_its_workers(tmp_path: Path, make_scanner) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(200):
        (tree / f"f{i:03d}.txt").write_bytes(b"plain\n" * 100)
    results = scan_in_processes(make_scanner(), iter_targets([str(tree)]), jobs=2)
    next(results)
    workers = psutil.Process().children()
    assert len(workers) == 2
    results.close()
    assert not set(psutil.Process().children()) & set(workers), "reaped, not left running or as zombies"


def _cli_with_workers(tree: Path, rules: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "scan", str(tree), "--rules", str(rules), "--json", "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    cli = psutil.Process(proc.pid)
    wait_for(lambda: len(cli.children()) == 2, timeout=60)
    return proc, cli.children()


def _slow_tree(root: Path) -> Path:
    root.mkdir()
    for i in range(6):
        (root / f"slow{i}.txt").write_bytes(b"a" * 8_000_000)
    return root


def test_ctrl_c_stops_the_workers(tmp_path: Path, slow_rules: Path) -> None:
    proc, workers = _cli_with_workers(_slow_tree(tmp_path / "tree"), slow_rules)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"interrupted" in err
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers), timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path: Path, slow_rules: Path) -> None:
    proc, workers = _cli_with_workers(_slow_tree(tmp_path / "tree"), slow_rules)
    proc.kill()
    proc.communicate(timeout=60)
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers), timeout=10)


@pytest.mark.slow
def test_memory_stays_flat_per_worker(tmp_path: Path, rules_dir: Path) -> None:
    block = (b"2026-11-24 INFO worker=7 request served in 12ms path=/api/v1/items\n" * 16384)[: 1 << 20]
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("a.log", "b.log", "c.log"):
        with open(logs / name, "wb") as f:
            for i in range(160):  # 160 MiB each, ten chunks
                f.write(block)
                if i == 100:
                    f.write(WORD)
    # wait4 gives the largest of the scan's processes (the parent and its reaped workers).
    measure = (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "out = child.stdout.read()\n"
        "_, status, usage = os.wait4(child.pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, out.count(b'\"match\"'))\n"
    )
    scan = [sys.executable, "-m", "agent.cli.main", "scan", "--json", "--jobs", "2", "--rules", str(rules_dir), str(logs)]
    proc = subprocess.run([sys.executable, "-c", measure, *scan], capture_output=True, timeout=300)
    code, maxrss_kb, matched = (int(v) for v in proc.stdout.split())
    assert (code, matched) == (1, 3), proc.stderr
    assert maxrss_kb / 1024 < 200, f"peak RSS {maxrss_kb / 1024:.0f} MB"


def test_threads_where_there_is_no_fork_give_the_same_results(tmp_path: Path, make_scanner) -> None:
    from agent.scanning import batch

    tree = mixed_tree(tmp_path / "tree")
    scanner = make_scanner(limits=ScanLimits(max_file_bytes=9_000_000))
    one = [r.to_dict() for r in batch.scan_targets(scanner, iter_targets([str(tree)]))]
    assert [r.to_dict() for r in batch._threads(scanner, iter_targets([str(tree)]), 3)] == one


def test_batches_larger_than_a_pipe_are_written_in_parts(tmp_path: Path, make_scanner) -> None:
    # 16 paths of about 4,000 bytes: a batch outgrows the 64 KiB pipe buffer, so the parent
    # must wait for room and write the rest.
    tree = tmp_path / "tree"
    deep = tree.joinpath(*[f"{i:02d}" + "d" * 248 for i in range(15)])
    deep.mkdir(parents=True)
    room = 4000 - len(str(deep))
    for i in range(40):
        (deep / (f"{i:02d}" + "f" * (room - 2))).write_bytes(b"plain\n" + (WORD if i % 4 == 0 else b""))
    scanner = make_scanner()
    one = [r.to_dict() for r in scan_in_processes(scanner, iter_targets([str(tree)]), jobs=1)]
    assert len(one) == 40 and sum(r["status"] == "match" for r in one) == 10
    assert [r.to_dict() for r in scan_in_processes(scanner, iter_targets([str(tree)]), jobs=2)] == one


def test_the_tail_goes_out_largest_first_in_shrinking_batches(tmp_path: Path, make_scanner, monkeypatch) -> None:
    # Once the walk has ended, what is left goes out largest first, in batches that shrink down to one
    # file, so that no worker scans a last big file (or two last batches) while the others wait.
    from agent.scanning import pool

    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(200):
        (tree / f"f{i:03d}.txt").write_bytes(b"plain text\n" * (100 + (i * 37) % 600) + (WORD if i % 9 == 0 else b""))
    (tree / "zz-last.log").write_bytes(b"a larger file the walk finds last\n" * 4000)
    handed: list[list[tuple[int, str]]] = []
    send = pool._Pool._send

    def recording(self: pool._Pool, worker: pool._Worker, batch: list[tuple[int, str]]) -> None:
        handed.append(list(batch))
        send(self, worker, batch)

    monkeypatch.setattr(pool._Pool, "_send", recording)
    scanner = make_scanner()
    expected = [r.to_dict() for r in scan_in_processes(scanner, iter_targets([str(tree)]), jobs=1)]
    handed.clear()

    got = [r.to_dict() for r in scan_in_processes(scanner, iter_targets([str(tree)]), jobs=2)]

    assert got == expected, "results in walk order, the same as one job's"
    order = [path for batch in handed for _, path in batch]
    assert sorted(order) == sorted(r["path"] for r in expected), "every file handed out once"
    largest = str(tree / "zz-last.log")
    assert order.index(largest) < order.index(str(tree / "f199.txt")), "the largest file left goes out before smaller ones walked earlier"
    sizes = [sum(os.path.getsize(path) for _, path in batch) for batch in handed]
    tail = handed[-3:]
    assert all(len(batch) == 1 for batch in tail), f"the last batches hold one file each: {[len(b) for b in handed]}"
    assert max(sizes[-3:]) < max(sizes[:4]), "and are smaller than the first"
