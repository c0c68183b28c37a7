"""Marks in PDF files, and reading them back.

A PDF's visible text cannot be rewritten safely (its fonts may lack the look-alike glyphs, its
text may be split into positioned fragments), so a marked PDF carries the DLPM1 token:

- ``property``: the Info dictionary entry ``/DLPMark`` and, when the file has XMP metadata, a
  ``dlp:mark`` element in it. Lost to metadata stripping with a tool that rewrites the file; after
  ``exiftool -all=`` (which appends an update and leaves the earlier revision in the file) a raw scan
  of the bytes still finds it.
- ``token``: an invisible text line (render mode 3, like an OCR layer) at the bottom of every page.
  ``pdftotext``, pypdf and a viewer's select-all copy extract it; it survives metadata stripping,
  and printing to PDF again when the printer keeps text. Its stream is compressed, so the raw scan
  above never mistakes it for metadata.
"""

from __future__ import annotations

import logging
import re
import time
from io import BytesIO
from typing import TYPE_CHECKING, Any

from agent.marks import text as textmarks
from agent.marks.bounds import MAX_PDF_PAGES, PDF_SECONDS, WATERMARK_CARRIERS, AlreadyMarked, CorruptDocument, Encrypted, TooLarge, check_size
from agent.marks.payload import PROPERTY, TOKEN, Found, as_property, read_tokens, token

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader, PdfWriter
    from pypdf.generic import DictionaryObject, IndirectObject, PdfObject

logging.getLogger("pypdf").setLevel(logging.ERROR)

INFO_KEY = "/DLPMark"
FONT_NAME = "/DLPMark"
XMP_NS = "http://ns.dlp-agent.invalid/mark/1.0/"
_RAW_TOKEN = re.compile(rb"DLPM1-[A-Z2-7]{13}")


def mark(data: bytes, payload: bytes) -> bytes:
    """A marked copy of a PDF.

    Raises:
        Encrypted: the PDF needs a password (even one that opens with the empty password: rewriting
            it would drop its protection).
        CorruptDocument, TooLarge: pypdf cannot read it, or it is past the page or time bounds.
    """
    from pypdf import PdfReader, PdfWriter  # lazily: most callers never meet a PDF

    check_size(data)
    deadline = time.monotonic() + PDF_SECONDS
    value = token(payload)
    try:
        reader = PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise Encrypted("the PDF is encrypted")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise TooLarge(f"PDF of {len(reader.pages)} pages (more than {MAX_PDF_PAGES})")
        if _marked_already(reader):
            raise AlreadyMarked("the PDF already carries a mark: trace it, or mark the original")
        writer = PdfWriter(clone_from=reader)
        writer.pdf_header = reader.pdf_header  # pypdf would write 1.3 whatever features the file uses
        font = writer._add_object(_font())
        for page in writer.pages:
            if time.monotonic() > deadline:
                raise TooLarge(f"marking the PDF took longer than {PDF_SECONDS:g}s")
            _add_text_layer(writer, page, font, value)
        writer.add_metadata({INFO_KEY: value})
        _mark_xmp(writer, value)
        out = BytesIO()
        writer.write(out)
    except (Encrypted, TooLarge, AlreadyMarked):
        raise
    except Exception as exc:  # pypdf raises many types on hostile input; all mean "cannot read"
        raise CorruptDocument(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc
    return out.getvalue()


def _marked_already(reader: PdfReader) -> bool:
    """Our metadata, our text layer's font, or a watermark in the first pages' text (a printed marked document)."""
    if read_tokens(_metadata_text(reader)):
        return True
    for page in reader.pages[:3]:
        resources: Any = _inherited(page, "/Resources") or {}
        fonts = resources.get("/Font")
        if fonts is not None and FONT_NAME in fonts.get_object():
            return True
        text = page.extract_text() or ""
        if textmarks.might_carry(text.encode("utf-8", errors="replace")):
            if any(item.carrier in WATERMARK_CARRIERS for item in textmarks.read_text(text)):
                return True
    return False


def _font() -> DictionaryObject:
    from pypdf.generic import DictionaryObject, NameObject

    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )


