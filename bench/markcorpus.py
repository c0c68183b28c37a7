"""Real documents and code for the marks bench, built from what this machine carries (bench/.out/marks/corpus).

Prose comes from the licences in /usr/share/common-licenses, package READMEs and Markdown files
under /usr/share/doc and npm's own modules, and man pages rendered with ``man -P cat`` in English,
German, French, Spanish, Polish and Russian (Cyrillic text is where a homoglyph reader could see
frames that are not there). It becomes:

- docx (python-docx): a heading, paragraphs split into runs of plain, bold and italic text, as a
  word processor leaves them; some with a small table;
- pptx (python-pptx): a title slide and slides of bullet points;
- pdf: docx files printed by LibreOffice (``--convert-to pdf``), as most PDFs are made;
- txt and md: the text as it is (md: real Markdown files);
- xlsx (openpyxl): tables from installed data (packages and their descriptions, man page
  summaries, services, time zones, countries) with a header row, some columns of prose; two in
  three saved again by LibreOffice (shared strings, as Excel and LibreOffice write them; openpyxl
  writes each cell's string inline).

Code is the Python standard library, C headers and examples under /usr/include and
/usr/share/doc, npm's JavaScript, and Java and Go fetched with bench/fpcorpora (cordova-android
from npm, gorilla/mux from Debian). Every choice is seeded, so a run with the same seed builds the
same corpus.
"""

from __future__ import annotations

import csv
import functools
import glob
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fpcorpora  # noqa: E402

MIN_CHARS = 1_200
MAX_CHARS = 40_000
CODE_EXTENSIONS = {".py": "python", ".c": "c", ".h": "c", ".js": "javascript", ".java": "java", ".go": "go"}


@dataclass(frozen=True)
class Item:
    """One corpus file: ``format`` is the mark format (docx xlsx pptx pdf text markdown code); ``language``
    the human or programming language; ``source`` where its text came from."""

    path: str
    format: str
    language: str
    source: str


@dataclass(frozen=True)
class Prose:
    text: str
    language: str
    source: str


# ---------------------------------------------------------------------------- sources


def _read(path: str) -> str | None:
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def _clip(text: str, rng: random.Random) -> str | None:
    """Between MIN_CHARS and MAX_CHARS of ``text``, cut at a paragraph; None when too short."""
    text = text.replace("\r\n", "\n").strip()
    if len(text) < MIN_CHARS:
        return None
    if len(text) > MAX_CHARS:
        limit = rng.randint(MAX_CHARS // 4, MAX_CHARS)
        cut = text.rfind("\n\n", 0, limit)
        text = text[: cut if cut > MIN_CHARS else limit]
    return text


def _man(path: str) -> str | None:
    env = {**os.environ, "MANWIDTH": "90", "LANG": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    try:
        done = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "-l", path], capture_output=True, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        return None
    text = done.stdout.decode("utf-8", "replace")
    return re.sub(r".\x08", "", text)


def prose(rng: random.Random) -> Iterator[Prose]:
    """Every usable prose text, in a seeded order (licences, READMEs, man pages by language)."""
    found: list[tuple[str, str, Callable[[], str | None]]] = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path) and not os.path.islink(path):
            found.append(("en", path, functools.partial(_read, path)))
    for path in sorted(glob.glob("/usr/share/doc/*/README*")):
        if os.path.isfile(path) and not path.endswith((".md", ".md.gz", ".html", ".html.gz")):
            found.append(("en", path, functools.partial(_read, path)))
    for language in ("en", "de", "fr", "es", "pl", "ru"):
        folder = "/usr/share/man/man1" if language == "en" else f"/usr/share/man/{language}/man1"
        pages = sorted(glob.glob(os.path.join(folder, "*.1.gz")))
        rng.shuffle(pages)
        for path in pages[: 60 if language == "en" else 30]:
            found.append((language, path, functools.partial(_man, path)))
    rng.shuffle(found)
    seen: set[int] = set()
    for language, path, load in found:
        text = load()
        if not text:
            continue
        text = _clip(text, rng)
        if text is None or hash(text[:2000]) in seen:
            continue
        seen.add(hash(text[:2000]))
        yield Prose(text, language, path)


