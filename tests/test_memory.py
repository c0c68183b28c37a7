"""Memory stays flat on large inputs: the figure is in bench/bigfile.py, the bound is checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SECRET_WORD

LIMIT_MB = 200


@pytest.mark.slow
def test_large_file_scan_stays_under_200_mb(tmp_path: Path, rules_dir: Path) -> None:
    big = tmp_path / "dump.log"
    block = (b"2026-11-24 INFO worker=7 request served in 12ms path=/api/v1/items\n" * 16384)[: 1 << 20]
    with open(big, "wb") as f:
        for i in range(512):  # 512 MiB, far above the 16 MiB chunk
            f.write(block)
            if i == 300:
                f.write(SECRET_WORD.encode())
    out_path = tmp_path / "out.jsonl"
    # A child's peak RSS survives exec and starts at its parent's size when forked, and this
    # test process may be large by now: a small intermediate process starts the scan instead.
    measure = (
        "import os, subprocess, sys\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    child = subprocess.Popen(sys.argv[2:], stdout=out)\n"
        "    _, status, usage = os.wait4(child.pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
    )
    scan = [sys.executable, "-m", "agent.cli.main", "scan", "--json", "--rules", str(rules_dir), str(big)]
    proc = subprocess.run([sys.executable, "-c", measure, str(out_path), *scan], capture_output=True, timeout=240)
    code, maxrss_kb = (int(v) for v in proc.stdout.split())
    assert code == 1, proc.stderr
    (row,) = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert row["matches"][0]["offsets"] == [301 * (1 << 20)]
    peak_mb = maxrss_kb / 1024
    assert peak_mb < LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
