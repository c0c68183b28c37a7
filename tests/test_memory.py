"""Memory stays flat on large inputs: the figure is in bench/bigfile.py, the bound is checked here."""

from __future__ import annotations

import json
import os
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
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "scan", "--json", "--rules", str(rules_dir), str(big)],
            stdout=out,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert os.waitstatus_to_exitcode(status) == 1
    (row,) = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert row["matches"][0]["offsets"] == [301 * (1 << 20)]
    peak_mb = usage.ru_maxrss / 1024
    assert peak_mb < LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
