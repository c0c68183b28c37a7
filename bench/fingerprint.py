"""Fingerprint indexes (issue 15): copies found after renaming, reflowing, excerpting; false positives; speed; size.

Usage: python bench/fingerprint.py [--quick] [--seed 1] [--files N] [--unrelated N] [--show-misses N] [--out DIR]

Real third-party code in five languages stands in for a customer's (bench/fpcorpora.py fetches it
from PyPI, npm and Debian into bench/.fpcorpus on the first run). Three indexes are built as an
admin would, against the default baseline plus other Go libraries: a ~1 MB sample of the customer's code, and ~100 MB
(all of the customer's code plus filler from other projects); the same corpora go through
``build_pack`` for the YARA comparison. Copies a leaker makes (bench/fpvariants.py) of sampled
customer files, whole and as 50- and 20-line excerpts, are looked up in the 100 MB index; other
projects' files (at least 20 lines each) count the false positives. Results go to
``OUT/fingerprint.json``; ``--quick`` samples fewer files and is done in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib

import yara
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The project root goes first: this script's own name would otherwise hide the signatures package.
sys.path.insert(0, os.path.dirname(HERE))
import fpcorpora  # noqa: E402
import fpvariants  # noqa: E402

from agent.scanning.fpindex import FingerprintIndex  # noqa: E402
from agent.scanning.fpmatch import find  # noqa: E402
from agent.scanning.tokens import tokenize  # noqa: E402
from agent.scanning.winnow import winnow  # noqa: E402
from signatures import baseline, build  # noqa: E402
from signatures import fingerprint as fp_build  # noqa: E402

SIZES = ("whole", 50, 20)
TARGETS = [
    # (figure, variant, size, minimum share)
    ("combined, whole files", "combined", "whole", 0.99),
    ("combined, 50-line excerpts", "combined", 50, 0.99),
    ("renamed+reflowed, 20-line excerpts", "renamed+reflowed", 20, 0.95),
    ("10% statements changed, 50-line excerpts", "10% changed", 50, 0.90),
    ("25% dead code, 50-line excerpts", "25% dead code", 50, 0.80),
]
RSS_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from agent.scanning import Scanner, load_rules
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024
before = status()
started = time.perf_counter()
rules = load_rules(sys.argv[2])
loaded = time.perf_counter() - started
scanner = Scanner(rules)
found = 0
for path in sys.argv[3:]:
    with open(path, "rb") as f:
        found += bool(scanner.scan_bytes(f.read(), name=path).matches)
rss, hwm = status()
print(before[0], rss, hwm, found, f"{loaded:.3f}")
"""


def seeded(seed: int, *parts: object) -> random.Random:
    return random.Random(zlib.crc32("\0".join(map(str, (seed, *parts))).encode()))


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def build_indexes(corpora: fpcorpora.Corpora, out: str, console: Console) -> dict[str, dict]:
    """The 1 MB and 100 MB indexes, with their build figures."""
    roots = fp_build.default_roots() + [corpora.roots["baseline"]]
    exclude = fpcorpora.installed_copies(roots)
    if exclude:
        console.print(f"left out of the baseline (the bench's own packages installed there): {', '.join(exclude)}", highlight=False)
    built: dict[str, dict] = {}
    for name, corpus in (("small", [corpora.roots["small"]]), ("large", [corpora.roots["customer"], corpora.roots["filler"]])):
        path = os.path.join(out, "fp", name, f"{name}.fp")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        console.print(f"building the {name} index from {', '.join(corpus)}", highlight=False)
        report = fp_build.build_index(corpus, name=f"bench-{name}", out=path, baseline_roots=roots, exclude=exclude)
        for line in report.summary():
            console.print(f"  {line}", highlight=False)
        index = FingerprintIndex.load(path)
        built[name] = {
            "path": path,
            "index": index,
            "corpus_mb": report.bytes / 1e6,
            "files": report.files,
            "seconds": report.seconds,
            "fingerprints": index.count,
            "size_bytes": os.path.getsize(path),
            "bytes_per_fingerprint": os.path.getsize(path) / max(1, index.count),
            "dropped_baseline": report.dropped_baseline,
            "dropped_common": report.dropped_common,
            "dropped_plain": report.dropped_plain,
            "baseline_mb": report.baseline_bytes / 1e6,
        }
    return built


