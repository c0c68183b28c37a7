"""Text carriers (agent/marks/text.py): homoglyph and zero-width frames written into prose and read back blind."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.marks import homoglyph, text, zerowidth
from agent.marks import payload as pl

PAYLOAD = bytes.fromhex("a1b2c3d4e5f6")
OTHER = bytes.fromhex("0102030405ff")

WORDS = (
    "the quarterly report shows that our supplier agreed to reduce prices for every component we order "
    "from their factory next year provided that volumes stay above the agreed floor and payment terms "
    "remain unchanged while the engineering group reviews alternative designs for the power supply"
).split()


def prose(words: int, *, seed: int = 1, line: int = 70) -> str:
    """Plain English-like prose wrapped at ``line`` columns, ``words`` words long."""
    rng = random.Random(seed)
    lines: list[str] = []
    current = ""
    for _ in range(words):
        word = rng.choice(WORDS)
        if len(current) + len(word) + 1 > line:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n".join(lines) + "\n"


def carriers(found: list[pl.Found]) -> dict[str, bytes]:
    return {item.carrier: item.payload for item in found}


def test_marked_text_reads_back_by_both_carriers_and_looks_the_same() -> None:
    original = prose(600)
    marked = text.mark_text(original, PAYLOAD)
    assert marked != original
    assert text.visible(marked) == original
    assert carriers(text.read_text(marked)) == {pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}
    assert text.read_text(original) == []


def test_each_carrier_alone_survives_the_loss_of_the_other() -> None:
    marked = text.mark_text(prose(600), PAYLOAD)
    assert carriers(text.read_text(zerowidth.strip(marked))) == {pl.HOMOGLYPH: PAYLOAD}
    assert carriers(text.read_text(homoglyph.strip(marked))) == {pl.ZERO_WIDTH: PAYLOAD}


def test_segments_keep_their_count_and_their_visible_text() -> None:
    original = prose(600)
    cut = [0, 5, 6, 6, 200, 201, 900, len(original) // 2, len(original)]
    segments = [original[a:b] for a, b in zip(cut, cut[1:])] + ["   "]
    marked = text.mark_segments(segments, PAYLOAD)
    assert len(marked) == len(segments)
    assert [text.visible(m) for m in marked] == segments
    assert marked[-1] == "   " and marked[2] == ""
    assert carriers(text.read_text("".join(marked))) == {pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}


def test_zero_width_characters_never_sit_inside_a_word() -> None:
    marked = text.mark_text(prose(600), PAYLOAD)
    for index, char in enumerate(marked):
        if char in zerowidth.CHARS:
            before = marked[index - 1]
            assert before.isspace() or before in zerowidth.CHARS


def test_reflow_hyphenation_and_whitespace_changes_keep_the_homoglyph_frame() -> None:
    marked = zerowidth.strip(text.mark_text(prose(600), PAYLOAD))
    words = marked.split()
    reflowed = "\n\n".join("  ".join(words[k : k + 7]) for k in range(0, len(words), 7))
    assert carriers(text.read_text(reflowed)) == {pl.HOMOGLYPH: PAYLOAD}
    hyphenated = " ".join(word[:3] + "-\n" + word[3:] if len(word) > 6 else word for word in words)
    assert carriers(text.read_text(hyphenated)) == {pl.HOMOGLYPH: PAYLOAD}


def test_short_text_is_unmarkable() -> None:
    with pytest.raises(pl.Unmarkable):
        text.mark_text("Too short to mark.", PAYLOAD)


def test_remarking_replaces_the_earlier_homoglyph_mark() -> None:
    once = zerowidth.strip(text.mark_text(prose(600), OTHER))
    twice = text.mark_text(once, PAYLOAD, zero_width=False)
    assert carriers(text.read_text(twice)) == {pl.HOMOGLYPH: PAYLOAD}


def test_might_carry_is_false_only_when_nothing_can_be_read() -> None:
    marked = text.mark_text(prose(600), PAYLOAD)
    assert text.might_carry(marked.encode())
    assert text.might_carry(homoglyph.strip(marked).encode())
    assert text.might_carry(zerowidth.strip(marked).encode())
    assert text.might_carry(pl.token(PAYLOAD).encode())
    assert not text.might_carry(prose(600).encode())
    assert not text.might_carry("Привет, как дела? Ёлки-палки".encode())


def libreoffice_pdf_text(tmp_path: Path, name: str, content: str, *, layout: bool = False) -> str:
    """``content`` saved as a text file, converted to PDF by LibreOffice, and read back by pdftotext."""
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    profile = tmp_path / "lo-profile"
    subprocess.run(
        ["libreoffice", f"-env:UserInstallation={profile.as_uri()}", "--headless", "--convert-to", "pdf", "--outdir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    pdf = source.with_suffix(".pdf")
    return subprocess.run(["pdftotext", *(["-layout"] if layout else []), str(pdf), "-"], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("libreoffice") is None or shutil.which("pdftotext") is None, reason="needs libreoffice and pdftotext")
def test_homoglyph_frames_survive_pdf_export_and_pdftotext(tmp_path: Path) -> None:
    paragraphs = [prose(120, seed=seed, line=10_000).strip() for seed in range(12)]
    original = "\n\n".join(paragraphs) + "\n"
    marked = text.mark_text(original, PAYLOAD)
    for layout in (False, True):
        extracted = libreoffice_pdf_text(tmp_path, f"memo{int(layout)}.txt", marked, layout=layout)
        assert text.visible(extracted).split() == original.split()
        found = {item.carrier: item for item in text.read_text(extracted)}
        assert found[pl.HOMOGLYPH].payload == PAYLOAD
        assert found[pl.HOMOGLYPH].frames >= 10
        assert all(item.payload == PAYLOAD for item in found.values())
        # zero-width glyphs break pdftotext's lines apart (the page looks the same): excerpts by words
        words = extracted.split()
        excerpts = [" ".join(words[start : start + 400]) for start in range(0, len(words) - 400, 37)]
        assert len(excerpts) > 10
        assert all(carriers(text.read_text(excerpt)).get(pl.HOMOGLYPH) == PAYLOAD for excerpt in excerpts)


def test_excerpts_cut_anywhere_never_yield_a_wrong_payload() -> None:
    rng = random.Random(5)
    marked = text.mark_text(prose(3000, seed=9), PAYLOAD)
    held = 0
    for _ in range(300):
        start = rng.randrange(len(marked))
        excerpt = marked[start : start + rng.randrange(50, 6000)]
        found = text.read_text(excerpt)
        assert all(item.payload == PAYLOAD for item in found)
        held += bool(found)
    assert held > 150


def test_hostile_input_is_read_in_bounded_time() -> None:
    nasty = [
        "\u200c\u200d" * 200_000,
        ("\u200d" + "\u200c" * 4 + " x ") * 50_000,
        ("і" + "a" * 15 + "а ") * 40_000,
        "-\n" * 200_000 + "а" * 100_000,
        "x" * 1_000_000,
        ("word " * 10 + "\u0456nto ") * 20_000,
    ]
    for sample in nasty:
        assert all(item.carrier != pl.HOMOGLYPH or len(item.payload) == pl.PAYLOAD_BYTES for item in text.read_text(sample))


def test_remarking_prose_leaves_one_payload_and_keeps_joiners_inside_words() -> None:
    emoji = "family \U0001f468\u200d\U0001f469\u200d\U0001f467 and \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 "
    original = emoji + prose(600)
    once = text.mark_text(original, OTHER)
    twice = text.mark_text(once, PAYLOAD)
    assert carriers(text.read_text(twice)) == {pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}
    assert "\U0001f468\u200d\U0001f469\u200d\U0001f467" in twice
    assert "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645" in twice
    segments = text.mark_segments([once[:500], " ", once[500:]], PAYLOAD)
    assert carriers(text.read_text("".join(segments))) == {pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}


# Bounded time and size when marking and tracing files (agent/marks/bounds.py).


def _docx(document: bytes) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", b"<Types></Types>")
        package.writestr("word/document.xml", b"<w:document><w:body><w:p><w:r><w:t>" + document + b"</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


def test_reading_a_file_stops_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from agent.marks import documents

    monkeypatch.setattr(documents, "READ_SECONDS", 0.2)
    bomb = _docx("b\u0456 ".encode() * (3 * 1024 * 1024))  # 12 MiB of sync letters: seconds of decoding
    # CPU time, not wall time: on a loaded machine the wall-clock deadline only fires sooner in CPU
    # terms, while a reader that ignored it would spend seconds of CPU on this file.
    started = time.process_time()
    assert documents.read_file(bomb, "bomb.docx") == []
    assert time.process_time() - started < 3
    marked = documents.mark_file(prose(2000).encode(), "memo.txt", PAYLOAD).data
    assert {item.carrier for item in documents.read_file(marked)} >= {pl.HOMOGLYPH, pl.ZERO_WIDTH}


def test_marking_a_file_stops_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.marks import documents
    from agent.marks.bounds import TimeLimit

    monkeypatch.setattr(documents, "MARK_SECONDS", 0.0)
    for data, name in ((prose(2000).encode(), "memo.txt"), (_docx(prose(2000).encode()), "memo.docx")):
        with pytest.raises(TimeLimit, match="time limit"):
            documents.mark_file(data, name, PAYLOAD)


def test_text_past_the_marking_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.marks import documents, ooxml
    from agent.marks.bounds import TooLarge

    body = prose(2000)
    monkeypatch.setattr(documents, "MAX_MARK_TEXT", len(body) - 1)
    monkeypatch.setattr(ooxml, "MAX_MARK_TEXT", len(body) - 1)
    with pytest.raises(TooLarge, match="longer than"):
        documents.mark_file(body.encode(), "memo.txt", PAYLOAD)
    with pytest.raises(TooLarge, match="longer than"):
        documents.mark_file(_docx(body.encode()), "memo.docx", PAYLOAD)
