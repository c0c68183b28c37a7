"""Rule packs built from a corpus: detection of copies, false positives on other code, scan speed.

Usage: python bench/signatures.py [--max-strings N] [--rounds 3] [--seed 1] [--out DIR] [--show-misses N]

Open-source packages found on this machine stand in for a customer's proprietary code: a
fixed list of Python packages from this venv's site-packages and JavaScript packages bundled
with npm. Other fixed packages play "unrelated code" (the negatives). The pack is built as
an admin would build it, against the default baseline (stdlib and site-packages) plus the
rest of npm's packages, with both the corpus and the negatives left out of that baseline.
Targets: whole files >= 98%, 50-line excerpts >= 95%, false positives <= 0.5% of files,
scan speed >= 40 MB/s on one core.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import sysconfig
import time

import yara
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The project root goes first: this script's own name would otherwise hide the signatures package.
sys.path.insert(0, os.path.dirname(HERE))
import corpus as synthetic  # noqa: E402

from agent.scanning import Scanner, load_rules  # noqa: E402
from signatures import baseline, build  # noqa: E402
from signatures.corpus import is_binary, walk  # noqa: E402

SITE = sysconfig.get_paths()["purelib"]
NPM = "/usr/lib/node_modules/npm"
NPM_MODULES = os.path.join(NPM, "node_modules")

# None of these is vendored by another installed package (pip vendors rich, requests...),
# no negative depends on a corpus package (a negative that calls a corpus package's API
# shares its lines, as no outsider shares a customer's private code), and no corpus package
# copies code from a negative (alembic, which carries copies of SQLAlchemy's test helpers
# and docstrings, was dropped for that reason).
CORPUS_PY = ["pypdf", "werkzeug", "anyio", "watchdog", "mako", "markdown_it", "h11", "prometheus_client"]
CORPUS_JS = ["undici", "diff", "postcss-selector-parser", "iconv-lite", "semver"]
NEGATIVE_PY = [
    "sqlalchemy", "fontTools", "pydantic", "hypothesis", "graphql", "_pytest", "PIL",
    "click", "yaml", "pluggy", "psutil", "cachetools", "sortedcontainers",
]  # fmt: skip
NEGATIVE_JS = ["@npmcli", "tar", "lru-cache", "@sigstore", "glob", "minimatch", "path-scurry", "node-gyp", "minipass"]

EXCERPTS_PER_FILE = 2
FRAME_LINES = 10
REFERENCE_RULE = 'rule reference { strings: $a = "DLPC1-" condition: $a }'


def packages(base: str, names: list[str]) -> list[str]:
    found = [os.path.join(base, n) for n in names if os.path.isdir(os.path.join(base, n))]
    missing = sorted(set(names) - {os.path.basename(p) for p in found})
    if missing:
        print(f"not on this machine, left out: {', '.join(missing)}")
    return found


def text_files(roots: list[str]) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the non-empty text files under ``roots``, as the build reads them."""
    out = []
    for path, name in walk(roots):
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 16_000_000:
            continue
        with open(path, "rb") as f:
            data = f.read()
        if data.strip() and not is_binary(data):
            out.append((name, data))
    return out