def build_packs(corpora: fpcorpora.Corpora, out: str, console: Console, unrelated: list[str]) -> dict[str, dict]:
    """``build_pack`` over the same corpora, as the YARA side of the comparison."""
    packs: dict[str, dict] = {}
    for name, corpus in (("small", [corpora.roots["small"]]), ("large", [corpora.roots["customer"], corpora.roots["filler"]])):
        path = os.path.join(out, "yara", f"{name}.yar")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        console.print(f"building the YARA pack of the {name} corpus", highlight=False)
        started = time.perf_counter()
        roots = baseline.default_roots() + [corpora.roots["baseline"]]
        report = build.build_pack(corpus, name=f"bench_{name}", out=path, baseline_roots=roots, exclude=fpcorpora.installed_copies(roots), measure_seconds=0)
        packs[name] = {"path": path, "seconds": time.perf_counter() - started, "strings": report.strings, "rules": len(report.rules)}
    return packs


def variant_items(files: list[fpcorpora.SourceFile], seed: int, pools: dict[str, list[str]]):
    """``(language, variant, size, label, text)`` for every sampled file, variant and size."""
    for f in files:
        text = read(f.path)
        for size in SIZES:
            if size == "whole":
                start, piece = 1, text
            else:
                got = fpvariants.excerpt(text, size, seeded(seed, f.name, size), f.language)
                if got is None:
                    continue
                start, piece = got
            for variant, transform in fpvariants.VARIANTS.items():
                rng = seeded(seed, f.name, size, variant)
                if variant == "10% changed":
                    changed = fpvariants.change_statements(piece, f.language, rng, pool=pools[f.language])
                else:
                    changed = transform(piece, f.language, rng)
                yield f.language, variant, size, f"{f.name}:{start}", f.name, changed


def tokens_of(index: FingerprintIndex, data: bytes):  # type: ignore[no-untyped-def]
    """The index's own token stream of ``data`` (with its vocabulary, where the index has one)."""
    lexicon = getattr(index, "lexicon", None)
    return tokenize(data, lexicon) if lexicon is not None else tokenize(data)


def explain(index: FingerprintIndex, name: str, text: str) -> dict[str, int]:
    """Why a copy was missed, in numbers: its tokens and fingerprints, and how many the index knows."""
    data = text.encode()
    tokens = tokens_of(index, data)
    prints = winnow(tokens, index.k, index.w)
    found = index.lookup(prints.hashes)
    origin = {i for i, f in enumerate(index.files) if f.endswith(name)}
    return {
        "lines": text.count("\n") + 1,
        "tokens": len(tokens),
        "fingerprints": len(prints),
        "found": len(found.files),
        "in_original": int(sum(1 for f in found.files.tolist() if f in origin)),
        "files": len(set(found.files.tolist())),
    }


def described(e: dict[str, int]) -> str:
    return f"{e['lines']} lines, {e['tokens']} tokens, {e['fingerprints']} fingerprints, {e['found']} found in the index ({e['in_original']} in the original, {e['files']} files)"


def detection(index: FingerprintIndex, files: list[fpcorpora.SourceFile], seed: int, pools: dict[str, list[str]], keep: int):
    """Counts ``{(variant, size, language): [hits, total, right_source]}``, the misses with the numbers of
    ``explain``, and ``keep`` described misses per variant and size."""
    counts: dict[tuple[str, object, str], list[int]] = {}
    coverage: dict[tuple[str, object, str], list[float]] = {}
    misses: list[tuple[str, str, object, str, dict[str, int]]] = []
    explained: dict[tuple[str, object], list[str]] = {}
    for language, variant, size, label, name, text in variant_items(files, seed, pools):
        hits = find([index], text.encode())
        cell = counts.setdefault((variant, size, language), [0, 0, 0])
        cell[1] += 1
        if hits:
            cell[0] += 1
            cell[2] += any(h.source.endswith(name) or name.endswith(h.source) for h in hits)
            coverage.setdefault((variant, size, language), []).append(hits[0].coverage)
        else:
            why = explain(index, name, text)
            misses.append((language, variant, size, label, why))
            shown = explained.setdefault((variant, size), [])
            if len(shown) < keep:
                shown.append(f"{language:10} {label}: {described(why)}")
    return counts, misses, explained, coverage


