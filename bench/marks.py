"""Watermarks (issue 18): is the right seat traced after what a leaker does to a marked file, and never a wrong one?

Usage: python bench/marks.py [--quick] [--seed 1] [--seats 8] [--via cli|library] [--show-misses N] [--out DIR]

A corpus of real documents and code (bench/markcorpus.py: docx, xlsx, pptx, PDF, text, Markdown;
Python, C, JavaScript, Java, Go) is shared among ``--seats`` seats of one vendor and marked the way an
admin would: ``dlp-server marks apply FILE... --vendor V --seat S --out DIR --json`` against a fresh
collector (``--via library`` calls agent.marks.documents.mark_file and read_file instead, with a
local payload-to-seat map). Every marked copy then goes through the transformations below and
``dlp-server trace --json`` reads the results in batches. A case is *correct* when a mark of the
file's seat is found, *wrong* when a mark of another seat is, *none* when neither is.

Transformations: unchanged; metadata stripped (``exiftool -all=`` and a pypdf rewrite for PDF, the
docProps parts removed from OOXML, which exiftool does not write); text copied into a new document
(LibreOffice's text export of a docx, the cells of an xlsx, the text frames of a pptx, pdftotext of a
PDF, a text file's text, pasted into a new docx or xlsx); converted to PDF by LibreOffice and back to
text with pdftotext; printed to PDF (LibreOffice's PDF itself); a 50-line excerpt (a seeded window of
the text, or of the pdftotext lines of a document); code reformatted (black, clang-format, else
bench/fpvariants.reflow); identifiers renamed (bench/fpvariants.rename); and, to show what it costs,
comments removed. Results go to ``OUT/marks.json``; ``--quick`` builds a corpus of ~90 files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import fpvariants  # noqa: E402
import markcorpus  # noqa: E402

BIN = os.path.join(os.path.dirname(HERE), ".venv", "bin")
VENDOR = "acme-outsourcing"
SEATS = ("anna.kowalski", "ben.okafor", "chen.li", "dara.nguyen", "emil.horvath", "farah.haddad", "gita.rao", "hugo.martin", "ines.silva", "jon.berg")
OFFICE = ("docx", "xlsx", "pptx")
TRANSFORMS = (
    "unchanged",
    "metadata stripped",
    "text copied to a new document",
    "PDF and back to text",
    "PDF and back to text (-layout)",
    "printed to PDF",
    "50-line excerpt",
    "code reformatted",
    "identifiers renamed",
    "comments removed",
)
TARGETS = {"unchanged": 0.99, "metadata stripped": 0.99, "text copied to a new document": 0.90, "PDF and back to text": 0.90}
FORMATS = ("docx", "xlsx", "pptx", "pdf", "text", "markdown", "code")


@dataclass
class MarkedFile:
    item: markcorpus.Item
    seat: str
    path: str  # the marked copy
    size: int
    marked_size: int
    carriers: tuple[str, ...]
    mark_id: str = ""


@dataclass
class Case:
    marked: MarkedFile
    transform: str
    path: str
    result: str = "none"  # correct | wrong | none (wrong wins over correct when both are found)
    carriers: list[str] = field(default_factory=list)
    found: list[dict[str, Any]] = field(default_factory=list)


def seeded(seed: int, *parts: object) -> random.Random:
    return random.Random(zlib.crc32("\0".join(map(str, (seed, *parts))).encode()))


def run(argv: list[str], *, timeout: int = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- marking and tracing backends


class Cli:
    """A fresh collector in a temporary data directory, driven through ``dlp-server``."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.server = os.path.join(BIN, "dlp-server")
        for argv in (["init", "--json"], ["token", "create", "--vendor", VENDOR, "--json"]):
            done = run([self.server, *argv, "--data-dir", data_dir])
            if done.returncode:
                raise RuntimeError(f"dlp-server {' '.join(argv)}: {done.stderr.strip()}")

    def apply(self, files: list[markcorpus.Item], seat: str, out: str) -> dict[str, dict[str, Any]]:
        """``marks apply`` over ``files``; the JSON line of each, by input basename."""
        argv = [self.server, "marks", "apply", *[f.path for f in files], "--vendor", VENDOR, "--seat", seat, "--out", out, "--json", "--data-dir", self.data_dir]
        done = run(argv)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"marks apply: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return {os.path.basename(str(row.get("name") or row.get("path"))): row for row in lines}

    def trace(self, paths: list[str]) -> dict[str, list[dict[str, Any]]]:
        done = run([self.server, "trace", *paths, "--json", "--data-dir", self.data_dir])
        if done.returncode not in (0, 1):
            raise RuntimeError(f"trace: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
        out = {}
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                out[row["path"]] = row.get("marks", [])
        return out


class Library:
    """agent.marks.documents with a local payload-to-seat map: no collector, no ``copy`` carrier."""

    def __init__(self) -> None:
        self.seats: dict[bytes, str] = {}

    def apply(self, files: list[markcorpus.Item], seat: str, out: str) -> dict[str, dict[str, Any]]:
        from agent.marks import documents, payload

        rows: dict[str, dict[str, Any]] = {}
        os.makedirs(out, exist_ok=True)
        for f in files:
            data = open(f.path, "rb").read()
            secret = os.urandom(payload.PAYLOAD_BYTES)
            name = os.path.basename(f.path)
            try:
                marked = documents.mark_file(data, name, secret)
            except Exception as exc:  # noqa: BLE001 (the bench reports what the marker raised and goes on)
                rows[name] = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
                continue
            self.seats[secret] = seat
            with open(os.path.join(out, name), "wb") as o:
                o.write(marked.data)
            rows[name] = {"name": name, "mark_id": secret.hex(), "format": marked.format, "carriers": list(marked.carriers), "size": len(data), "marked_size": len(marked.data)}
        return rows

    def trace(self, paths: list[str]) -> dict[str, list[dict[str, Any]]]:
        from agent.marks import documents

        out: dict[str, list[dict[str, Any]]] = {}
        for path in paths:
            marks: dict[str, dict[str, Any]] = {}
            for found in documents.read_file(open(path, "rb").read(), os.path.basename(path)):
                seat = self.seats.get(found.payload)
                if seat is not None:
                    mark = marks.setdefault(found.payload.hex(), {"mark_id": found.payload.hex(), "seat": seat, "evidence": {"carriers": [], "frames": 0}})
                    mark["evidence"]["carriers"].append(found.carrier)
                    mark["evidence"]["frames"] += found.frames
            out[path] = list(marks.values())
        return out


# ---------------------------------------------------------------------------- transformations


def strip_ooxml(data: bytes) -> bytes:
    """An OOXML file without docProps (core, app and custom properties) and the references to them."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith("docProps/"):
                continue
            body = src.read(info.filename)
            if info.filename in ("[Content_Types].xml", "_rels/.rels"):
                text = re.sub(r"<(Override|Relationship)\b[^>]*docProps/[^>]*/>", "", body.decode("utf-8"))
                body = text.encode("utf-8")
            dst.writestr(info, body)
    return out.getvalue()


def strip_pdf(path: str, dest: str) -> None:
    """``exiftool -all=`` (which only appends a revision), then a pypdf rewrite without Info and XMP."""
    from pypdf import PdfReader, PdfWriter

    tmp = dest + ".exif.pdf"
    shutil.copyfile(path, tmp)
    run(["exiftool", "-q", "-q", "-all:all=", "-overwrite_original", tmp])
    reader = PdfReader(tmp)
    writer = PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    if "/Metadata" in writer._root_object:
        del writer._root_object["/Metadata"]
    writer._info = None
    with open(dest, "wb") as f:
        writer.write(f)
    os.remove(tmp)


def visible_text(path: str, fmt: str) -> str:
    """What select-all and copy gives of an xlsx (cells, tab-separated) or a pptx (text frames)."""
    if fmt == "xlsx":
        import openpyxl  # type: ignore[import-untyped]

        book = openpyxl.load_workbook(path, read_only=True)
        lines = []
        for sheet in book.worksheets:
            for row in sheet.iter_rows(values_only=True):
                lines.append("\t".join("" if v is None else str(v) for v in row))
        return "\n".join(lines)
    import pptx

    lines = []
    for slide in pptx.Presentation(path).slides:
        for shape in slide.shapes:
            if shape.has_text_frame:
                lines += [p.text for p in shape.text_frame.paragraphs]
    return "\n".join(lines)


def new_docx(text: str, path: str) -> None:
    import docx

    document = docx.Document()
    for line in text.split("\n"):
        document.add_paragraph(line.replace("\x0c", ""))
    document.save(path)


def new_xlsx(text: str, path: str) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    for line in text.split("\n"):
        book.active.append(line.split("\t"))
    book.save(path)


def reformat_code(text: str, language: str, name: str, rng: random.Random) -> tuple[str, str]:
    """``(text, tool)``: black for Python, clang-format for C, Java and JavaScript, else fpvariants.reflow."""
    if language == "python":
        try:
            import black

            return black.format_str(text, mode=black.Mode(line_length=100)), "black"
        except Exception:  # noqa: BLE001 (black's parse errors have no common base)
            pass
    elif language in ("c", "java", "javascript") and shutil.which("clang-format"):
        style = rng.choice(["LLVM", "Google", "Mozilla", "WebKit"])
        done = subprocess.run(["clang-format", f"--style={style}", f"--assume-filename={name}"], input=text, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return done.stdout, "clang-format"
    lang = language if language in ("python", "javascript", "java", "c", "go") else "c"
    return fpvariants.reflow(text, lang, rng), "reflow"


def excerpt(text: str, rng: random.Random, size: int = 50) -> str:
    lines = text.split("\n")
    if len(lines) <= size:
        return text
    start = rng.randrange(len(lines) - size + 1)
    return "\n".join(lines[start : start + size]) + "\n"


def write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def pdftotext(path: str, *options: str) -> str:
    done = run(["pdftotext", *options, "-enc", "UTF-8", path, "-"])
    return done.stdout if done.returncode == 0 else ""


def transform_all(marked: list[MarkedFile], root: str, seed: int, console: Console) -> tuple[list[Case], dict[str, int]]:
    """Every transformation of every marked file, written under ``root``."""
    cases: list[Case] = []
    tools: dict[str, int] = {}
    skipped: dict[str, int] = {}
    dirs = {t: os.path.join(root, t.replace(" ", "-")) for t in TRANSFORMS}
    for d in (*dirs.values(), os.path.join(root, "print"), os.path.join(root, "lo-txt"), os.path.join(root, "as-txt")):
        os.makedirs(d, exist_ok=True)

    def unique(m: MarkedFile) -> str:
        return f"{m.seat}__{os.path.basename(m.path)}"

    # LibreOffice: every non-PDF file to PDF (text and code under a .txt name), docx to text
    to_pdf, to_txt = [], []
    for m in marked:
        if m.item.format in OFFICE:
            src = os.path.join(root, "as-txt", unique(m))
            shutil.copyfile(m.path, src)
            to_pdf.append(src)
            if m.item.format == "docx":
                to_txt.append(src)
        elif m.item.format != "pdf":
            src = os.path.join(root, "as-txt", unique(m) + ".txt")
            shutil.copyfile(m.path, src)
            to_pdf.append(src)
    started = time.perf_counter()
    markcorpus.office_parallel(["--convert-to", "pdf"], to_pdf, os.path.join(root, "print"))
    markcorpus.office_parallel(["--convert-to", "txt:Text (encoded):UTF8"], to_txt, os.path.join(root, "lo-txt"))
    console.print(f"LibreOffice: {len(to_pdf)} files to PDF, {len(to_txt)} docx to text in {time.perf_counter() - started:.0f} s", highlight=False)

    for m in marked:
        fmt, name, u = m.item.format, os.path.basename(m.path), unique(m)
        stem = os.path.splitext(u)[0]
        rng = seeded(seed, u)
        data = open(m.path, "rb").read()
        cases.append(Case(m, "unchanged", m.path))
        if fmt in OFFICE:
            dest = os.path.join(dirs["metadata stripped"], u)
            with open(dest, "wb") as f:
                f.write(strip_ooxml(data))
            cases.append(Case(m, "metadata stripped", dest))
        elif fmt == "pdf":
            dest = os.path.join(dirs["metadata stripped"], u)
            strip_pdf(m.path, dest)
            cases.append(Case(m, "metadata stripped", dest))
        printed = m.path if fmt == "pdf" else os.path.join(root, "print", (os.path.splitext(u)[0] if fmt in OFFICE else u) + ".pdf")
        printed_text = pdftotext(printed) if os.path.exists(printed) else None
        if fmt != "pdf" and printed_text is not None:
            cases.append(Case(m, "printed to PDF", printed))
        if printed_text is not None:
            dest = os.path.join(dirs["PDF and back to text"], stem + ".txt")
            write_text(dest, printed_text)
            cases.append(Case(m, "PDF and back to text", dest))
            dest = os.path.join(dirs["PDF and back to text (-layout)"], stem + ".txt")
            write_text(dest, pdftotext(printed, "-layout"))
            cases.append(Case(m, "PDF and back to text (-layout)", dest))
        # text copied into a new document
        copied: str | None = None
        if fmt == "docx":
            lo = os.path.join(root, "lo-txt", stem + ".txt")
            copied = open(lo, encoding="utf-8-sig").read() if os.path.exists(lo) else None
        elif fmt in ("xlsx", "pptx"):
            copied = visible_text(m.path, fmt)
        elif fmt == "pdf":
            copied = printed_text
        elif fmt in ("text", "markdown"):
            copied = data.decode("utf-8")
        if copied is not None:
            dest = os.path.join(dirs["text copied to a new document"], stem + (".xlsx" if fmt == "xlsx" else ".docx"))
            (new_xlsx if fmt == "xlsx" else new_docx)(copied, dest)
            cases.append(Case(m, "text copied to a new document", dest))
        # excerpts: the file's own lines (text, markdown, code) or a document's printed lines
        source = data.decode("utf-8") if fmt in ("text", "markdown", "code") else printed_text
        if source and source.count("\n") > 50:  # a shorter file's "excerpt" would be all of it
            dest = os.path.join(dirs["50-line excerpt"], u if fmt == "code" else stem + ".txt")
            write_text(dest, excerpt(source, rng))
            cases.append(Case(m, "50-line excerpt", dest))
        if fmt == "code":
            text, lang = data.decode("utf-8"), m.item.language
            reformatted, tool = reformat_code(text, lang, name, rng)
            tools[tool] = tools.get(tool, 0) + 1
            for transform, changed in (
                ("code reformatted", reformatted),
                ("identifiers renamed", fpvariants.rename(text, lang, rng)),
                ("comments removed", fpvariants.strip_comments(text, lang)),
            ):
                if changed == text:  # nothing to rename or reformat, no comment: not a case of its own
                    skipped[transform] = skipped.get(transform, 0) + 1
                    continue
                dest = os.path.join(dirs[transform], u)
                write_text(dest, changed)
                cases.append(Case(m, transform, dest))
    tools.update({f"{k}: no change, left out": v for k, v in skipped.items()})
    return cases, tools


# ---------------------------------------------------------------------------- the run


def classify(case: Case, marks: list[dict[str, Any]]) -> None:
    case.found = marks
    seats = {str(mark.get("seat")) for mark in marks}
    if seats - {case.marked.seat}:
        case.result = "wrong"
    elif case.marked.seat in seats:
        case.result = "correct"
    for mark in marks:
        if mark.get("seat") == case.marked.seat:
            case.carriers = sorted(set(mark.get("evidence", {}).get("carriers", [])))


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mark_all(backend: Cli | Library, items: list[markcorpus.Item], seats: tuple[str, ...], seed: int, run_dir: str) -> tuple[list[MarkedFile], list[tuple[markcorpus.Item, str]], float]:
    """Each seat's share of the corpus marked in one call; ``(marked, refused with why, seconds)``."""
    order = sorted(items, key=lambda i: i.path)
    random.Random(seed).shuffle(order)
    marked: list[MarkedFile] = []
    refused: list[tuple[markcorpus.Item, str]] = []
    started = time.perf_counter()
    for n, seat in enumerate(seats):
        files = order[n :: len(seats)]
        rows = backend.apply(files, seat, os.path.join(run_dir, "marked", seat))
        for f in files:
            row = rows.get(os.path.basename(f.path))
            if row is None or row.get("error") or not row.get("mark_id"):
                refused.append((f, str(row.get("error") if row else "no output line")))
                continue
            path = os.path.join(run_dir, "marked", seat, os.path.basename(f.path))
            size, marked_size = int(row.get("size") or os.path.getsize(f.path)), int(row.get("marked_size") or os.path.getsize(path))
            marked.append(MarkedFile(f, seat, path, size, marked_size, tuple(row.get("carriers", ())), str(row["mark_id"])))
    return marked, refused, time.perf_counter() - started


def marking_figures(marked: list[MarkedFile], refused: list[tuple[markcorpus.Item, str]]) -> list[dict[str, Any]]:
    """Per format: carriers written, in-process marking speed (mark_file again, timed), size change."""
    from agent.marks import documents

    seconds: dict[str, float] = {}
    for m in marked:
        data = open(m.item.path, "rb").read()
        started = time.perf_counter()
        try:
            documents.mark_file(data, os.path.basename(m.item.path), os.urandom(6))
        except Exception:  # noqa: BLE001 (counted as refused by apply already)
            continue
        seconds[m.item.format] = seconds.get(m.item.format, 0.0) + time.perf_counter() - started
    rows = []
    for fmt in FORMATS:
        of = [m for m in marked if m.item.format == fmt]
        bad = [r for r in refused if r[0].format == fmt]
        if not of and not bad:
            continue
        changes = [100 * (m.marked_size - m.size) / m.size for m in of]
        secs = seconds.get(fmt) or float("nan")
        written: dict[str, int] = {}
        for m in of:
            for carrier in m.carriers:
                written[carrier] = written.get(carrier, 0) + 1
        rows.append({
            "format": fmt, "files": len(of), "unmarkable": len(bad), "carriers": written, "files_per_s": len(of) / secs,
            "mb_per_s": sum(m.size for m in of) / 1e6 / secs, "size_change_median": statistics.median(changes) if changes else 0.0,
            "size_change_p95": percentile(changes, 0.95), "size_change_max": max(changes, default=0.0),
        })  # fmt: skip
    return rows


def print_marking(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col in ("format", "files", "unmarkable", "carriers written", "in-process files/s", "in-process MB/s", "size change median", "p95", "max"):
        table.add_column(col, justify="left" if col in ("format", "carriers written") else "right")
    for row in rows:
        written = ", ".join(f"{c} {pct(n, row['files'])}" for c, n in sorted(row["carriers"].items(), key=lambda kv: -kv[1]))
        table.add_row(
            row["format"], str(row["files"]), str(row["unmarkable"]), written, f"{row['files_per_s']:.0f}", f"{row['mb_per_s']:.1f}",
            f"{row['size_change_median']:+.1f}%", f"{row['size_change_p95']:+.1f}%", f"{row['size_change_max']:+.1f}%",
        )  # fmt: skip
    console.print(table)


def trace_all(backend: Cli | Library, cases: list[Case], batch: int) -> float:
    """Every case traced (two dlp-server processes at once), classified; the seconds it took."""
    started = time.perf_counter()
    paths = [c.path for c in cases]
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    found: dict[str, list[dict[str, Any]]] = {}
    with concurrent.futures.ThreadPoolExecutor(2 if isinstance(backend, Cli) else 1) as pool:
        for got in pool.map(backend.trace, batches):
            found.update(got)
    for case in cases:
        classify(case, found.get(case.path, []))
    return time.perf_counter() - started


def counted(cases: list[Case]) -> dict[str, int]:
    return {r: sum(1 for c in cases if c.result == r) for r in ("correct", "wrong", "none")} | {"n": len(cases)}


def shares(cases: list[Case], seats: int, marked: int, console: Console) -> dict[str, Any]:
    """The table of correct / wrong / none per transformation, and its figures per format."""
    figures: dict[str, Any] = {}
    table = Table(title=f"Seat traced after each transformation ({seats} seats, {marked} marked files)")
    for col in ("transformation", "n", "correct", "wrong", "none", "target", "carriers in the correct traces"):
        table.add_column(col, justify="left" if col in ("transformation", "target", "carriers in the correct traces") else "right")
    for transform in TRANSFORMS:
        of = [c for c in cases if c.transform == transform]
        if not of:
            continue
        counts = counted(of)
        carriers: dict[str, int] = {}
        for case in of:
            if case.result == "correct":
                for carrier in case.carriers:
                    carriers[carrier] = carriers.get(carrier, 0) + 1
        target = TARGETS.get(transform)
        ok = counts["wrong"] == 0 and (target is None or counts["correct"] >= target * counts["n"])
        verdict = "[green]PASS[/]" if ok else "[red]FAIL[/]"
        table.add_row(
            transform, str(counts["n"]), pct(counts["correct"], counts["n"]), pct(counts["wrong"], counts["n"]), pct(counts["none"], counts["n"]),
            (f">= {target:.0%}, wrong 0: " if target else "wrong 0: ") + verdict,
            ", ".join(f"{k} {pct(v, counts['correct'])}" for k, v in sorted(carriers.items(), key=lambda kv: -kv[1])),
        )  # fmt: skip
        by_format = {fmt: counted(sub) for fmt in FORMATS if (sub := [c for c in of if c.marked.item.format == fmt])}
        by_language = {lang: counted(sub) for lang in ("python", "c", "javascript", "java", "go") if (sub := [c for c in of if c.marked.item.format == "code" and c.marked.item.language == lang])}
        figures[transform] = {**counts, "target": target, "carriers": carriers, "by_format": by_format, "code_by_language": by_language}
    console.print(table)
    unchanged = [c for c in cases if c.transform == "unchanged"]
    by_content = sum(1 for c in unchanged if c.result == "correct" and set(c.carriers) - {"copy"})
    console.print(f"unchanged, by a carrier in the content (not the collector's copy record): {pct(by_content, len(unchanged))}", highlight=False)
    figures.setdefault("unchanged", {})["correct_by_content"] = by_content

    table = Table(title="Correct seat by format (wrong seats in brackets where any)")
    table.add_column("transformation")
    for fmt in FORMATS:
        table.add_column(fmt, justify="right")
    for transform, row in figures.items():
        cells = []
        for fmt in FORMATS:
            cell = row["by_format"].get(fmt)
            cells.append("" if not cell else f"{pct(cell['correct'], cell['n'])} of {cell['n']}" + (f" [red]({cell['wrong']})[/]" if cell["wrong"] else ""))
        table.add_row(transform, *cells)
    console.print(table)

    table = Table(title="Code: correct seat by language")
    table.add_column("transformation")
    languages = ("python", "c", "javascript", "java", "go")
    for lang in languages:
        table.add_column(lang, justify="right")
    for transform, row in figures.items():
        if row["code_by_language"]:
            cells = [f"{pct(c['correct'], c['n'])} of {c['n']}" if (c := row["code_by_language"].get(lang)) else "" for lang in languages]
            table.add_row(transform, *cells)
    console.print(table)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a corpus of ~75 files")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seats", type=int, default=8)
    parser.add_argument("--via", choices=("cli", "library"), default="cli", help="dlp-server marks apply / trace, or agent.marks.documents")
    parser.add_argument("--batch", type=int, default=150, help="files per dlp-server trace")
    parser.add_argument("--show-misses", type=int, default=0, metavar="N", help="list N misses per transformation (wrong seats are always listed)")
    parser.add_argument("--out", default=os.path.join(HERE, ".out"))
    args = parser.parse_args()
    console = Console(width=160)
    command = "python bench/marks.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"command: {command}", highlight=False)
    work = os.path.join(args.out, "marks")
    corpus_dir = os.path.join(work, f"corpus-{'quick' if args.quick else 'full'}-{args.seed}")
    started = time.perf_counter()
    items = markcorpus.build(corpus_dir, quick=args.quick, seed=args.seed)
    console.print(f"corpus: {len(items)} files in {corpus_dir} ({time.perf_counter() - started:.0f} s)", highlight=False)
    table = Table(title="Corpus (bench/markcorpus.py)")
    for col in ("format", "languages", "files", "MB"):
        table.add_column(col, justify="right" if col in ("files", "MB") else "left")
    for fmt, langs, n, mb in markcorpus.summary(items):
        table.add_row(fmt, langs, str(n), f"{mb:.2f}")
    console.print(table)

    run_dir = tempfile.mkdtemp(prefix="run-", dir=work)
    seats = SEATS[: args.seats] if args.seats <= len(SEATS) else tuple(f"seat-{i:02d}" for i in range(args.seats))
    backend: Cli | Library = Cli(os.path.join(run_dir, "collector")) if args.via == "cli" else Library()
    marked, refused, apply_seconds = mark_all(backend, items, seats, args.seed, run_dir)
    in_mb = sum(os.path.getsize(i.path) for i in items) / 1e6
    marking = marking_figures(marked, refused)
    print_marking(console, marking, f"Marking ({'dlp-server marks apply, one call per seat' if args.via == 'cli' else 'documents.mark_file'})")
    console.print(
        f"apply, end to end: {len(marked)} of {len(items)} files ({in_mb:.1f} MB) in {apply_seconds:.1f} s: "
        f"{len(items) / apply_seconds:.1f} files/s, {in_mb / apply_seconds:.2f} MB/s ({len(seats)} calls)",
        highlight=False,
    )
    for f, why in refused[: max(5, args.show_misses)]:
        console.print(f"  unmarkable: {os.path.basename(f.path)}: {why}", highlight=False)

    started = time.perf_counter()
    cases, tools = transform_all(marked, os.path.join(run_dir, "variants"), args.seed, console)
    console.print(f"{len(cases)} cases in {time.perf_counter() - started:.0f} s; code reformatted with {tools}", highlight=False)
    trace_seconds = trace_all(backend, cases, args.batch)
    traced_mb = sum(os.path.getsize(c.path) for c in cases) / 1e6
    console.print(f"trace: {len(cases)} files ({traced_mb:.0f} MB) in {trace_seconds:.0f} s ({len(cases) / trace_seconds:.1f} files/s)", highlight=False)
    figures = shares(cases, len(seats), len(marked), console)

    for transform in TRANSFORMS:
        wrong = [c for c in cases if c.transform == transform and c.result == "wrong"]
        misses = [c for c in cases if c.transform == transform and c.result == "none"][: args.show_misses]
        for case in wrong + misses:
            seen = "; ".join(f"{f.get('seat')} via {','.join(f.get('evidence', {}).get('carriers', []))}" for f in case.found) or "nothing"
            item = case.marked.item
            console.print(f"{case.result}: {transform}: {item.format}/{item.language} {case.path} (seat {case.marked.seat}; found {seen})", highlight=False)
    results = {
        "command": command, "via": args.via, "seed": args.seed, "seats": len(seats), "files": len(items), "marked": len(marked),
        "unmarkable": [{"file": os.path.basename(f.path), "format": f.format, "error": why} for f, why in refused],
        "apply_seconds": apply_seconds, "input_mb": in_mb, "marking": marking, "trace_seconds": trace_seconds, "trace_files": len(cases),
        "code_reformatted_with": tools, "transforms": figures,
        "cases": [
            {"file": os.path.basename(c.marked.item.path), "format": c.marked.item.format, "language": c.marked.item.language, "seat": c.marked.seat,
             "transform": c.transform, "result": c.result, "carriers": c.carriers, "path": c.path,
             "found": [{"seat": f.get("seat"), "mark_id": f.get("mark_id"), "evidence": f.get("evidence")} for f in c.found]}
            for c in cases
        ],
    }  # fmt: skip
    with open(os.path.join(args.out, "marks.json"), "w") as out:
        json.dump(results, out, indent=1, default=str)
    console.print(f"results in {os.path.join(args.out, 'marks.json')}; files in {run_dir}", highlight=False)


if __name__ == "__main__":
    main()