def markdown_files(rng: random.Random) -> list[tuple[str, str]]:
    """(path, text) of real Markdown files: /usr/share/doc and npm's modules."""
    paths = sorted(glob.glob("/usr/share/doc/*/*.md") + glob.glob("/usr/share/doc/*/*.md.gz"))
    paths += sorted(glob.glob("/usr/lib/node_modules/npm/node_modules/*/README.md"))
    paths += sorted(glob.glob("/usr/lib/node_modules/npm/docs/content/*/*.md"))
    rng.shuffle(paths)
    out, seen = [], set()
    for path in paths:
        text = _read(path)
        if text and len(text.strip()) >= MIN_CHARS and hash(text) not in seen:
            seen.add(hash(text))
            out.append((path, text if len(text) <= MAX_CHARS * 2 else text[: text.rfind("\n\n", 0, MAX_CHARS * 2)]))
    return out


def tables(rng: random.Random) -> Iterator[tuple[str, list[list[str]]]]:
    """(source, rows with a header) of installed data, cut into tables of 30 to 150 rows."""
    sources: list[tuple[str, list[list[str]]]] = []
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Section}\t${Installed-Size}\t${Maintainer}\t${binary:Summary}\n"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in done.stdout.splitlines() if line.count("\t") == 5]
    sources.append(("dpkg-query", [["Package", "Version", "Section", "Installed size (KB)", "Maintainer", "Description"], *rows]))
    done = subprocess.run(["apropos", "-l", "-s", "1,5,8", "."], capture_output=True, text=True)
    rows = []
    for line in done.stdout.splitlines():
        m = re.match(r"(\S+) \((\w+)\)\s+- (.+)", line)
        if m and not m.group(1).startswith("gcloud"):  # thousands of generated Google Cloud SDK pages
            rows.append([m.group(1), m.group(2), m.group(3)])
    sources.append(("apropos", [["Command", "Section", "Summary"], *rows]))
    with open("/etc/services") as f:
        rows = []
        for line in f:
            m = re.match(r"(\S+)\s+(\d+)/(\w+)\s*([^#]*)#?\s*(.*)", line)
            if m:
                rows.append([m.group(1), m.group(2), m.group(3), m.group(4).strip(), m.group(5).strip()])
    sources.append(("/etc/services", [["Service", "Port", "Protocol", "Aliases", "Comment"], *rows]))
    with open("/usr/share/zoneinfo/zone1970.tab") as f:
        rows = [line.rstrip("\n").split("\t") + [""] * 3 for line in f if not line.startswith("#")]
    sources.append(("zone1970.tab", [["Countries", "Coordinates", "Time zone", "Comments"], *[r[:4] for r in rows]]))
    countries = json.load(open("/usr/share/iso-codes/json/iso_3166-1.json"))["3166-1"]
    rows = [[c["alpha_2"], c["alpha_3"], c["numeric"], c["name"], c.get("official_name", "")] for c in countries]
    sources.append(("iso_3166-1", [["Alpha-2", "Alpha-3", "Numeric", "Name", "Official name"], *rows]))
    for path in ("/usr/share/distro-info/debian.csv", "/usr/share/distro-info/ubuntu.csv"):
        sources.append((path, list(csv.reader(open(path)))))
    cut: list[list[tuple[str, list[list[str]]]]] = []
    for source, rows in sources:
        header, body = rows[0], rows[1:]
        pieces, at = [], 0
        while at < len(body):
            size = rng.randint(30, 150)
            pieces.append((source, [header, *body[at : at + size]]))
            at += size
        rng.shuffle(pieces)
        cut.append(pieces)
    while any(cut):  # one table of each source in turn
        for pieces in cut:
            if pieces:
                yield pieces.pop()


def code_files(rng: random.Random) -> dict[str, list[str]]:
    """Paths of code files per language (20 to 2,000 lines, UTF-8, not minified)."""
    found: dict[str, list[str]] = {lang: [] for lang in ("python", "c", "javascript", "java", "go")}
    candidates = glob.glob("/usr/lib/python3.11/*.py") + glob.glob("/usr/lib/python3.11/*/*.py")
    candidates += glob.glob("/usr/include/*.h") + glob.glob("/usr/include/*/*.h") + glob.glob("/usr/share/doc/*/examples/*.c")
    candidates += glob.glob("/usr/lib/node_modules/npm/node_modules/*/lib/*.js") + glob.glob("/usr/lib/node_modules/npm/lib/**/*.js", recursive=True)
    for package, sub in ((fpcorpora._npm("cordova-android@12.0.1"), "package/framework/src"), (fpcorpora._apt("golang-github-gorilla-mux-dev"), fpcorpora.GOCODE)):
        try:
            root = fpcorpora.fetch(package)
        except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
            print(f"[markcorpus] {package.spec} not fetched: {exc}", file=sys.stderr)
            continue
        candidates += [p for p in glob.glob(os.path.join(root, sub, "**", "*"), recursive=True) if p.endswith((".java", ".go"))]
    for path in sorted(set(candidates)):
        language = CODE_EXTENSIONS.get(os.path.splitext(path)[1])
        lines = fpcorpora._usable(path) if language else None
        if language and lines is not None and 20 <= lines <= 2_000:
            found[language].append(path)
    for paths in found.values():
        rng.shuffle(paths)
    return found