def declared_by_language(corpora: fpcorpora.Corpora) -> dict[str, set[str]]:
    """The names each language's customer code declares (cached beside the corpora)."""
    path = os.path.join(fpcorpora.CACHE, "declared.json")
    listing = zlib.crc32("\n".join(f.name for f in corpora.of("customer")).encode())
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("listing") == listing:
            return {lang: set(names) for lang, names in cached["names"].items()}
    names: dict[str, set[str]] = {lang: set() for lang in fpcorpora.LANGUAGES}
    for f in corpora.of("customer"):
        names[f.language] |= fpvariants.declared_names(read(f.path), f.language)
    with open(path, "w") as out:
        json.dump({"listing": listing, "names": {k: sorted(v) for k, v in names.items()}}, out)
    return names


def line_pools(corpora: fpcorpora.Corpora, seed: int) -> dict[str, list[str]]:
    """Code lines of unrelated projects per language, for the changed statements."""
    rng = random.Random(seed)
    pools = {}
    for lang in fpcorpora.LANGUAGES:
        files = corpora.of("unrelated", lang, fpcorpora.MIN_LINES)
        lines: list[str] = []
        for f in rng.sample(files, min(40, len(files))):
            lines += [line for line in read(f.path).splitlines() if 8 < len(line.strip()) < 100]
        pools[lang] = lines
    return pools


def false_positives(index: FingerprintIndex, files: list[fpcorpora.SourceFile]):
    found: list[tuple[str, str, float, list]] = []
    for f in files:
        hits = find([index], read(f.path).encode())
        if hits:
            found.append((f.name, hits[0].source, hits[0].coverage, list(hits[0].lines[:3])))
    return found


