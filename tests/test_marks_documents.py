"""Marked documents: same visible text, a payload read back, and what survives LibreOffice, pdftotext and exiftool.

Fixtures are made from prose written here and converted by LibreOffice (txt -> docx, csv -> xlsx,
flat ODF presentation -> pptx, docx -> pdf), so the marker meets what an office suite writes.
"""

from __future__ import annotations

import html
import io
import random
import re
import shutil
import subprocess
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.marks import documents, ooxml
from agent.marks import text as textmarks
from agent.marks.bounds import MAX_MEMBERS, CorruptDocument, Encrypted, TooLarge
from agent.marks.homoglyph import CYRILLIC_TO_LATIN
from agent.marks.payload import HOMOGLYPH, PROPERTY, TOKEN, ZERO_WIDTH, Found, Unmarkable, token
from agent.scanning.doctext import xml_to_text

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("libreoffice", "pdftotext", "exiftool")),
    reason="needs libreoffice, pdftotext and exiftool",
)

PAYLOAD = bytes.fromhex("a1b2c3d4e5f6")
OTHER = bytes.fromhex("0f1e2d3c4b5a")
_WORDS = (
    "the report describes how vendors handle customer data during the quarterly review and which controls apply "
    "to every project team when documents leave the office network or are shared with partners outside the company "
    "before any payment schedule is approved by finance"
).split()
_ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060\ufeff]")
_BACK = str.maketrans(CYRILLIC_TO_LATIN)
_PRINTED_TOKEN = re.compile(r" DLPM1-[A-Z2-7]{13}")


def prose(paragraphs: int = 8, seed: int = 4) -> list[str]:
    """Paragraphs of plausible English (six sentences of twelve words each)."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(6):
            words = rng.sample(_WORDS, 12)
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    out[0] += ' Costs for R&D <draft 2> are "quoted" in the annex & the appendix.'
    return out


def visible(value: str) -> str:
    """What a person reads: zero-width characters dropped, look-alikes mapped back to Latin, and a
    docx's closing token gone (printed white at one point: agent/marks/printed.py)."""
    return _PRINTED_TOKEN.sub("", _ZERO_WIDTH.sub("", value).translate(_BACK))


def payloads(found: list[Found]) -> dict[str, set[bytes]]:
    by_carrier: dict[str, set[bytes]] = {}
    for item in found:
        by_carrier.setdefault(item.carrier, set()).add(item.payload)
    return by_carrier


class Office:
    """LibreOffice with a profile of its own, so parallel test runs do not share one."""

    def __init__(self, root: Path):
        self.root = root
        self.profile = (root / "lo-profile").as_uri()
        self.count = 0

    def convert(self, source: Path, to: str, *, infilter: str | None = None) -> Path:
        self.count += 1
        outdir = self.root / f"out{self.count}"
        outdir.mkdir()
        command = ["libreoffice", f"-env:UserInstallation={self.profile}", "--headless"]
        if infilter:
            command.append(f"--infilter={infilter}")
        command += ["--convert-to", to, "--outdir", str(outdir), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        produced = list(outdir.iterdir())
        assert result.returncode == 0 and len(produced) == 1, (result.stdout, result.stderr)
        return produced[0]

    def write(self, name: str, data: bytes | str) -> Path:
        self.count += 1
        folder = self.root / f"in{self.count}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Office:
    return Office(tmp_path_factory.mktemp("office"))


def _fodp(paragraphs: list[str]) -> str:
    pages = ""
    for number in range(0, len(paragraphs), 2):
        body = "".join(f"<text:p>{html.escape(p)}</text:p>" for p in paragraphs[number : number + 2])
        pages += f'<draw:page draw:name="p{number}"><draw:frame svg:x="1cm" svg:y="1cm" svg:width="25cm" svg:height="17cm"><draw:text-box>{body}</draw:text-box></draw:frame></draw:page>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?><office:document '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
        'office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.presentation">'
        f"<office:body><office:presentation>{pages}</office:presentation></office:body></office:document>"
    )


MARKDOWN = """---
title: Vendor handling
---
# Quarterly review of vendor data handling

{p0}

See [the policy](https://intranet.example.com/policy/vendors?id=7 "Policy") and `cfg_reader --verbose` before
you start.

```python title="example"
import os
print(os.environ["PAYMENT_SCHEDULE"])
```

{p1}

    indented code stays exact

{p2}
"""