# ---------------------------------------------------------------------------- writers


def paragraphs(text: str) -> list[str]:
    """Paragraphs of ``text``: blank-line separated, lines of one paragraph joined (man pages wrap)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines:
            out.append(" ".join(lines))
    return out


def write_docx(text: str, path: str, rng: random.Random) -> None:
    import docx

    document = docx.Document()
    paras = paragraphs(text)
    document.add_heading(paras[0][:120], level=1)
    for n, para in enumerate(paras[1:]):
        if len(para) < 60 and rng.random() < 0.5:
            document.add_heading(para, level=2)
            continue
        p = document.add_paragraph()
        words = para.split(" ")
        at = 0
        while at < len(words):  # runs of a few words to a sentence, some bold or italic
            size = rng.randint(3, 40)
            run = p.add_run(" ".join(words[at : at + size]) + (" " if at + size < len(words) else ""))
            style = rng.random()
            run.bold = style < 0.08
            run.italic = 0.08 <= style < 0.14
            at += size
        if n == 3 and rng.random() < 0.3:
            table = document.add_table(rows=3, cols=2)
            for r in range(3):
                for c in range(2):
                    table.cell(r, c).text = " ".join(rng.sample(words, min(3, len(words))))
    document.core_properties.author = rng.choice(["J. Smith", "Maria Garcia", "Li Wei", "A. Novak"])
    document.core_properties.title = paras[0][:60]
    document.save(path)


def write_pptx(text: str, path: str, rng: random.Random) -> None:
    import pptx
    from pptx.util import Pt

    deck = pptx.Presentation()
    paras = paragraphs(text)
    title = deck.slides.add_slide(deck.slide_layouts[0])
    title.shapes.title.text = paras[0][:90]
    title.placeholders[1].text = rng.choice(["Internal briefing", "Quarterly review", "Engineering notes", "Partner update"])
    at = 1
    while at < len(paras) and len(deck.slides) < 25:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        chunk = paras[at : at + rng.randint(2, 4)]
        at += len(chunk)
        slide.shapes.title.text = " ".join(chunk[0].split()[:6])
        body = slide.placeholders[1].text_frame
        for i, para in enumerate(chunk):  # what fits on a slide at 18 points: no text runs off it
            bullet = body.paragraphs[0] if i == 0 else body.add_paragraph()
            cut = para if len(para) <= 160 else para[: para.rfind(" ", 0, 160)]
            run = bullet.add_run()
            run.text = cut
            run.font.size = Pt(18)
    deck.save(path)


def write_xlsx(rows: list[list[str]], path: str, title: str) -> None:
    import openpyxl  # type: ignore[import-untyped]

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title[:30]
    for row in rows:
        sheet.append([int(v) if v.isdigit() and len(v) < 10 else v for v in row])
    book.save(path)


def office(argv: list[str], files: list[str], outdir: str, *, timeout: int = 1800) -> None:
    """One LibreOffice run over ``files`` with its own profile (parallel runs must not share one)."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="lo-") as profile:
        subprocess.run(
            ["libreoffice", f"-env:UserInstallation=file://{profile}", "--headless", *argv, "--outdir", outdir, *files],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        )  # fmt: skip


def office_parallel(argv: list[str], files: list[str], outdir: str, workers: int = 2) -> None:
    """``office`` over ``files`` in ``workers`` LibreOffice processes at once."""
    import concurrent.futures

    chunks = [files[i::workers] for i in range(workers)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda chunk: office(argv, chunk, outdir), chunks))


# ---------------------------------------------------------------------------- the corpus

