"""Text out of office documents and PDFs, so rules see words rather than markup.

XML parts are turned into text with regular expressions on purpose: no entity
expansion (no billion-laughs), no recursion, linear time, and corrupt XML still
yields whatever text it holds.
"""

from __future__ import annotations

import html
import logging
import re
from typing import BinaryIO

from agent.scanning.budget import Budget
from agent.scanning.errors import LimitHit
from agent.scanning.results import Status

# Paragraph, line-break and cell ends in WordprocessingML, DrawingML, SpreadsheetML and ODF.
_BREAKS = re.compile(
    rb"</(?:w:p|a:p|text:p|text:h|table:table-cell|si|row)>|<(?:w:br|w:cr|a:br|text:line-break)\b[^>]*/>"
)
_TABS = re.compile(rb"<(?:w:tab|text:tab|text:s)\b[^>]*/>|</c>")
_TAGS = re.compile(rb"<[^>]*>")

logging.getLogger("pypdf").setLevel(logging.ERROR)


def xml_to_text(xml: bytes) -> bytes:
    """The character data of an XML part, one line per paragraph, UTF-8."""
    body = _BREAKS.sub(b"\n", xml)
    body = _TABS.sub(b"\t", body)
    body = _TAGS.sub(b"", body)
    text = html.unescape(body.decode("utf-8", errors="replace"))
    return text.encode("utf-8")


def pdf_text(stream: BinaryIO, budget: Budget) -> tuple[bytes, LimitHit | None]:
    """Text of the pages of a PDF, separated by form feeds.

    Returns:
        The text, and a non-fatal ``too_large`` LimitHit when pages past the
        page limit were left out (the text of those within it is still returned).

    Raises:
        LimitHit: ``encrypted`` when a password is needed, ``unreadable`` when
            the PDF is corrupt, or a fatal limit of the budget.
    """
    import pypdf  # imported lazily: most scans never meet a PDF

    try:
        reader = pypdf.PdfReader(stream, strict=False)
        if reader.is_encrypted and not _decrypts_without_password(reader):
            raise LimitHit(Status.ENCRYPTED, "PDF needs a password", fatal=False)
        pages: list[bytes] = []
        for number, page in enumerate(reader.pages):
            if number >= budget.limits.max_pdf_pages:
                cut = LimitHit(Status.TOO_LARGE, f"more than {budget.limits.max_pdf_pages} PDF pages", fatal=False)
                return b"\f".join(pages), cut
            budget.remaining()
            text = (page.extract_text() or "").encode("utf-8", errors="replace")
            budget.add_bytes(len(text))
            pages.append(text)
        return b"\f".join(pages), None
    except LimitHit:
        raise
    except Exception as exc:  # pypdf raises many types on hostile input; all mean "cannot read"
        raise LimitHit(Status.UNREADABLE, f"corrupt PDF: {type(exc).__name__}: {exc}", fatal=False) from exc


def _decrypts_without_password(reader: object) -> bool:
    """PDFs locked only against editing open with the empty password."""
    try:
        return bool(reader.decrypt(""))  # type: ignore[attr-defined]
    except Exception:  # unsupported cipher or missing crypto backend: treat as locked
        return False