@pytest.fixture(scope="module")
def originals(office: Office) -> dict[str, tuple[str, bytes]]:
    """(name, bytes) per format, made by LibreOffice where the format is an office one."""
    paragraphs = prose()
    text = "\n".join(paragraphs) + "\n"
    docx = office.convert(office.write("memo.txt", text), "docx", infilter="Text (encoded):UTF8,LF,,,")
    labels = ("approved", "open", "vendor", "process", "export")
    sentences = " ".join(paragraphs).split(". ")[:40]
    rows = ["id,label,amount,note"] + [f'A-{n},{labels[n % len(labels)]}-{n},{n * 13},"{sentence}."' for n, sentence in enumerate(sentences)]
    xlsx = office.convert(office.write("table.csv", "\n".join(rows) + "\n"), "xlsx", infilter="CSV:44,34,76,1")
    pptx = office.convert(office.write("slides.fodp", _fodp(paragraphs[:6])), "pptx")
    pdf = office.convert(docx, "pdf")
    markdown = MARKDOWN.format(p0=paragraphs[0] + " " + paragraphs[1], p1=paragraphs[2], p2=paragraphs[3] + " " + paragraphs[4])
    return {
        "docx": ("memo.docx", docx.read_bytes()),
        "xlsx": ("table.xlsx", xlsx.read_bytes()),
        "pptx": ("slides.pptx", pptx.read_bytes()),
        "pdf": ("memo.pdf", pdf.read_bytes()),
        "text": ("memo.txt", text.encode("utf-8")),
        "markdown": ("notes.md", markdown.encode("utf-8")),
    }


@pytest.fixture(scope="module")
def marked(originals: dict[str, tuple[str, bytes]]) -> dict[str, documents.Marked]:
    return {kind: documents.mark_file(data, name, PAYLOAD) for kind, (name, data) in originals.items()}


EXPECTED = {
    "docx": {PROPERTY, HOMOGLYPH, ZERO_WIDTH, TOKEN},
    "xlsx": {PROPERTY, HOMOGLYPH, ZERO_WIDTH, TOKEN},
    "pptx": {PROPERTY, HOMOGLYPH, ZERO_WIDTH},
    "pdf": {PROPERTY, TOKEN},
    "text": {HOMOGLYPH, ZERO_WIDTH},
    "markdown": {HOMOGLYPH, ZERO_WIDTH},
}
OOXML_TEXT = {"docx": "word/document.xml", "xlsx": "xl/sharedStrings.xml", "pptx": "ppt/slides/slide1.xml"}


def pdftotext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True, check=True, timeout=60).stdout


def _member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return package.read(name)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_marked_copy_reads_the_same_and_carries_the_payload(kind: str, originals: dict[str, tuple[str, bytes]], marked: dict[str, documents.Marked], office: Office) -> None:
    name, original = originals[kind]
    copy = marked[kind]
    assert copy.format == kind and copy.data != original
    assert set(copy.carriers) == EXPECTED[kind]
    found = payloads(documents.read_file(copy.data, name))
    assert {carrier for carrier, values in found.items() if PAYLOAD in values} == EXPECTED[kind]
    assert all(values == {PAYLOAD} for values in found.values())
    if kind in OOXML_TEXT:
        before = xml_to_text(_member(original, OOXML_TEXT[kind])).decode()
        after = xml_to_text(_member(copy.data, OOXML_TEXT[kind])).decode()
        assert after != before and visible(after) == before
        with zipfile.ZipFile(io.BytesIO(original)) as old, zipfile.ZipFile(io.BytesIO(copy.data)) as new:
            assert new.namelist()[: len(old.namelist())] == old.namelist()
            changed = {member for member in old.namelist() if old.read(member) != new.read(member)}
            extra = {"pptx": {f"ppt/slides/slide{n}.xml" for n in (2, 3)}, "xlsx": {"xl/workbook.xml", "xl/worksheets/sheet1.xml"}}.get(kind, set())
            assert changed <= {OOXML_TEXT[kind], "[Content_Types].xml", "_rels/.rels"} | extra
    elif kind == "pdf":
        before = pdftotext(office.write("a.pdf", original))
        after = pdftotext(office.write("b.pdf", copy.data))
        assert token(PAYLOAD) in after
        assert after.replace(token(PAYLOAD), "").split() == before.split()
    else:
        assert visible(copy.data.decode()) == original.decode()


