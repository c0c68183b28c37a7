"""Public rule sets (issue 21): `dlp-agent scan` against Debian's `yara` with thousands of LOKI-style rules.

Usage: python bench/rulesets.py [--rules DIR] [--rule-count 6000] [--rule-files 700] [--text-mb 60]
                                [--binary-mb 8] [--rounds 3] [--sample 120] [--skip-daemon]

``--rules DIR``: a rule set of your own (signature-base's ``yara/`` folder, say); the files that
compile with both engines are used. Without it a synthetic set of our own is generated: LOKI-style
rules (text, wide, nocase and hex strings, a few regular expressions, ``uint16(0) == 0x5a4d`` and
``filesize`` conditions, conditions on the external variables, the pe and math modules).

Prints, each compared within this run:
1. compile and start-up: `yarac`; `dlp-agent scan` of one small file cold (empty compiled-rules
   cache) and warm; the daemon's start with the set, cold and warm;
2. throughput over a tree: `yara -C compiled -r -p N` (with the external variables defined as LOKI
   defines them; one `yara` process cannot vary them per file) against `dlp-agent scan --jobs N`,
   interleaved rounds, median of per-round ratios (target >= 0.95);
3. LOKI's per-file invocation (`yara -C compiled -d filename=... -d filepath=... file`) on a sample,
   its cost per file and whether its matches agree with ours;
4. what the external variables cost per file inside the scanner (alternating batches with and without).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import corpus  # noqa: E402

from agent.scanning import Scanner, load_rules  # noqa: E402
from agent.scanning.externals import DEFAULTS, FileFacts  # noqa: E402
from agent.spool import Spool, SpoolError  # noqa: E402

PYTHON = sys.executable
AGENT = [PYTHON, "-m", "agent.cli.main"]

# Synthetic rules ----------------------------------------------------------------------------

_FAMILIES = ["APT", "MAL", "HKTL", "SUSP", "WEBSHELL", "EXPL", "CRIME", "PUA"]
_COMMON = [
    "GetProcAddress", "LoadLibraryA", "VirtualAlloc", "CreateRemoteThread", "WriteProcessMemory", "cmd.exe /c ",
    "powershell -nop", "WScript.Shell", "base64_decode(", "eval(gzinflate", "http://", "https://", "User-Agent: ",
    "Mozilla/5.0 (Windows NT", "\\AppData\\Roaming\\", "\\Windows\\Temp\\", "SeDebugPrivilege", "IsDebuggerPresent",
    "InternetOpenUrlA", "URLDownloadToFileA", "ShellExecuteA", "RegSetValueExA", "Software\\Microsoft\\Windows\\CurrentVersion\\Run",
    "DllRegisterServer", "ReflectiveLoader", "mimikatz", "sekurlsa", "Invoke-Expression", "FromBase64String", "System.Reflection",
    "/bin/sh -c", "chmod +x ", "wget http", "curl -s ", "/etc/passwd", "/dev/tcp/", "python -c 'import", "<?php @eval(",
    "$_POST[", "$_REQUEST[", "request.getParameter(", "Runtime.getRuntime().exec(", "ProcessBuilder",
]
_LURE_NAMES = [
    ("svchost.exe", b"MZ"), ("update.ps1", b""), ("shell.php", b"<?php "), ("sudoers", b""), ("id_rsa", b""),
    ("invoice.js", b""), ("report.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"), ("loader.dll", b"MZ"), ("run.sh", b"#!/bin/sh\n"),
    ("cmd.jsp", b"<%"), ("dump.dmp", b"MDMP"), ("tool.elf", b"\x7fELF"), ("archive.rar", b"Rar!\x1a\x07"),
]


def _word(rng: random.Random) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 9)))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _text_string(rng: random.Random) -> str:
    """A string as public rules have them: a path, mutex, command, API name or message, with modifiers."""
    roll = rng.random()
    if roll < 0.3:
        text = rng.choice(_COMMON) + (_word(rng) if rng.random() < 0.7 else "")
    elif roll < 0.5:
        text = f"C:\\Users\\Public\\{_word(rng)}\\{_word(rng)}.{rng.choice(['exe', 'dll', 'dat', 'tmp'])}"
    elif roll < 0.65:
        text = f"Global\\{_word(rng).capitalize()}{rng.randint(10, 9999)}"
    elif roll < 0.8:
        text = f"{_word(rng)}.{_word(rng)}.{rng.choice(['com', 'net', 'org', 'ru', 'cn'])}"
    else:
        text = f"{_word(rng).capitalize()} {_word(rng)} {_word(rng)} %s"
    mods = rng.choice(["ascii", "wide", "ascii wide", "nocase", "ascii wide nocase", "fullword ascii", "ascii"])
    return f'"{_escape(text)}" {mods}'


def _hex_string(rng: random.Random) -> str:
    parts = [f"{rng.randrange(256):02X}" for _ in range(rng.randint(10, 20))]
    if rng.random() < 0.5:
        parts[rng.randrange(4, len(parts) - 2)] = "??"
    if rng.random() < 0.2:
        parts.insert(rng.randrange(5, len(parts) - 3), f"[{rng.randint(1, 3)}-{rng.randint(4, 8)}]")
    return "{ " + " ".join(parts) + " }"


def _regex_string(rng: random.Random) -> str:
    return f"/{_word(rng)}\\.(php|asp|jsp)\\?[a-z]{{2,8}}={_word(rng)}/"


def _condition(rng: random.Random, count: int, pe: bool) -> str:
    n = max(1, count // 2)
    roll = rng.random()
    if pe and roll < 0.5:
        return f"uint16(0) == 0x5a4d and filesize < {rng.choice([200, 500, 2000])}KB and pe.number_of_sections > {rng.randint(2, 5)} and {n} of them"
    if roll < 0.35:
        return f"uint16(0) == 0x5a4d and filesize < {rng.choice([300, 1000, 3000])}KB and {n} of them"
    if roll < 0.45:
        ext = rng.choice([".php", ".jsp", ".asp", ".ps1", ".js", ".vbs"])
        return f'extension == "{ext}" and filesize < 200KB and 1 of them'
    if roll < 0.5:
        name, _ = rng.choice(_LURE_NAMES)
        return f'filename == "{name}" and 1 of them'
    if roll < 0.55:
        return f'(filepath contains "\\\\Temp\\\\" or filepath contains "/tmp/") and filetype == "EXE" and {n} of them'
    if roll < 0.58:
        return f'filetype == "{rng.choice(["EXE", "ZIP", "PDF", "OLE", "ELF", "UNIX SCRIPT"])}" and owner != "" and {n} of them'
    if roll < 0.6:
        return "1 of them and math.entropy(0, filesize) > 7.2 and filesize < 64KB"
    if roll < 0.8:
        return f"1 of ($x*) or {min(count, n + 1)} of them"
    return f"{n} of them"


def write_synthetic_rules(directory: str, *, rules: int, files: int, seed: int = 21) -> list[str]:
    """``rules`` rules over ``files`` files; returns some strings to plant in lure files."""
    rng = random.Random(seed)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    planted: list[str] = []
    per_file = [rules // files + (1 if i < rules % files else 0) for i in range(files)]
    number = 0
    for index, count in enumerate(per_file):
        family = _FAMILIES[index % len(_FAMILIES)]
        pe = rng.random() < 0.25
        lines = ['import "pe"', 'import "math"', ""] if pe else ['import "math"', ""]
        for _ in range(count):
            number += 1
            strings = []
            for s in range(rng.randint(2, 8)):
                prefix = "$x" if s < 2 else "$s"
                kind = rng.random()
                body = _hex_string(rng) if kind < 0.3 else _regex_string(rng) if kind < 0.33 else _text_string(rng)
                strings.append(f"        {prefix}{s} = {body}")
                if body.startswith('"') and "nocase" not in body and "wide" not in body and rng.random() < 0.02:
                    planted.append(json.loads(body[: body.rindex('"') + 1]))
            cond = _condition(rng, len(strings), pe)
            lines += [
                f"rule {family}_{_word(rng).capitalize()}_{number} : T{rng.randint(1000, 1600)} {{",
                "    meta:",
                f'        description = "Detects {_word(rng)} {_word(rng)} (synthetic rule {number})"',
                '        author = "dlp bench"',
                f'        reference = "https://example.invalid/{_word(rng)}"',
                f'        date = "2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"',
                f"        score = {rng.choice([40, 50, 60, 70, 75, 80, 85, 90, 100])}",
                "    strings:",
                *strings,
                "    condition:",
                f"        {cond}",
                "}",
                "",
            ]
        with open(os.path.join(directory, f"{family.lower()}_{index:04d}.yar"), "w") as f:
            f.write("\n".join(lines))
    return planted


def write_lures(root: str, planted: list[str], *, count: int = 300, seed: int = 22) -> None:
    """Files LOKI's rules are about: executables, scripts and configuration files under telling names."""
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        name, magic = _LURE_NAMES[i % len(_LURE_NAMES)]
        folder = os.path.join(root, rng.choice(["Temp", "tmp", "etc", "home/user", "www"]), f"d{i:03d}")
        os.makedirs(folder, exist_ok=True)
        body = bytearray(magic + rng.randbytes(rng.randint(2_000, 60_000)))
        for text in rng.sample(planted, min(len(planted), rng.randint(0, 4))):
            at = rng.randrange(len(magic) + 64, len(body))
            body[at:at] = text.encode()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(bytes(body))


