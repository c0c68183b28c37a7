"""`make run` for now: build a small "vendor workstation" under var/demo and scan it.

The customer's repository sits in var/demo/customer-repo (protected); var/demo/outgoing
holds what a contractor is about to copy off: a zip of source with a leaked key,
a renamed copy of a protected file, a confidential memo and some harmless files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "var", "demo")
SAMPLES = os.path.join(ROOT, "signatures", "samples")

SETTLE_GO = """// Copyright (C) 2024 Contoso Ltd - All Rights Reserved
// Unauthorized copying of this file, via any medium is strictly prohibited

package ledger

// Settle reconciles a batch of entries against the clearing house.
func Settle(batch []Entry) error {
	for _, e := range batch {
		if err := e.Validate(); err != nil {
			return err
		}
	}
	return nil
}
"""

PLAIN_GO = """package ledger

// Entry is one line of a batch.
type Entry struct {
	Account string
	Amount  int64
}

func (e Entry) Validate() error { return nil }
"""


def build() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    repo = os.path.join(DEMO, "customer-repo", "ledger")
    out = os.path.join(DEMO, "outgoing")
    os.makedirs(repo)
    os.makedirs(out)
    with open(os.path.join(repo, "settle.go"), "w") as f:
        f.write(SETTLE_GO)
    with open(os.path.join(repo, "entry.go"), "w") as f:
        f.write(PLAIN_GO)
    # A byte-identical copy under an innocent name: no rule fires, the protected index does.
    shutil.copy(os.path.join(repo, "entry.go"), os.path.join(out, "notes.txt"))
    with zipfile.ZipFile(os.path.join(out, "backup.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        z.write(os.path.join(repo, "settle.go"), "src/ledger/settle.go")
        z.write(os.path.join(SAMPLES, "credentials", "aws_secret_access_key", "positive", "deploy.sh"), "deploy/deploy.sh")
    shutil.copy(os.path.join(SAMPLES, "confidentiality", "proprietary_and_confidential", "positive", "memo.txt"), os.path.join(out, "memo.txt"))
    with open(os.path.join(out, "shopping.txt"), "w") as f:
        f.write("milk, eggs, coffee\n")


def main() -> int:
    build()
    print(f"demo workstation in {DEMO}\n")
    print("$ dlp-agent scan var/demo/outgoing --protected var/demo/customer-repo\n", flush=True)
    cmd = [sys.executable, "-m", "agent.cli.main", "scan", os.path.join(DEMO, "outgoing"), "--protected", os.path.join(DEMO, "customer-repo")]
    code = subprocess.call(cmd, cwd=ROOT)
    print(f"\nexit status {code} (1 = something matched). Add --json for machine-readable output.")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