def test_office_libraries_open_the_marked_copies(originals: dict[str, tuple[str, bytes]], marked: dict[str, documents.Marked]) -> None:
    """python-docx, openpyxl and python-pptx (strict readers of the schema) read the same visible text."""
    import docx
    import openpyxl  # type: ignore[import-untyped]
    import pptx

    def docx_text(data: bytes) -> list[str]:
        return [paragraph.text for paragraph in docx.Document(io.BytesIO(data)).paragraphs]

    def xlsx_cells(data: bytes) -> list[object]:
        return [cell for row in openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True) for cell in row]

    def pptx_text(data: bytes) -> list[str]:
        return [shape.text_frame.text for slide in pptx.Presentation(io.BytesIO(data)).slides for shape in slide.shapes if shape.has_text_frame]

    for kind, read in (("docx", docx_text), ("xlsx", xlsx_cells), ("pptx", pptx_text)):
        before, after = read(originals[kind][1]), read(marked[kind].data)
        assert after != before
        assert [visible(v) if isinstance(v, str) else v for v in after] == before, kind
    assert any("R&D <draft 2>" in paragraph for paragraph in docx_text(marked["docx"].data))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_libreoffice_converts_the_marked_copy_to_pdf_and_the_mark_survives(kind: str, originals: dict[str, tuple[str, bytes]], marked: dict[str, documents.Marked], office: Office) -> None:
    name = originals[kind][0].replace(".md", ".txt")  # LibreOffice has no Markdown import: as text
    pdf = office.convert(office.write(name, marked[kind].data), "pdf")
    text = pdftotext(pdf)
    found = payloads(textmarks.read_text(text))
    assert OTHER not in set().union(*found.values())
    if kind == "xlsx":  # a sheet's PDF clips long cells and orders columns its own way: no frame is promised
        assert {"id", "label", "amount", "approved-0"} <= set(visible(text).split())
        return
    assert PAYLOAD in found.get(TOKEN if kind == "pdf" else HOMOGLYPH, set()), found


def test_a_marked_pdf_printed_again_keeps_its_token(marked: dict[str, documents.Marked], office: Office) -> None:
    """pdftotext of the marked PDF, and a new PDF LibreOffice makes from that text, still hold the token."""
    text = pdftotext(office.write("marked.pdf", marked["pdf"].data))
    again = office.convert(office.write("copied.txt", text), "pdf")
    assert payloads(documents.read_file(again.read_bytes()))[TOKEN] == {PAYLOAD}


def _strip_custom_properties(data: bytes) -> bytes:
    """What a metadata scrubber does to OOXML (exiftool cannot write it): custom properties gone."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as old, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename == "docProps/custom.xml":
                continue
            body = old.read(info)
            if info.filename in ("[Content_Types].xml", "_rels/.rels"):
                body = re.sub(rb"<(?:Override|Relationship)[^>]*custom[-.]?(?:properties|xml)[^>]*/>", b"", body)
            new.writestr(info, body)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_office_documents_keep_their_mark_without_properties(kind: str, marked: dict[str, documents.Marked], office: Office) -> None:
    stripped = _strip_custom_properties(marked[kind].data)
    assert ooxml.PROPERTY_NAME.encode() not in _member(stripped, "[Content_Types].xml") + b"".join(_member(stripped, name) for name in ("_rels/.rels",))
    found = payloads(documents.read_file(stripped))
    assert PROPERTY not in found and found[HOMOGLYPH] == {PAYLOAD} and found[ZERO_WIDTH] == {PAYLOAD}
    resaved = office.convert(office.write(f"stripped.{kind}", stripped), kind)  # still a valid document
    assert PAYLOAD in payloads(documents.read_file(resaved.read_bytes()))[HOMOGLYPH]


def test_pdf_keeps_its_token_after_exiftool_strips_metadata(marked: dict[str, documents.Marked], office: Office) -> None:
    source = office.write("marked.pdf", marked["pdf"].data)
    stripped = source.with_name("stripped.pdf")
    subprocess.run(["exiftool", "-q", "-all=", "-o", str(stripped), str(source)], check=True, timeout=60)
    listing = subprocess.run(["exiftool", "-s", str(stripped)], capture_output=True, text=True, check=True).stdout
    assert "DLPMark" not in listing
    found = payloads(documents.read_file(stripped.read_bytes()))
    assert found[TOKEN] == {PAYLOAD}


def test_pdf_rewritten_without_metadata_keeps_its_token(marked: dict[str, documents.Marked]) -> None:
    """A scrubber that rewrites the file (no earlier revision left): only the text layer remains."""
    found = payloads(documents.read_file(_rewrite_pdf(marked["pdf"].data)))
    assert PROPERTY not in found and found[TOKEN] == {PAYLOAD}


def _rewrite_pdf(data: bytes) -> bytes:
    """The pages of a PDF in a new file: no Info, no XMP, no earlier revision."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_docx_to_pdf_to_text_keeps_the_homoglyph_frames(marked: dict[str, documents.Marked], office: Office) -> None:
    pdf = office.convert(office.write("memo.docx", marked["docx"].data), "pdf")
    text = pdftotext(pdf)
    found = [item for item in textmarks.read_text(text) if item.carrier == HOMOGLYPH]
    assert found and {item.payload for item in found} == {PAYLOAD} and found[0].frames >= 2
    assert payloads(documents.read_file(text.encode(), "memo.txt"))[HOMOGLYPH] == {PAYLOAD}


