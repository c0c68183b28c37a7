"""The external variables LOKI and THOR define, so public rule sets compile and run as they are.

Every ruleset the agent compiles defines ``filename``, ``filepath``, ``extension``, ``filetype`` and
``owner`` (empty strings by default); every file and archive member scanned sets them
(docs/signatures.md):

- ``filename``: the file's name (a member's own name, without the archive's);
- ``filepath``: the file's full path; ``archive!member`` for a member (``a.zip!b.zip!c.txt`` nested);
- ``extension``: the name's extension, lower-cased, with its dot (``.exe``), or empty;
- ``filetype``: the type the first bytes say, in LOKI's words (``EXE``, ``ZIP``, ``PDF``, ...), else ``UNKNOWN``;
- ``owner``: the user owning the file (an archive's owner for its members).

Content scanned without a file (clipboard text, blobs read from git) has the defaults but ``filetype``.
"""

from __future__ import annotations

import functools
import os

try:
    import pwd
except ImportError:  # Windows: no uid-to-name table; owner stays empty there
    pwd = None  # type: ignore[assignment]

DEFAULTS: dict[str, str] = {"filename": "", "filepath": "", "extension": "", "filetype": "", "owner": ""}
"""Names and compile-time values (as LOKI defines them: strings, empty by default)."""

NAMES = tuple(DEFAULTS)

UNKNOWN = "UNKNOWN"

# The magic numbers LOKI reads from signature-base's misc/file-type-signatures.txt, in the order LOKI
# tries them (the file's order; a prefix listed twice keeps its first place and its last name), first
# match wins. Written out here so the agent needs no data file; the names are LOKI's, to the letter.
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("1F8B08", "GZIP"),
    ("25504446", "PDF"),
    ("300000004C664C65", "EVT"),
    ("504B030414000600", "Office"),
    ("504B030414000800", "JAR"),
    ("504B537058", "PKSFX"),
    ("377ABCAF271C", "7Zip"),
    ("46756E6374696F6E", "VBS"),
    ("425A68", "BZip2"),
    ("5F27A889", "JAR"),
    ("FFD8FF", "JPEG"),
    ("504B0506", "PKZIP"),
    ("526172211A07", "RAR"),
    ("57696E5A6970", "WinZIP"),
    ("72656766", "Registry Hive"),
    ("7B5C72746631", "RTF"),
    ("7573746172", "TAR"),
    ("D4C3B2A1", "WINPCAP"),
    ("A1B2C3D4", "LIBPCAP"),
    ("A1B2CD34", "LIBPCAP"),
    ("CAFEBABE", "Class"),
    ("FF4B455942202020", "SYS Keyboard Driver"),
    ("FFFE3C003F0078006D006C", "Windows At Job"),
    ("3C3F706870", "PHP"),
    ("0D444F43", "DOC"),
    ("23204469736B2044", "VMDK"),
    ("456C6646696C", "EVTX"),
    ("414553", "AESCrypt"),
    ("434F5744", "VMDK"),
    ("3C3F786D", "XML"),
    ("3C3F584D", "XML"),
    ("435753", "CWS"),
    ("5A5753", "ZWS"),
    ("474946", "GIF"),
    ("46494C45", "NTFS MFT"),
    ("4A4152435300", "JARCS"),
    ("4B444D", "VMDK"),
    ("4C00000001140200", "LNK"),
    ("4D534346", "CAB"),
    ("504B0304", "ZIP"),
    ("FFFE3C00250040", "JSP"),
    ("5F434153455F", "Encase File"),
    ("636F6E6563746978", "VHD"),
    ("D0CF11E0A1B11AE1", "OLE"),
    ("FFFFFFFF", "SYS"),
    ("23212F", "UNIX SCRIPT"),
    ("4D444D50", "MDMP"),
    ("465753", "FWS (Flash)"),
    ("7F45", "ELF"),
    ("2321", "Script"),
    ("60EA", "ARJ"),
    ("1F9D", "TARZ"),
    ("1FA0", "TARZ"),
    ("3C25", "JSP"),
    ("4D5A", "EXE"),
    ("FFFE", "Windows Registry File"),
    ("E8", "SYS"),
    ("E9", "SYS"),
    ("EB", "SYS"),
)

FILETYPES: tuple[str, ...] = tuple(dict.fromkeys(name for _, name in _SIGNATURES)) + (UNKNOWN,)
"""Every value ``filetype`` takes."""


def _by_first_byte() -> dict[int, tuple[tuple[bytes, str], ...]]:
    table: dict[int, list[tuple[bytes, str]]] = {}
    for hex_prefix, name in _SIGNATURES:
        prefix = bytes.fromhex(hex_prefix)
        table.setdefault(prefix[0], []).append((prefix, name))
    return {first: tuple(entries) for first, entries in table.items()}


_TABLE = _by_first_byte()
HEAD_BYTES = max(len(bytes.fromhex(h)) for h, _ in _SIGNATURES)
"""How many leading bytes ``filetype`` looks at."""


def filetype(head: bytes | bytearray | memoryview) -> str:
    """The LOKI name of the type the first bytes of some content say, or ``UNKNOWN``."""
    if not head:
        return UNKNOWN
    entries = _TABLE.get(head[0])
    if entries is None:
        return UNKNOWN
    start = bytes(head[:HEAD_BYTES])
    for prefix, name in entries:
        if start.startswith(prefix):
            return name
    return UNKNOWN


@functools.lru_cache(maxsize=256)
def owner_name(uid: int) -> str:
    """The user name of ``uid`` (its number when the system has no name for it); empty on Windows."""
    if pwd is None:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _text(value: str) -> str:
    """A string libyara can take: names that are not UTF-8 (surrogate-escaped) get U+FFFD for the bad bytes."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _name_parts(name: str) -> tuple[str, str]:
    """(file name, extension) of a path or member name (``/`` and ``\\`` both separate)."""
    base = name[max(name.rfind("/"), name.rfind("\\")) + 1 :]
    return base, os.path.splitext(base)[1].lower()


class FileFacts:
    """What the external variables say about one scanned file, and its members' values derived from it."""

    __slots__ = ("path", "owner", "_top")

    def __init__(self, path: str | None, uid: int | None):
        self.path = _text(os.path.abspath(path)) if path else ""
        self.owner = owner_name(uid) if uid is not None else ""
        self._top: dict[str, str] | None = None

    def values(self, member: str | None, head: bytes | bytearray | memoryview) -> dict[str, str]:
        """The variables for the file itself (``member`` None) or one member, ``head`` its first bytes."""
        if member is None:
            if self._top is None:
                name, extension = _name_parts(self.path) if self.path else ("", "")
                self._top = {"filename": name, "filepath": self.path, "extension": extension, "filetype": filetype(head), "owner": self.owner}
            return self._top
        member = _text(member)
        name, extension = _name_parts(member.rsplit("!", 1)[-1])
        full = f"{self.path}!{member}" if self.path else member
        return {"filename": name, "filepath": full, "extension": extension, "filetype": filetype(head), "owner": self.owner}