COUNTS = {"docx": 80, "pdf": 60, "pptx": 40, "xlsx": 40, "text": 50, "markdown": 50, "python": 40, "c": 25, "javascript": 25, "java": 15, "go": 15}


def build(root: str, *, quick: bool, seed: int) -> list[Item]:
    """The corpus under ``root`` (built once per seed and size; a listing beside it says what is there)."""
    listing = os.path.join(root, "corpus.json")
    if os.path.exists(listing):
        return [Item(**row) for row in json.load(open(listing))]
    scale = 1 / 6 if quick else 1.0
    counts = {k: max(3, round(v * scale)) for k, v in COUNTS.items()}
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    items: list[Item] = []
    texts = prose(rng)
    pdf_sources: list[tuple[str, Prose]] = []
    for fmt, ext in (("docx", "docx"), ("pptx", "pptx"), ("text", "txt"), ("pdf", "docx")):
        for n in range(counts[fmt]):
            p = next(texts, None)
            if p is None:
                break
            name = f"{fmt}-{n:03d}-{p.language}-{_slug(p.source)}.{ext}"
            path = os.path.join(root, name)
            if fmt == "pdf":  # printed from a docx, as most PDFs are made
                path = os.path.join(root, "pdfsrc", name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
            if ext == "docx":
                write_docx(p.text, path, rng)
            elif ext == "pptx":
                write_pptx(p.text, path, rng)
            else:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(p.text + "\n")
            if fmt == "pdf":
                pdf_sources.append((path, p))
            else:
                items.append(Item(path, fmt, p.language, p.source))
    if pdf_sources:
        office_parallel(["--convert-to", "pdf"], [s for s, _ in pdf_sources], root)
        for src, p in pdf_sources:
            pdf = os.path.join(root, os.path.basename(src)[: -len(".docx")] + ".pdf")
            if os.path.exists(pdf):
                items.append(Item(pdf, "pdf", p.language, p.source))
    for n, (source, text) in enumerate(markdown_files(rng)[: counts["markdown"]]):
        path = os.path.join(root, f"markdown-{n:03d}-{_slug(source)}.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        items.append(Item(path, "markdown", "en", source))
    resave: list[str] = []
    for n, (source, rows) in enumerate(tables(rng)):
        if n >= counts["xlsx"]:
            break
        name = f"xlsx-{n:03d}-{_slug(source)}.xlsx"
        path = os.path.join(root, name)
        if n % 3:
            os.makedirs(os.path.join(root, "xlsxsrc"), exist_ok=True)
            resave.append(os.path.join(root, "xlsxsrc", name))
        write_xlsx(rows, resave[-1] if n % 3 else path, _slug(source))
        items.append(Item(path, "xlsx", "en", source))
    office_parallel(["--convert-to", "xlsx:Calc MS Excel 2007 XML"], resave, root)
    items = [i for i in items if os.path.exists(i.path)]
    for language, paths in code_files(rng).items():
        for n, src in enumerate(paths[: counts[language]]):
            path = os.path.join(root, f"code-{language}-{n:03d}-{os.path.basename(src)}")
            with open(src, "rb") as f, open(path, "wb") as out:
                out.write(f.read())
            items.append(Item(path, "code", language, src))
    with open(listing, "w") as f:
        json.dump([item.__dict__ for item in items], f, indent=1)
    return items


def _slug(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".gz", ".md", ".1", ".csv", ".json", ".tab"):
        base = base.removesuffix(suffix)
    if base.startswith("README") or base in ("CONTRIBUTING", "NEWS"):
        base = os.path.basename(os.path.dirname(path)) + "-" + base
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:40]


def summary(items: list[Item]) -> list[tuple[str, str, int, float]]:
    """Rows ``(format, languages, files, MB)``."""
    rows = []
    for fmt in ("docx", "xlsx", "pptx", "pdf", "text", "markdown", "code"):
        of = [i for i in items if i.format == fmt]
        if of:
            languages = sorted({i.language for i in of})
            counts = ", ".join(f"{lang} {sum(1 for i in of if i.language == lang)}" for lang in languages)
            rows.append((fmt, counts, len(of), sum(os.path.getsize(i.path) for i in of) / 1e6))
    return rows


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, ".out", "marks", "corpus-quick")
    built = build(out, quick="quick" in out, seed=1)
    for row in summary(built):
        print(*row, sep="\t")