def test_text_copied_into_a_new_document_keeps_the_mark(marked: dict[str, documents.Marked], office: Office) -> None:
    """docx -> plain text (what select-all copy gives) -> a new docx: no property, the text carriers stay."""
    text = office.convert(office.write("memo.docx", marked["docx"].data), "txt:Text (encoded):UTF8")
    again = office.convert(office.write("copy.txt", text.read_bytes()), "docx", infilter="Text (encoded):UTF8,LF,,,")
    found = payloads(documents.read_file(again.read_bytes()))
    assert PROPERTY not in found and found[HOMOGLYPH] == {PAYLOAD}


def test_odf_conversion_keeps_property_and_text_carriers(marked: dict[str, documents.Marked], office: Office) -> None:
    odt = office.convert(office.write("memo.docx", marked["docx"].data), "odt")
    found = payloads(documents.read_file(odt.read_bytes()))
    assert found[PROPERTY] == {PAYLOAD} and found[HOMOGLYPH] == {PAYLOAD}


def test_field_codes_and_deleted_text_stay_exact_and_do_not_break_frames(originals: dict[str, tuple[str, bytes]]) -> None:
    """Text the reader sees but a person does not (field codes, tracked deletions) is left alone and counted alike."""
    field = (
        b'<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> HYPERLINK "https://example.com/x" '
        b'\\o "open the process export report" </w:instrText></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r>'
        b'<w:del w:id="1" w:author="a" w:date="2026-01-01T00:00:00Z"><w:r><w:delText>approved by the vendor office</w:delText></w:r></w:del>'
    )
    xml = _member(originals["docx"][1], "word/document.xml")
    with_fields = re.sub(rb"(<w:p\b[^>]*>(?:<w:pPr>.*?</w:pPr>)?)", lambda m: m.group(1) + field, xml, flags=re.S)
    assert with_fields.count(b"<w:instrText") >= 8
    copy = documents.mark_file(_replace_member(originals["docx"][1], "word/document.xml", with_fields), "memo.docx", PAYLOAD)
    marked_xml = _member(copy.data, "word/document.xml")
    assert marked_xml.count(field) == with_fields.count(field)
    assert HOMOGLYPH in copy.carriers and payloads(documents.read_file(copy.data))[HOMOGLYPH] == {PAYLOAD}


def test_zero_width_characters_already_in_the_text_are_kept(originals: dict[str, tuple[str, bytes]]) -> None:
    """A document that uses ZWNJ itself (Persian, hyphenation hints) is marked around it."""
    xml = _member(originals["docx"][1], "word/document.xml").decode()
    words = xml.split(" the ")
    with_zwnj = " the ".join(words[:3]) + " th\u200ce " + " the ".join(words[3:])
    copy = documents.mark_file(_replace_member(originals["docx"][1], "word/document.xml", with_zwnj.encode()), "memo.docx", PAYLOAD)
    after = xml_to_text(_member(copy.data, "word/document.xml")).decode()
    assert visible(after) == visible(xml_to_text(with_zwnj.encode()).decode())
    assert "th\u200ce" in after and payloads(documents.read_file(copy.data))[HOMOGLYPH] == {PAYLOAD}