def excerpts(files: list[tuple[str, bytes]], size: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``EXCERPTS_PER_FILE`` excerpts of ``size`` lines per file that has enough lines,
    re-indented by four spaces and framed by lines of unrelated synthetic code."""
    pool = synthetic.line_pool(seed=7, size=5000)
    out = []
    for name, data in files:
        lines = data.decode("utf-8", errors="replace").splitlines()
        if len(lines) < size:
            continue
        for _ in range(EXCERPTS_PER_FILE):
            start = rng.randrange(len(lines) - size + 1)
            body = ["    " + line for line in lines[start : start + size]]
            frame = rng.sample(pool, 2 * FRAME_LINES)
            text = "\n".join(frame[:FRAME_LINES] + body + frame[FRAME_LINES:]) + "\n"
            out.append((f"{name}:{start + 1}", text.encode()))
    return out


def detected(scanner: Scanner, items: list[tuple[str, bytes]]) -> tuple[int, list[str]]:
    hits, misses = 0, []
    for name, data in items:
        if scanner.scan_bytes(data, name=name).matches:
            hits += 1
        else:
            misses.append(name)
    return hits, misses


def speed(rules: yara.Rules, data: list[bytes]) -> float:
    """MB/s of raw yara-python matching each file in memory, on this one thread."""
    start = time.perf_counter()
    for item in data:
        rules.match(data=item)
    return sum(map(len, data)) / 1e6 / (time.perf_counter() - start)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-strings", type=int, default=build.DEFAULT_MAX_STRINGS)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the excerpt offsets")
    parser.add_argument("--out", default=os.path.join(HERE, ".out"), help="where the pack is written")
    parser.add_argument("--show-misses", type=int, default=0, metavar="N", help="list N misses and false positives")
    args = parser.parse_args()
    console = Console(width=120)

    corpus_roots = packages(SITE, CORPUS_PY) + packages(NPM_MODULES, CORPUS_JS)
    negative_roots = packages(SITE, NEGATIVE_PY) + packages(NPM_MODULES, NEGATIVE_JS) + [os.path.join(NPM, "lib")]
    taken = set(corpus_roots) | set(negative_roots)
    npm_rest = [
        p for p in (os.path.join(NPM_MODULES, n) for n in sorted(os.listdir(NPM_MODULES)) if not n.startswith(".")) if p not in taken
    ]
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "bench-corpus.yar")

    console.print(f"building from {len(corpus_roots)} packages; {len(negative_roots)} negatives left out of the baseline")
    report = build.build_pack(
        corpus_roots,
        name="bench",
        out=out,
        baseline_roots=baseline.default_roots() + npm_rest,
        exclude=negative_roots,
        max_strings=args.max_strings,
    )
    for line in report.summary():
        console.print(f"  {line}", highlight=False)

    scanner = Scanner(load_rules(out))
    rng = random.Random(args.seed)
    positives = text_files(corpus_roots)
    negatives = text_files(negative_roots)
    sized = [(n, d) for n, d in positives if len(d.splitlines()) >= 10]
    whole_hits, whole_misses = detected(scanner, sized)
    all_hits, _ = detected(scanner, positives)
    rows = [
        ("whole files, >= 10 lines", whole_hits, len(sized), ">= 98%", whole_misses),
        ("whole files, all", all_hits, len(positives), "", []),
    ]
    for size, target in ((50, ">= 95%"), (20, "reported")):
        items = excerpts(positives, size, rng)
        hits, misses = detected(scanner, items)
        rows.append((f"{size}-line excerpts, re-indented", hits, len(items), target, misses))
    fp, _ = detected(scanner, negatives)

    raw = yara.compile(filepath=out)
    reference = yara.compile(source=REFERENCE_RULE)
    data = [d for _, d in negatives]
    pack_speeds, ref_speeds = [], []
    for _ in range(args.rounds):
        ref_speeds.append(speed(reference, data))
        pack_speeds.append(speed(raw, data))
    pack_mb_s, ref_mb_s = statistics.median(pack_speeds), statistics.median(ref_speeds)
    ratio = statistics.median(p / r for p, r in zip(pack_speeds, ref_speeds))

    table = Table(title=f"dlp-signatures build: {len(positives)} corpus files ({sum(len(d) for _, d in positives) / 1e6:.1f} MB)")
    table.add_column("figure")
    table.add_column("result", justify="right")
    table.add_column("of", justify="right")
    table.add_column("target")
    for label, hits, total, target, _ in rows:
        table.add_row(f"detected: {label}", percent(hits, total), f"{hits:,} / {total:,}", target)
    table.add_row(
        "false positives: files of other packages", percent(fp, len(negatives)), f"{fp:,} / {len(negatives):,}", "<= 0.5%"
    )
    megabytes = sum(map(len, data)) / 1e6
    table.add_row("scan speed, 1 core (raw yara-python)", f"{pack_mb_s:.0f} MB/s", f"{megabytes:.0f} MB x {args.rounds}", ">= 40 MB/s")
    table.add_row("reference: one-string rule, same data", f"{ref_mb_s:.0f} MB/s", f"ratio {ratio:.2f}", "")
    table.add_row("build time", f"{report.seconds:.1f} s", f"baseline {report.baseline.seconds:.1f} s" if report.baseline else "", "")
    table.add_row("rules / strings", f"{len(report.rules):,} / {report.strings:,}", f"max {args.max_strings:,}", "")
    console.print(table)
    if args.show_misses:
        for label, _, _, _, misses in rows:
            for name in misses[: args.show_misses]:
                console.print(f"missed ({label}): {name}", highlight=False)
        matches: dict[str, list[str]] = {}
        for name, body in negatives:
            found = scanner.scan_bytes(body).matches
            if found:
                matches[name] = [m.rule for m in found]
        for name, rules in list(matches.items())[: args.show_misses]:
            console.print(f"false positive: {name}: {', '.join(rules[:3])}", highlight=False)


if __name__ == "__main__":
    main()