def _add_text_layer(writer: PdfWriter, page: PageObject, font: IndirectObject, value: str) -> None:
    """Append an invisible line holding ``value`` to ``page``, inside its crop box.

    The page's own content is wrapped in q/Q so whatever graphics state it leaves behind does not
    move the line; resources are copied, not edited, because pages often share one dictionary.
    """
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, IndirectObject, NameObject

    box = page.cropbox
    x, y = float(box.left) + 2, float(box.bottom) + 2
    line = f"q BT 3 Tr {FONT_NAME} 2 Tf 1 0 0 1 {x:.2f} {y:.2f} Tm ({value}) Tj ET Q\n".encode("ascii")
    resources = _inherited(page, "/Resources")
    copied = DictionaryObject(resources.items() if resources is not None else ())
    fonts = copied.get("/Font")
    fonts_copy = DictionaryObject(fonts.get_object().items() if fonts is not None else ())
    fonts_copy[NameObject(FONT_NAME)] = font
    copied[NameObject("/Font")] = fonts_copy
    page[NameObject("/Resources")] = copied

    def stream(body: bytes) -> IndirectObject:
        raw = DecodedStreamObject()
        raw.set_data(body)
        return writer._add_object(raw.flate_encode())

    contents = page.get("/Contents")
    existing: list[object] = []
    if contents is not None:
        target = contents.get_object()
        if isinstance(target, ArrayObject):
            existing = list(target)
        else:
            existing = [contents if isinstance(contents, IndirectObject) else writer._add_object(target)]
    page[NameObject("/Contents")] = ArrayObject([stream(b"q\n"), *existing, stream(b"\nQ\n" + line)])


def _inherited(page: PdfObject, key: str) -> DictionaryObject | None:
    """A page attribute, looked up through its /Parent chain as the PDF spec says (bounded)."""
    node: Any = page
    for _ in range(64):
        if node is None:
            return None
        node = node.get_object()
        value = node.get(key)
        if value is not None:
            return value.get_object()
        node = node.get("/Parent")
    return None


def _mark_xmp(writer: PdfWriter, value: str) -> None:
    """Add the token to the XMP packet when the PDF has one (a file without XMP gets none)."""
    root = writer._root_object
    metadata = root.get("/Metadata")
    if metadata is None:
        return
    stream = metadata.get_object()
    packet = stream.get_data()
    if b"</rdf:RDF>" not in packet:
        return
    element = (f'<rdf:Description rdf:about="" xmlns:dlp="{XMP_NS}"><dlp:mark>{value}</dlp:mark></rdf:Description>').encode()
    stream.set_data(packet.replace(b"</rdf:RDF>", element + b"</rdf:RDF>", 1))


def read(data: bytes) -> list[Found]:
    """Every carrier in a PDF (unmerged): metadata, page text, and tokens left in earlier revisions.

    A PDF that needs a password yields nothing; a corrupt one yields what was read before the
    damage. Reading stops at MAX_PDF_PAGES pages or PDF_SECONDS.
    """
    from pypdf import PdfReader

    check_size(data)
    deadline = time.monotonic() + PDF_SECONDS
    found: list[Found] = []
    pages: list[str] = []
    try:
        reader = PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return _raw_tokens(data, found)
        found += as_property(read_tokens(_metadata_text(reader)))
        for number, page in enumerate(reader.pages):
            if number >= MAX_PDF_PAGES or time.monotonic() > deadline:
                break
            pages.append(page.extract_text() or "")
    except Exception:  # pypdf raises many types on hostile input; keep what was read
        logging.getLogger(__name__).debug("PDF read stopped", exc_info=True)
    # The pages as one text: a frame runs on across a page break, and a slide or a short page
    # rarely holds a whole one (printed decks: 22% of them traced page by page, 95% as one text).
    text = "\n".join(pages)
    if textmarks.might_carry(text.encode("utf-8", errors="replace")):
        found += textmarks.read_text(text)
    return _raw_tokens(data, found)


def _metadata_text(reader: PdfReader) -> str:
    parts: list[str] = []
    info = reader.metadata
    if info:
        parts += [str(value) for value in info.values()]
    root: Any = reader.trailer["/Root"].get_object()
    metadata = root.get("/Metadata")
    if metadata is not None:
        parts.append(metadata.get_object().get_data().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def _raw_tokens(data: bytes, found: list[Found]) -> list[Found]:
    """Add tokens that only the raw bytes show (an earlier revision's metadata) as ``property``."""
    seen = {item.payload for item in found if item.carrier in (PROPERTY, TOKEN)}
    raw = b"\n".join(_RAW_TOKEN.findall(data)).decode("ascii")
    return found + [item for item in as_property(read_tokens(raw)) if item.payload not in seen]