def test_runs_with_homoglyphs_are_not_proofed(marked: dict[str, documents.Marked]) -> None:
    xml = _member(marked["docx"].data, "word/document.xml").decode()
    runs = re.findall(r"<w:r[ >].*?</w:r>", xml, re.S)
    swapped = [run for run in runs if re.search("[\u0400-\u04ff]", run)]
    assert swapped and all("<w:noProof/>" in run for run in swapped)
    assert all("<w:noProof/>" not in run for run in runs if run not in swapped and token(PAYLOAD) not in run)
    slide = _member(marked["pptx"].data, "ppt/slides/slide1.xml").decode()
    slide_runs = [run for run in re.findall(r"<a:r>.*?</a:r>", slide, re.S) if re.search("[\u0400-\u04ff]", run)]
    assert slide_runs and all('noProof="1"' in run for run in slide_runs)


def test_spreadsheet_labels_and_numbers_stay_exact(originals: dict[str, tuple[str, bytes]], marked: dict[str, documents.Marked]) -> None:
    before = re.findall(r"<t[^>]*>([^<]*)</t>", _member(originals["xlsx"][1], "xl/sharedStrings.xml").decode())
    after = re.findall(r"<t[^>]*>([^<]*)</t>", _member(marked["xlsx"].data, "xl/sharedStrings.xml").decode())
    assert len(before) == len(after)
    short = [(old, new) for old, new in zip(before, after, strict=True) if len(old.split()) < 3]
    assert short and all(old == new for old, new in short)
    cells = re.compile(rb"<sheetData.*</sheetData>", re.S)
    assert cells.search(_member(originals["xlsx"][1], "xl/worksheets/sheet1.xml")).group(0) == cells.search(_member(marked["xlsx"].data, "xl/worksheets/sheet1.xml")).group(0)


def test_a_spreadsheet_without_prose_keeps_a_hidden_name_when_its_properties_go(office: Office) -> None:
    """Numbers and short labels carry no frame: the hidden workbook name is what stays after stripping."""
    rows = "Region,Q1,Q2,Code\n" + "".join(f"R{n},{n * 7},{n * 9},C-{n}\n" for n in range(30))
    original = office.convert(office.write("figures.csv", rows), "xlsx").read_bytes()
    copy = documents.mark_file(original, "figures.xlsx", PAYLOAD)
    assert set(copy.carriers) == {PROPERTY, TOKEN}
    stripped = _strip_custom_properties(copy.data)
    assert payloads(documents.read_file(stripped)) == {TOKEN: {PAYLOAD}}
    resaved = office.convert(office.write("figures-stripped.xlsx", stripped), "csv").read_text()
    assert resaved.replace("\r\n", "\n") == rows  # the cells are untouched and the file opens


def test_a_printed_document_in_another_script_keeps_its_closing_token(office: Office) -> None:
    """Russian prose has no Latin letters to swap: the white closing run prints and is read back."""
    paragraphs = "\n".join("Счёт сверяется с главной книгой перед ночным закрытием, исключения разбираются утром." for _ in range(12))
    original = office.convert(office.write("russian.txt", paragraphs), "docx").read_bytes()
    copy = documents.mark_file(original, "russian.docx", PAYLOAD)
    assert TOKEN in copy.carriers and HOMOGLYPH not in copy.carriers
    text = pdftotext(office.convert(office.write("russian.docx", copy.data), "pdf"))
    assert payloads(textmarks.read_text(text)) == {TOKEN: {PAYLOAD}}
    assert "".join(_ZERO_WIDTH.sub("", text.replace(token(PAYLOAD), "")).split()) == "".join(paragraphs.split())


def test_a_printed_spreadsheet_keeps_the_token_of_its_footer(office: Office) -> None:
    """Cells print column by column or cut at the page edge; the white one-point footer prints whole."""
    rows = "Region,Q1,Q2,Code\n" + "".join(f"R{n},{n * 7},{n * 9},C-{n}\n" for n in range(30))
    original = office.convert(office.write("printed.csv", rows), "xlsx").read_bytes()
    copy = documents.mark_file(original, "printed.xlsx", PAYLOAD)
    printed = office.convert(office.write("printed.xlsx", copy.data), "pdf")
    text = pdftotext(printed)
    assert "Page 1" in text  # the sheet's own footer still shows its page number
    assert payloads(textmarks.read_text(text)) == {TOKEN: {PAYLOAD}}


