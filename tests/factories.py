"""Builders for test inputs: office documents, PDFs, archives and bombs, made on the fly."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Iterable

MARKING = "PROPRIETARY AND CONFIDENTIAL"


def zip_bytes(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], *, mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes, *, name: str = "payload.txt") -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, fileobj=buf, mode="wb") as g:
        g.write(data)
    return buf.getvalue()


def _w_paragraphs(paragraphs: Iterable[list[str]]) -> str:
    """WordprocessingML paragraphs; each paragraph is split into several runs."""
    body = ""
    for runs in paragraphs:
        body += "<w:p>" + "".join(f"<w:r><w:t xml:space=\"preserve\">{r}</w:t></w:r>" for r in runs) + "</w:p>"
    return body


def docx_bytes(paragraphs: Iterable[list[str]]) -> bytes:
    """A minimal Word document. Runs split text the way Word does after edits."""
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        + _w_paragraphs(paragraphs)
        + "</w:body></w:document>"
    )
    return zip_bytes(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
            "_rels/.rels": b'<?xml version="1.0"?><Relationships/>',
            "word/document.xml": document.encode(),
        }
    )


def xlsx_bytes(cells: list[str]) -> bytes:
    shared = "".join(f"<si><t>{c}</t></si>" for c in cells)
    return zip_bytes(
        {
            "[Content_Types].xml": b"<Types/>",
            "xl/sharedStrings.xml": f'<sst count="{len(cells)}">{shared}</sst>'.encode(),
            "xl/worksheets/sheet1.xml": b"<worksheet><sheetData/></worksheet>",
        }
    )


def pptx_bytes(lines: list[str]) -> bytes:
    paras = "".join(f"<a:p><a:r><a:t>{line}</a:t></a:r></a:p>" for line in lines)
    return zip_bytes(
        {
            "[Content_Types].xml": b"<Types/>",
            "ppt/slides/slide1.xml": f'<p:sld xmlns:a="a" xmlns:p="p"><p:txBody>{paras}</p:txBody></p:sld>'.encode(),
        }
    )


def odt_bytes(lines: list[str]) -> bytes:
    paras = "".join(f"<text:p>{line}</text:p>" for line in lines)
    return zip_bytes(
        {
            "mimetype": b"application/vnd.oasis.opendocument.text",
            "content.xml": f'<office:document-content xmlns:text="t"><office:body>{paras}</office:body></office:document-content>'.encode(),
        },
        compression=zipfile.ZIP_DEFLATED,
    )


def pdf_bytes(lines: list[str], *, user_password: str | None = None) -> bytes:
    """A real PDF with compressed text streams (fpdf2), optionally encrypted (pypdf)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for line in lines:
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    data = bytes(pdf.output())
    if user_password is None:
        return data
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-" + user_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_zip_bytes(members: dict[str, bytes], password: bytes = b"secret") -> bytes:
    """An AES-encrypted zip, as 7-Zip and WinZip make them."""
    import pyzipper

    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as z:
        z.setpassword(password)
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def zeros_zip_bytes(size: int, *, name: str = "zeros.bin") -> bytes:
    """A zip bomb in miniature: ``size`` zero bytes compressed about a thousand to one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(name, "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            left = size
            while left > 0:
                member.write(block[: min(left, len(block))])
                left -= len(block)
    return buf.getvalue()


def nested_zip_bytes(depth: int, inner: dict[str, bytes]) -> bytes:
    """``depth`` zips, each inside the next, the innermost holding ``inner``."""
    data = zip_bytes(inner)
    for level in range(depth - 1):
        data = zip_bytes({f"level{level}.zip": data})
    return data
