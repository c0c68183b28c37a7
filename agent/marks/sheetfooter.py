"""A spreadsheet's printed carrier: the token in each sheet's page footer, white and one point high.

A spreadsheet printed or exported to PDF loses what the other carriers hold: properties and hidden
names do not print, and its cells come out column by column or cut at the page edge, which breaks
the homoglyph frames of prose cells. The footer prints on every page, where ``pdftotext`` reads the
token back; in white at one point it shows neither on screen nor on paper. An existing footer keeps
its text: the token is appended after it, in its own formatting.
"""

from __future__ import annotations

import re

_CODES = "&amp;1&amp;KFFFFFF "
"""Footer codes (escaped for XML): font size 1, colour white, then the token."""
_AFTER_HEADER_FOOTER = re.compile(
    rb"<(?:rowBreaks|colBreaks|customProperties|cellWatches|ignoredErrors|smartTags|drawing|legacyDrawing|legacyDrawingHF"
    rb"|picture|oleObjects|controls|webPublishItems|tableParts|extLst)\b|</worksheet>"
)
_ODD_FOOTER = re.compile(rb"<oddFooter>(.*?)</oddFooter>|<oddFooter\s*/>", re.S)
_HEADER_FOOTER = re.compile(rb"<headerFooter\b[^>]*?(/?)>")


def add_footer(sheet: bytes, token: str) -> bytes | None:
    """``sheet`` (a worksheet part in the default SpreadsheetML namespace) with the token in its
    odd-page footer; None when the part is not one this can edit safely (prefixed elements)."""
    if b"<x:worksheet" in sheet or not sheet.rstrip().endswith(b"</worksheet>"):
        return None
    text = (_CODES + token).encode()
    footer = _ODD_FOOTER.search(sheet)
    if footer is not None:
        body = footer.group(1) or b""
        if len(body) + len(text) > 2000:
            return None  # Excel limits a footer to 255 characters of text; leave a long one alone
        # In a section of its own where the footer has no right-hand one; else after a space, so a
        # code at the end of the footer (``&P``, the page number) is not read together with ours.
        joint = b" " if b"&amp;R" in body else b"&amp;R"
        return sheet[: footer.start()] + b"<oddFooter>" + body + joint + text + b"</oddFooter>" + sheet[footer.end() :]
    element = b"<oddFooter>&amp;R" + text + b"</oddFooter>"
    existing = _HEADER_FOOTER.search(sheet)
    if existing is not None:
        if existing.group(1):  # <headerFooter/>
            return sheet[: existing.start()] + existing.group(0)[:-2].rstrip() + b">" + element + b"</headerFooter>" + sheet[existing.end() :]
        # oddFooter follows oddHeader when there is one
        header_end = sheet.find(b"</oddHeader>", existing.end())
        close = sheet.find(b"</headerFooter>", existing.end())
        at = header_end + len(b"</oddHeader>") if 0 <= header_end < close else existing.end()
        return sheet[:at] + element + sheet[at:]
    place = _AFTER_HEADER_FOOTER.search(sheet)
    if place is None:
        return None
    return sheet[: place.start()] + b"<headerFooter>" + element + b"</headerFooter>" + sheet[place.start() :]