def test_inline_spreadsheet_strings_are_marked_and_read() -> None:
    """openpyxl writes each cell's text inline in the sheet, not in shared strings."""
    import openpyxl

    book = openpyxl.Workbook()
    for n in range(30):
        book.active.append([f"{_WORDS[n % 20].title()} {' '.join(_WORDS[n % 7 : n % 7 + 12])}", n])
    buffer = io.BytesIO()
    book.save(buffer)
    copy = documents.mark_file(buffer.getvalue(), "inline.xlsx", PAYLOAD)
    found = payloads(documents.read_file(_strip_custom_properties(copy.data)))
    assert found[HOMOGLYPH] == {PAYLOAD} and found[ZERO_WIDTH] == {PAYLOAD}
    cells = [row for row in openpyxl.load_workbook(io.BytesIO(copy.data)).active.iter_rows(values_only=True)]
    assert [(visible(str(text)), number) for text, number in cells] == [(text, number) for text, number in book.active.iter_rows(values_only=True)]


def test_markdown_code_urls_and_front_matter_stay_exact(marked: dict[str, documents.Marked]) -> None:
    out = marked["markdown"].data.decode()
    for exact in (
        "---\ntitle: Vendor handling\n---\n",
        '(https://intranet.example.com/policy/vendors?id=7 "Policy")',
        "`cfg_reader --verbose`",
        '```python title="example"\nimport os\nprint(os.environ["PAYMENT_SCHEDULE"])\n```\n',
        "    indented code stays exact\n",
    ):
        assert exact in out


def test_existing_custom_properties_are_kept(marked: dict[str, documents.Marked]) -> None:
    client = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
        b'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"><property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="7" '
        b'name="Client"><vt:lpwstr>ACME</vt:lpwstr></property></Properties>'
    )
    source = _strip_text_marks(_replace_member(marked["docx"].data, "docProps/custom.xml", client))
    assert documents.read_file(source) == []
    again = documents.mark_file(source, "memo.docx", OTHER)
    after = _member(again.data, "docProps/custom.xml")
    assert b'name="Client"><vt:lpwstr>ACME</vt:lpwstr>' in after and after.count(b'name="DLPMark"') == 1 and b'pid="8"' in after
    assert _member(again.data, "[Content_Types].xml").count(b"/docProps/custom.xml") == 1
    assert _member(again.data, "_rels/.rels").count(b"custom-properties") == 1
    assert payloads(documents.read_file(again.data)) == {PROPERTY: {OTHER}, HOMOGLYPH: {OTHER}, ZERO_WIDTH: {OTHER}, TOKEN: {OTHER}}


def test_a_marked_file_is_not_marked_again(originals: dict[str, tuple[str, bytes]], marked: dict[str, documents.Marked], office: Office) -> None:
    """A second mark would make the copy's trace name two seats: marking refuses, whichever carrier is left."""
    printed = office.convert(office.write("memo.docx", marked["docx"].data), "pdf").read_bytes()
    copies = {
        **{kind: (originals[kind][0], copy.data) for kind, copy in marked.items()},
        "docx without properties": ("memo.docx", _strip_custom_properties(marked["docx"].data)),
        "pdf printed from a marked docx": ("memo.pdf", printed),
        "pdf without metadata": ("memo.pdf", _rewrite_pdf(marked["pdf"].data)),
    }
    for label, (name, data) in copies.items():
        with pytest.raises(documents.AlreadyMarked):
            documents.mark_file(data, name, OTHER)
        assert label


def _replace_member(data: bytes, name: str, body: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as old, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info, body if info.filename == name else old.read(info))
    return out.getvalue()


def _strip_text_marks(data: bytes) -> bytes:
    xml = _member(data, "word/document.xml").decode()
    return _replace_member(data, "word/document.xml", visible(xml).replace("<w:noProof/>", "").encode())


# Bad input: bounded, clear errors, never a crash.


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as package:
        for name, body in members.items():
            package.writestr(name, body)
    return out.getvalue()


DOCX_SKELETON = {"[Content_Types].xml": b"<Types></Types>", "word/document.xml": b"<w:document><w:body></w:body></w:document>"}