# Running ------------------------------------------------------------------------------------


def timed(argv: list[str], *, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0, 1)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed


def defines(values: dict[str, str]) -> list[str]:
    out = []
    for name, value in values.items():
        out += ["-d", f"{name}={value}"]
    return out


def usable_rules(source: str, work: str) -> tuple[str, list[str], float]:
    """The files of ``source`` that compile with our engine and with Debian's (``yarac``), copied to
    ``work``; the compiled file for `yara -C`; the yarac time."""
    ruleset = load_rules(source, skip_broken=True)
    left_out = [str(e) for e in ruleset.skipped]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    from agent.scanning.rules import rule_files

    files = {ns: path for ns, path in rule_files(source).items() if ns in set(ruleset.namespaces)}
    compiled = os.path.join(work + ".yarc")
    while True:
        argv = ["yarac", "-w", *defines(DEFAULTS), *(f"{ns}:{path}" for ns, path in sorted(files.items())), compiled]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode == 0:
            break
        culprit = next((p for p in files.values() if p in proc.stderr), None)
        if culprit is None:
            raise SystemExit(f"yarac failed: {proc.stderr[-2000:]}")
        left_out.append(f"{culprit}: yara {proc.stderr.strip().splitlines()[0]}")
        files = {ns: p for ns, p in files.items() if p != culprit}
    for path in files.values():
        target = os.path.join(work, os.path.relpath(path, source) if os.path.isdir(source) else os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
    return compiled, left_out, took


def scan_env(cache: str) -> dict[str, str]:
    return dict(os.environ, DLP_AGENT_RULES_CACHE=cache)


def scan_startup(rules: str, tiny: str, work: str, rounds: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for i in range(rounds):
        cache = os.path.join(work, f"startup-cache-{i}")
        shutil.rmtree(cache, ignore_errors=True)
        cold.append(timed([*AGENT, "scan", "--rules", rules, tiny], env=scan_env(cache)))
        warm.append(timed([*AGENT, "scan", "--rules", rules, tiny], env=scan_env(cache)))
    return cold, warm


def daemon_start(rules: str | None, work: str, *, fresh_cache: bool) -> float:
    """Seconds from `dlp-agent run` to its file watching being up, with ``rules`` (None: starter packs)."""
    os.makedirs(work, exist_ok=True)
    watch = os.path.join(work, "watch")
    os.makedirs(watch, exist_ok=True)
    spool = os.path.join(work, "spool.db")
    for leftover in (spool, spool + "-wal", spool + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    if fresh_cache:
        shutil.rmtree(os.path.join(work, "bundle", "compiled"), ignore_errors=True)
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'[files]\nwatch = ["{watch}"]\n[usb]\nenabled = false\n[clipboard]\nenabled = false\n'
            + (f'[rules]\ndir = "{rules}"\n' if rules else "")
            + '[spool]\npath = "spool.db"\n[scan]\nnice = 0\n[egress]\nenabled = false\n'
        )
    with open(os.path.join(work, "agent.log"), "ab") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([*AGENT, "run", "--config", config], stdout=log, stderr=log, cwd=ROOT)
        try:
            while not _watching(spool):
                if proc.poll() is not None:
                    raise SystemExit(f"the agent exited ({proc.returncode}); see {work}/agent.log")
                if time.perf_counter() - start > 600:
                    raise SystemExit("the agent did not start within 600 s")
                time.sleep(0.02)
            took = time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return took


def _watching(spool: str) -> bool:
    try:
        reader = Spool.open_readonly(spool)
    except SpoolError:
        return False
    try:
        return ((reader.get_state("sources") or {}).get("files", {}) or {}).get("state") == "ok"
    finally:
        reader.close()


def warm_pages(files: list[str]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def loki_values(path: str) -> dict[str, str]:
    """The external variables as LOKI passes them for one file (and as our scanner sets them)."""
    with open(path, "rb") as f:
        head = f.read(32)
    return FileFacts(path, os.stat(path).st_uid).values(None, head)


def per_file_yara(compiled: str, sample: list[str]) -> tuple[float, dict[str, set[str]]]:
    """LOKI's way with the yara command: one invocation per file with that file's variables."""
    found: dict[str, set[str]] = {}
    start = time.perf_counter()
    for path in sample:
        values = loki_values(path)
        if any(v.isdigit() or v in ("true", "false") for v in values.values()):
            values = {k: v + " " if v.isdigit() or v in ("true", "false") else v for k, v in values.items()}  # yara -d would make it a number
        proc = subprocess.run(["yara", "-C", "-e", "-w", *defines(values), compiled, path], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"yara failed on {path}: {proc.stderr}")
        found[path] = {line.split(" ", 1)[0] for line in proc.stdout.splitlines() if line}
    return time.perf_counter() - start, found


def ours_on(rules: str, sample: list[str], cache: str) -> dict[str, set[str]]:
    proc = subprocess.run([*AGENT, "scan", "--rules", rules, "--json", *sample], capture_output=True, text=True, env=scan_env(cache))
    if proc.returncode not in (0, 1):
        raise SystemExit(f"dlp-agent scan failed: {proc.stderr[-2000:]}")
    found: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        result = json.loads(line)
        found[result["path"]] = {f"{m['namespace']}:{m['rule']}" for m in result.get("matches", []) if not m.get("member") and m.get("kind", "yara") == "yara"}
    return found


def externals_cost(rules: str, files: list[str], rounds: int = 3) -> tuple[float, float]:
    """Seconds per file scanning with and without setting the external variables, in process. The two
    alternate file by file (in both orders), so the machine's noise falls on both alike."""
    ruleset = load_rules(rules)
    with_vars = Scanner(ruleset)
    without = Scanner(dataclasses.replace(ruleset, uses_externals=False))
    spent = {True: 0.0, False: 0.0}
    for round_no in range(rounds):
        for index, path in enumerate(files):
            first = (index + round_no) % 2 == 0
            for use in (first, not first):
                scanner = with_vars if use else without
                start = time.perf_counter()
                scanner.scan_path(path)
                spent[use] += time.perf_counter() - start
    count = rounds * len(files)
    return spent[True] / count, spent[False] / count


def facts_cost(files: list[str], repeat: int = 20) -> float:
    """Seconds per file to work out the five values (path, owner, name, extension, type)."""
    heads = []
    for path in files:
        with open(path, "rb") as f:
            heads.append((path, os.stat(path).st_uid, f.read(32)))
    start = time.perf_counter()
    for _ in range(repeat):
        for path, uid, head in heads:
            FileFacts(path, uid).values(None, head)
    return (time.perf_counter() - start) / (repeat * len(heads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", help="a rule set of your own (default: a synthetic LOKI-style set)")
    parser.add_argument("--rule-count", type=int, default=6000)
    parser.add_argument("--rule-files", type=int, default=700)
    parser.add_argument("--text-mb", type=int, default=60)
    parser.add_argument("--binary-mb", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=120, help="files scanned LOKI's way, one yara per file")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dlp-bench-rulesets"))
    args = parser.parse_args()
    work = args.work
    os.makedirs(work, exist_ok=True)

    tree = os.path.join(HERE, ".corpus", f"rulesets-tree-{args.text_mb}-{args.binary_mb}")
    files = corpus.make_tree(tree, text_mb=args.text_mb, binary_mb=args.binary_mb)
    if args.rules:
        source, planted = os.path.abspath(args.rules), []
        what = f"rules from {source}"
    else:
        source = os.path.join(work, "synthetic")
        planted = write_synthetic_rules(source, rules=args.rule_count, files=args.rule_files)
        what = f"synthetic LOKI-style set ({args.rule_count} rules in {args.rule_files} files)"
    lures = os.path.join(tree, "lures")
    write_lures(lures, planted or ["cmd.exe /c whoami", "powershell -nop -w hidden"])
    files = corpus.list_files(tree)
    rules, left_out = os.path.join(work, "rules"), []
    compiled, left_out, yarac_s = usable_rules(source, rules)
    ruleset = load_rules(rules)
    total = sum(os.path.getsize(f) for f in files)
    print(f"{what}: {ruleset.rule_count} rules in {len(ruleset.namespaces)} files used; {len(left_out)} file(s) left out")
    for line in left_out[:20]:
        print(f"  left out: {line}")
    print(f"tree: {len(files)} files, {total / 1e6:.0f} MB; load {os.getloadavg()[0]:.2f}; yara {subprocess.run(['yara', '-v'], capture_output=True, text=True).stdout.strip()}")
    print(f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}\n", flush=True)

    # 1. compile and start-up
    tiny = os.path.join(work, "tiny.txt")
    with open(tiny, "w") as f:
        f.write("hello\n")
    yara_src = timed(["yara", "-w", *defines(DEFAULTS), *(os.path.join(rules, n) for n in sorted(os.listdir(rules)) if n.endswith((".yar", ".yara"))), tiny])
    yara_c = timed(["yara", "-C", "-w", *defines(DEFAULTS), compiled, tiny])
    cold, warm = scan_startup(rules, tiny, work, args.rounds)
    print(f"{'start-up (one small file)':<58}{'median s':>10}{'best s':>9}")
    print(f"{'yarac (compile the set)':<58}{yarac_s:>10.2f}{'':>9}")
    print(f"{'yara, rules from source':<58}{yara_src:>10.2f}{'':>9}")
    print(f"{'yara -C (compiled by yarac)':<58}{yara_c:>10.2f}{'':>9}")
    print(f"{'dlp-agent scan, cold (empty compiled-rules cache)':<58}{statistics.median(cold):>10.2f}{min(cold):>9.2f}")
    print(f"{'dlp-agent scan, warm (cache hit)':<58}{statistics.median(warm):>10.2f}{min(warm):>9.2f}")
    starter = timed([*AGENT, "scan", tiny], env=scan_env(os.path.join(work, "startup-cache-starter")))
    print(f"{'dlp-agent scan, starter packs only (for reference)':<58}{starter:>10.2f}{'':>9}")
    if not args.skip_daemon:
        daemon_dir = os.path.join(work, "daemon")
        base = [daemon_start(None, os.path.join(work, "daemon-starter"), fresh_cache=False) for _ in range(2)][-1]
        dcold = [daemon_start(rules, daemon_dir, fresh_cache=True) for _ in range(args.rounds)]
        dwarm = [daemon_start(rules, daemon_dir, fresh_cache=False) for _ in range(args.rounds)]
        print(f"{'daemon start to watching, starter packs (for reference)':<58}{base:>10.2f}{'':>9}")
        print(f"{'daemon start to watching, cold':<58}{statistics.median(dcold):>10.2f}{min(dcold):>9.2f}")
        print(f"{'daemon start to watching, warm':<58}{statistics.median(dwarm):>10.2f}{min(dwarm):>9.2f}")
    print(flush=True)

    # 2. throughput
    cache = os.path.join(work, "throughput-cache")
    timed([*AGENT, "scan", "--rules", rules, tiny], env=scan_env(cache))  # warm the compiled-rules cache
    contenders = {}
    for jobs in (1, 2):
        contenders[f"yara -C -r -p {jobs}"] = lambda j=jobs: timed(["yara", "-C", "-r", "-w", "-p", str(j), *defines(DEFAULTS), compiled, tree])
        contenders[f"dlp-agent scan --json --jobs {jobs}"] = lambda j=jobs: timed(
            [*AGENT, "scan", "--rules", rules, "--json", "--no-progress", "--jobs", str(j), tree], env=scan_env(cache)
        )
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_no in range(args.rounds):
        # Interleaved, and in the reverse order every other round: neither side always goes first.
        order = list(contenders.items())
        for name, run in order if round_no % 2 == 0 else reversed(order):
            warm_pages(files)
            times[name].append(run())
        print(f"round {round_no + 1}: " + ", ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()), flush=True)
    print(f"\n{'throughput':<34}{'median s':>10}{'MB/s':>8}{'vs yara, same jobs':>20}")
    for name, runs in times.items():
        jobs = name[-1]
        peer = times[f"yara -C -r -p {jobs}"]
        ratio = statistics.median(p / t for p, t in zip(peer, runs))
        print(f"{name:<34}{statistics.median(runs):>10.2f}{total / 1e6 / statistics.median(runs):>8.1f}{ratio:>20.2f}")
    print("ratios: medians of per-round ratios; target >= 0.95 for dlp-agent scan at each job count\n", flush=True)

    # 3. LOKI's per-file invocation, and agreement
    rng = random.Random(5)
    lure_files = [f for f in files if f.startswith(lures + os.sep)]
    sample = sorted(rng.sample(lure_files, min(len(lure_files), args.sample * 2 // 3)) + rng.sample(files, min(len(files), args.sample // 3)))
    per_file_s, theirs = per_file_yara(compiled, sample)
    ours = ours_on(rules, sample, cache)
    agree = sum(1 for p in sample if theirs[p] == ours.get(p, set()))
    matched = sum(1 for p in sample if theirs[p])
    print(f"LOKI-style yara per file (-C, -d per file): {per_file_s / len(sample) * 1000:.1f} ms/file over {len(sample)} files;")
    print(f"  matches agree with dlp-agent scan on {agree} of {len(sample)} files ({matched} with matches)")
    for p in sample:
        if theirs[p] != ours.get(p, set()):
            print(f"  differs: {p}: yara {sorted(theirs[p])} ours {sorted(ours.get(p, set()))}")
            break

    # 4. what the variables cost inside the scanner
    small = [f for f in files if os.path.getsize(f) < 64_000][:800]
    with_s, without_s = externals_cost(rules, small)
    print(
        f"\nexternal variables, {len(small)} files < 64 KB in process: {with_s * 1e6:.0f} us/file with, {without_s * 1e6:.0f} without"
        f" ({(with_s / without_s - 1) * 100:+.1f}%); working out the values alone: {facts_cost(small) * 1e6:.1f} us/file"
    )
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