def tokenize_speed(index: FingerprintIndex, texts: list[bytes], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for data in texts:
            winnow(tokens_of(index, data))
        best = max(best, sum(map(len, texts)) / 1e6 / (time.perf_counter() - started))
    return best


def scan_speeds(indexes: dict[str, FingerprintIndex], packs: dict[str, yara.Rules], texts: list[bytes], rounds: int) -> dict[str, float]:
    """Median MB/s of ``find`` per index, of its look-ups alone (fingerprints taken beforehand), and of raw
    yara-python per pack; rounds interleaved."""
    samples: dict[str, list[float]] = {}
    megabytes = sum(map(len, texts)) / 1e6
    prints = {name: [winnow(tokens_of(index, data), index.k, index.w).hashes for data in texts] for name, index in indexes.items()}
    for _ in range(rounds):
        for name, index in indexes.items():
            started = time.perf_counter()
            for data in texts:
                find([index], data)
            samples.setdefault(f"fp {name}", []).append(megabytes / (time.perf_counter() - started))
            started = time.perf_counter()
            found = sum(len(index.lookup(hashes).files) for hashes in prints[name])
            samples.setdefault(f"lookup {name}", []).append(megabytes / (time.perf_counter() - started))
            samples[f"entries found {name}"] = [found]
        for name, rules in packs.items():
            started = time.perf_counter()
            for data in texts:
                rules.match(data=data)
            samples.setdefault(f"yara {name}", []).append(megabytes / (time.perf_counter() - started))
    return {k: statistics.median(v) for k, v in samples.items()}


def agent_rss(rules_dir: str, sample: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, os.path.dirname(HERE), rules_dir, *sample],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    out = done.stdout.split()
    return {"rss_before_mb": int(out[0]), "rss_mb": int(out[1]), "hwm_mb": int(out[2]), "load_seconds": float(out[4])}


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else "[green]PASS[/]" if ok else "[red]FAIL[/]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples: a few minutes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--files", type=int, help="customer files sampled per language (default 150, quick 20)")
    parser.add_argument("--unrelated", type=int, help="unrelated files per language (default 3000, quick 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--show-misses", type=int, default=0, metavar="N", help="list N misses per figure and N false positives")
    parser.add_argument("--out", default=os.path.join(HERE, ".out"))
    args = parser.parse_args()
    per_language = args.files or (20 if args.quick else 150)
    unrelated_per_language = args.unrelated or (200 if args.quick else 3000)
    console = Console(width=140)
    results: dict = {"quick": args.quick, "seed": args.seed}

    corpora = fpcorpora.load(seed=args.seed)
    table = Table(title="Corpora (bench/.fpcorpus)")
    for col in ("role", "language", "files", "20+ lines", "MB", "packages"):
        table.add_column(col, justify="right" if col in ("files", "20+ lines", "MB") else "left")
    results["corpora"] = []
    for role, lang, n, n20, mb, parts in fpcorpora.summary(corpora):
        table.add_row(role, lang, f"{n:,}", f"{n20:,}", f"{mb:.1f}", parts)
        results["corpora"].append({"role": role, "language": lang, "files": n, "files_20_lines": n20, "mb": mb, "packages": parts})
    console.print(table)

    built = build_indexes(corpora, args.out, console)
    large = built["large"]["index"]

    rng = random.Random(args.seed)
    sample: list[fpcorpora.SourceFile] = []
    for lang in fpcorpora.LANGUAGES:
        candidates = corpora.of("customer", lang, fpcorpora.MIN_LINES)
        rng.shuffle(candidates)
        picked = [f for f in candidates[: per_language * 4] if sum(fpvariants.code_line_flags(read(f.path), lang)) >= fpcorpora.MIN_LINES]
        sample += picked[:per_language]
    pools = line_pools(corpora, args.seed)
    fpvariants.CORPUS_DECLARED.update(declared_by_language(corpora))
    console.print(f"detection: {len(sample)} customer files x {len(fpvariants.VARIANTS)} variants x {len(SIZES)} sizes")
    console.print("(combined: comments removed, functions reordered, renamed, reflowed, in that order)")
    started = time.perf_counter()
    counts, misses, explained, coverage = detection(large, sample, args.seed, pools, args.show_misses)
    results["detection_seconds"] = time.perf_counter() - started

    results["detection"] = [{"variant": v, "size": s, "language": lang, "hits": c[0], "total": c[1], "right_source": c[2]} for (v, s, lang), c in sorted(counts.items(), key=lambda kv: str(kv[0]))]
    for size in SIZES:
        table = Table(title=f"Detected in the 100 MB index: {'whole files' if size == 'whole' else f'{size}-line excerpts'} (files of 20+ lines of code)")
        table.add_column("variant", no_wrap=True)
        for lang in fpcorpora.LANGUAGES:
            table.add_column(lang, justify="right")
        table.add_column("all", justify="right")
        table.add_column("of", justify="right")
        table.add_column("target")
        for variant in fpvariants.VARIANTS:
            cells = [counts.get((variant, size, lang), [0, 0, 0]) for lang in fpcorpora.LANGUAGES]
            hits, total = sum(c[0] for c in cells), sum(c[1] for c in cells)
            target = next((t for _, v, s, t in TARGETS if v == variant and s == size), None)
            worst = min((c[0] / c[1] for c in cells if c[1]), default=0)
            mark = f">= {target:.0%} {verdict(worst >= target)}" if target else ""
            table.add_row(variant, *(pct(c[0], c[1]) for c in cells), pct(hits, total), f"{total:,}", mark)
        console.print(table)

    table = Table(title=f"Why copies were missed (min_tokens {large.min_tokens}, k {large.k}, w {large.w})")
    for col in ("variant", "size", "missed", f"< {large.min_tokens} tokens", "no fingerprint found", "found only elsewhere", "some found in the original"):
        table.add_column(col, justify="left" if col in ("variant", "size") else "right")
    for variant in fpvariants.VARIANTS:
        for size in SIZES:
            whys = [m[4] for m in misses if m[1] == variant and m[2] == size]
            if not whys:
                continue
            table.add_row(
                variant, str(size), f"{len(whys)}",
                f"{sum(w['tokens'] < large.min_tokens for w in whys)}",
                f"{sum(w['found'] == 0 for w in whys)}",
                f"{sum(w['found'] > 0 and w['in_original'] == 0 for w in whys)}",
                f"{sum(w['in_original'] > 0 for w in whys)}",
            )  # fmt: skip
    console.print(table)
    for (variant, size), lines in explained.items():
        print(f"missed, {variant}, {size}{'' if size == 'whole' else '-line excerpts'}:")
        for line in lines:
            print(f"  {line}")

    negatives: list[fpcorpora.SourceFile] = []
    for lang in fpcorpora.LANGUAGES:
        candidates = corpora.of("unrelated", lang, fpcorpora.MIN_LINES)
        negatives += rng.sample(candidates, min(unrelated_per_language, len(candidates)))
    console.print(f"false positives: {len(negatives):,} unrelated files against the 100 MB index")
    started = time.perf_counter()
    fps = false_positives(large, negatives)
    fp_seconds = time.perf_counter() - started
    fp_by_lang = {lang: sum(1 for n, *_ in fps if n in {f.name for f in negatives if f.language == lang}) for lang in fpcorpora.LANGUAGES}
    results["false_positives"] = {
        "files": len(negatives),
        "mb": sum(f.size for f in negatives) / 1e6,
        "count": len(fps),
        "by_language": fp_by_lang,
        "seconds": fp_seconds,
        "examples": [{"file": n, "source": s, "coverage": c, "lines": ln} for n, s, c, ln in fps],
    }

    if args.show_misses:
        for name, source, share, lines in fps[: args.show_misses]:
            print(f"false positive: {name} -> {source} coverage {share:.2f} lines {lines}")

    # speed: tokenizing+fingerprinting, then lookups against 1 MB and 100 MB, beside YARA packs of the same corpora
    customer = corpora.of("customer")
    speed_files = customer if not args.quick else rng.sample(customer, min(800, len(customer)))
    texts = [open(f.path, "rb").read() for f in speed_files]
    results["coverage_median"] = {f"{v} {s} {lang}": statistics.median(c) for (v, s, lang), c in coverage.items()}
    tok_speed = tokenize_speed(large, texts, args.rounds)
    packs = build_packs(corpora, args.out, console, [])
    scan_data = [open(f.path, "rb").read() for f in negatives]
    budget = 8_000_000 if args.quick else 30_000_000
    scan_texts: list[bytes] = []
    for data in scan_data:
        if sum(map(len, scan_texts)) >= budget:
            break
        scan_texts.append(data)
    compiled = {name: yara.compile(filepath=p["path"]) for name, p in packs.items()}
    speeds = scan_speeds({"small": built["small"]["index"], "large": large}, compiled, scan_texts, args.rounds)
    try:
        rss = agent_rss(os.path.dirname(built["large"]["path"]), [f.path for f in negatives[:20]])
    except (RuntimeError, subprocess.SubprocessError) as exc:
        console.print(f"agent RSS not measured: {exc}", highlight=False)
        rss = {"rss_before_mb": 0, "rss_mb": 0, "hwm_mb": 0, "load_seconds": 0.0, "error": str(exc)}
    results["speed"] = {"tokenize_mb_s": tok_speed, "tokenize_mb": sum(map(len, texts)) / 1e6, "scan_mb": sum(map(len, scan_texts)) / 1e6, **speeds}
    results["rss"] = rss
    results["indexes"] = {k: {kk: vv for kk, vv in v.items() if kk != "index"} for k, v in built.items()}
    results["packs"] = {k: {kk: vv for kk, vv in v.items()} for k, v in packs.items()}

    table = Table(title="Fingerprint figures (issue 15)")
    for col in ("figure", "result", "detail", "target", ""):
        table.add_column(col, justify="right" if col == "result" else "left")
    for label, variant, size, target in TARGETS:
        cells = [counts.get((variant, size, lang), [0, 0, 0]) for lang in fpcorpora.LANGUAGES]
        hits, total = sum(c[0] for c in cells), sum(c[1] for c in cells)
        worst_lang, worst = min(((lang, c[0] / c[1]) for lang, c in zip(fpcorpora.LANGUAGES, cells) if c[1]), key=lambda x: x[1], default=("-", 0))
        right = sum(c[2] for c in cells)
        table.add_row(
            label, pct(hits, total), f"{hits:,}/{total:,}; worst {worst_lang} {worst:.1%}; right file {pct(right, hits)} of hits",
            f">= {target:.0%} each language", verdict(worst >= target),
        )  # fmt: skip
    medians = [f"{lang} {statistics.median(coverage[('verbatim', 'whole', lang)]):.0%}" for lang in fpcorpora.LANGUAGES if coverage.get(("verbatim", "whole", lang))]
    table.add_row("share of a found verbatim file covered", "median", ", ".join(medians), "reported", "")
    n_neg = len(negatives)
    table.add_row(
        "false positives, 100 MB index", f"{len(fps)}",
        f"of {n_neg:,} files ({results['false_positives']['mb']:.0f} MB); " + ", ".join(f"{lang} {n}" for lang, n in fp_by_lang.items()),
        "<= 1 per 10,000 files", verdict(len(fps) * 10_000 <= n_neg) if n_neg >= 10_000 or fps else "too few files",
    )  # fmt: skip
    table.add_row("tokenize + fingerprint, 1 core", f"{tok_speed:.1f} MB/s", f"{results['speed']['tokenize_mb']:.0f} MB of customer code", ">= 5 MB/s", verdict(tok_speed >= 5))
    ratio = speeds["fp large"] / speeds["fp small"]
    table.add_row("scan, 1 MB index", f"{speeds['fp small']:.1f} MB/s", f"{results['speed']['scan_mb']:.0f} MB of unrelated files, find()", "", "")
    table.add_row("scan, 100 MB index", f"{speeds['fp large']:.1f} MB/s", f"ratio to 1 MB: {ratio:.2f}", ">= 0.90 of the 1 MB one", verdict(ratio >= 0.9))
    table.add_row(
        "look-ups alone, 1 MB / 100 MB index", f"{speeds['lookup small']:.0f} / {speeds['lookup large']:.0f} MB/s",
        f"ratio {speeds['lookup large'] / speeds['lookup small']:.2f} (fingerprints taken beforehand); entries found"
        f" {speeds['entries found small']:,.0f} / {speeds['entries found large']:,.0f}", "", "",
    )  # fmt: skip
    table.add_row("YARA pack of the 1 MB corpus", f"{speeds['yara small']:.1f} MB/s", f"{packs['small']['strings']:,} strings, raw yara-python", "", "")
    table.add_row("YARA pack of the 100 MB corpus", f"{speeds['yara large']:.1f} MB/s", f"{packs['large']['strings']:,} strings", "", "")
    for name, label in (("small", "1 MB"), ("large", "100 MB")):
        b = built[name]
        table.add_row(
            f"index of {label} ({b['corpus_mb']:.0f} MB, {b['files']:,} files)", f"{b['bytes_per_fingerprint']:.1f} B/fp",
            f"{b['fingerprints']:,} fingerprints, {b['size_bytes'] / 1e6:.1f} MB", "<= 16 bytes", verdict(b["bytes_per_fingerprint"] <= 16),
        )  # fmt: skip
        table.add_row(f"build time, {label} index", f"{b['seconds']:.1f} s", f"baseline {b['baseline_mb']:.0f} MB read", "reported", "")
        table.add_row(f"build time, {label} YARA pack", f"{packs[name]['seconds']:.1f} s", "", "reported", "")
    table.add_row(
        "agent RSS, 100 MB index loaded", f"{rss['rss_mb']} MB", f"peak {rss['hwm_mb']} MB; before loading {rss['rss_before_mb']} MB; load {rss['load_seconds']:.2f} s",
        "<= 150 MB", verdict(rss["hwm_mb"] <= 150),
    )  # fmt: skip
    console.print(table)
    if args.quick:
        console.print(f"(--quick: {per_language} files a language, {n_neg:,} unrelated files; the full run samples more)")

    results["misses"] = [{"language": a, "variant": b, "size": c, "file": d, **e} for a, b, c, d, e in misses[:3000]]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fingerprint.json"), "w") as out:
        json.dump(results, out, indent=1, default=str)
    console.print(f"results in {os.path.join(args.out, 'fingerprint.json')}", highlight=False)


if __name__ == "__main__":
    main()