def _duplicate_member_zip() -> bytes:
    """A docx whose document.xml is in the zip twice (zipfile keeps the last, Word the first)."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as package:
        warnings.simplefilter("ignore")
        for name, body in DOCX_SKELETON.items():
            package.writestr(name, body)
        package.writestr("word/document.xml", b"<w:document><w:body><w:p><w:r><w:t>other</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: _zip({**DOCX_SKELETON, **{f"f{n}.xml": b"" for n in range(MAX_MEMBERS)}}), TooLarge),
        (lambda: _zip({**DOCX_SKELETON, "word/bomb.xml": b"\0" * (300 * 1024 * 1024)}), TooLarge),
        (lambda: b"PK\x03\x04" + b"\x00" * 200, CorruptDocument),
        (lambda: b"%PDF-1.7\n" + bytes(range(256)) * 40, CorruptDocument),
        (lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "EncryptionInfo".encode("utf-16-le") + b"\0" * 600, Encrypted),
        (lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, Unmarkable),
        (lambda: bytes(range(256)) * 64, Unmarkable),
        (lambda: _zip({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}), Unmarkable),
        (lambda: b"Too short to mark.", Unmarkable),
        (_duplicate_member_zip, CorruptDocument),
    ],
    ids=["members", "bomb", "corrupt-zip", "corrupt-pdf", "encrypted-office", "legacy-office", "binary", "odf", "short-text", "duplicate-member"],
)
def test_bad_input_is_refused_with_a_clear_error(build: Callable[[], bytes], error: type[Exception]) -> None:
    data = build()
    with pytest.raises(error) as raised:
        documents.mark_file(data, "x.docx" if data.startswith(b"PK") else "x.txt", PAYLOAD)
    assert str(raised.value)
    if error is TooLarge:
        with pytest.raises(TooLarge):
            documents.read_file(data)
    else:
        assert documents.read_file(data) == []


def test_encrypted_zip_members_are_refused() -> None:
    package = _zip(DOCX_SKELETON)
    # Set the encryption flag of every entry (local and central headers), as a password-protected zip has.
    flagged = package.replace(b"PK\x03\x04\x14\x00\x00\x00", b"PK\x03\x04\x14\x00\x01\x00").replace(b"PK\x01\x02\x14\x03\x14\x00\x00\x00", b"PK\x01\x02\x14\x03\x14\x00\x01\x00")
    assert flagged != package
    with pytest.raises(Encrypted):
        documents.mark_file(flagged, "x.docx", PAYLOAD)
    assert documents.read_file(flagged) == []


def test_entities_in_a_document_are_never_expanded(marked: dict[str, documents.Marked]) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        + b"".join(b'<!ENTITY lol%d "' % n + b"&lol%d;" % (n - 1) * 10 + b'">' for n in range(3, 10))
        + b"]><w:document><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
    )
    bomb = _replace_member(_strip_custom_properties(marked["docx"].data), "word/document.xml", laughs)
    assert documents.read_file(bomb) == []
    again = documents.mark_file(bomb, "memo.docx", OTHER)
    assert b"&lol9;" in _member(again.data, "word/document.xml") and again.carriers == (PROPERTY, TOKEN)
    assert payloads(documents.read_file(again.data)) == {PROPERTY: {OTHER}, TOKEN: {OTHER}}


def test_text_in_other_encodings_is_read() -> None:
    text = documents.mark_file(("\n".join(prose(3)) + "\n").encode(), "memo.txt", PAYLOAD).data.decode()
    for encoded in (text.encode("utf-16"), text.encode("utf-16-le"), ("\ufeff" + text).encode("utf-8")):
        assert payloads(documents.read_file(encoded))[HOMOGLYPH] == {PAYLOAD}
    latin = f"Rechnung für Kunden {token(PAYLOAD)} und mehr".encode("latin-1")
    assert payloads(documents.read_file(latin)) == {TOKEN: {PAYLOAD}}
    utf16 = documents.mark_file(("\n".join(prose(3, seed=5)) + "\n").encode("utf-16"), "memo.txt", OTHER).data
    assert utf16.startswith(b"\xff\xfe") and payloads(documents.read_file(utf16))[HOMOGLYPH] == {OTHER}


def test_text_that_mentions_the_pdf_header_is_read_as_text(marked: dict[str, documents.Marked]) -> None:
    body = "Notes on the file format: every PDF starts with %PDF-1.7 and a binary comment line.\n\n" + "\n".join(prose(3)) + "\n"
    copy = documents.mark_file(body.encode(), "notes.txt", PAYLOAD)
    assert payloads(documents.read_file(copy.data, "notes.txt"))[HOMOGLYPH] == {PAYLOAD}
    pdf = marked["pdf"].data
    assert payloads(documents.read_file(b"\xef\xbb\xbf\r\n" + pdf))[TOKEN] == {PAYLOAD}
    assert payloads(documents.read_file(b"junk before the header\n" + pdf))[TOKEN] == {PAYLOAD}


def test_data_formats_and_unknown_zips_are_not_marked() -> None:
    body = ("\n".join(prose(3)) + "\n").encode()
    for name in ("data.json", "table.csv", "page.html", "config.yaml"):
        with pytest.raises(Unmarkable):
            documents.mark_file(body, name, PAYLOAD)
    with pytest.raises(Unmarkable):
        documents.mark_file(_zip({"readme.txt": body}), "archive.zip", PAYLOAD)
    assert documents.read_file(_zip({"readme.txt": body})) == []


def test_files_without_marks_yield_nothing(originals: dict[str, tuple[str, bytes]]) -> None:
    for name, data in originals.values():
        assert documents.read_file(data, name) == []


def test_code_is_marked_through_the_code_marker() -> None:
    import ast

    comments = "\n".join(f"# {paragraph}" for paragraph in prose(4))
    source = f'"""Client for the vendor portal."""\n\nimport os\n\n{comments}\n\n\ndef endpoint() -> str:\n    return os.environ.get("PORTAL_URL", "https://portal.example.com")\n'
    copy = documents.mark_file(source.encode(), "client.py", PAYLOAD)
    assert copy.format == "code" and TOKEN in copy.carriers
    ast.parse(copy.data.decode())
    found = payloads(documents.read_file(copy.data, "client.py"))
    assert {carrier for carrier, values in found.items() if PAYLOAD in values} == set(copy.carriers)
    assert 'return os.environ.get("PORTAL_URL", "https://portal.example.com")' in copy.data.decode()


def test_mangled_documents_never_crash_the_reader_or_the_marker(marked: dict[str, documents.Marked]) -> None:
    """Truncated and bit-flipped copies: read_file returns a list, mark_file a copy or a ValueError."""
    rng = random.Random(18)
    for kind in ("docx", "pptx", "xlsx", "pdf"):
        data = marked[kind].data
        for round_ in range(12):
            mangled = bytearray(data[: rng.randrange(len(data) // 2, len(data))] if round_ % 3 == 0 else data)
            for _ in range(rng.randrange(1, 40)):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            found = documents.read_file(bytes(mangled))
            assert isinstance(found, list) and all(isinstance(item, Found) for item in found)
            try:
                documents.mark_file(bytes(mangled), f"x.{kind}", OTHER)
            except ValueError:
                pass


def test_pdf_with_xmp_gets_the_token_in_its_xmp(originals: dict[str, tuple[str, bytes]], office: Office) -> None:
    """A PDF/A (LibreOffice writes XMP only then): the token goes into the XMP packet as well as Info."""
    from pypdf import PdfReader

    export = 'pdf:writer_pdf_Export:{"SelectPdfVersion":{"type":"long","value":"2"}}'
    pdfa = office.convert(office.write("memo.docx", originals["docx"][1]), export).read_bytes()
    copy = documents.mark_file(pdfa, "memo.pdf", PAYLOAD)
    reader = PdfReader(io.BytesIO(copy.data))
    root: Any = reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data()
    assert xmp.count(token(PAYLOAD).encode()) == 1 and xmp.rstrip().endswith(b'<?xpacket end="w"?>')
    assert reader.metadata is not None and str(reader.metadata["/DLPMark"]) == token(PAYLOAD)
    listing = subprocess.run(["exiftool", "-s", "-XMP:all", "-"], input=copy.data, capture_output=True, check=True).stdout
    assert token(PAYLOAD).encode() in listing
    assert payloads(documents.read_file(copy.data)) == {PROPERTY: {PAYLOAD}, TOKEN: {PAYLOAD}}
