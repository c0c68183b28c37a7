"""Staff pseudonyms: the stable keyed names a vendor lead sees instead of their staff's user names.

A pseudonym is ``person-`` and 10 base32 characters of HMAC-SHA256(key, "vendor_id:user_name"):
the same person keeps one pseudonym across pages, exports and restarts (the key is a data-dir
file, server/keys.py), two vendors' leads cannot match their pseudonyms against each other, and
nobody without the key can reverse one by hashing a list of likely names. ``Names`` is one
request's way of showing names: pseudonyms, except those a customer reviewer revealed in a case
(server/store/reveals.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from server.keys import pseudonyms_key

PREFIX = "person-"
_LENGTH = 10
# Where a user name stands alone inside other text (/home/jdoe/x, C:\Users\jdoe, jdoe@host), not
# as part of a longer word or host name (jdoe2, jdoe-laptop).
_EDGE = r"[\w.\-]"
_WORD = re.compile(r"[\w.\-]+")
# Fields of the shown event that are the collector's facts or digests, never written by a person.
_FACTS = frozenset({"id", "seq", "agent_id", "vendor", "channel", "type", "host", "occurred_at", "received_at",
                    "severity", "source_ip", "source_country", "triage", "origin", "sha256", "schema"})  # fmt: skip


STAFF_TTL_S = 60.0
"""How long a vendor's list of staff names is reused: reading it costs a scan of the daily counts,
too much for every page; a name new within this time is still replaced in its own events' fields."""


class Pseudonyms:
    """Pseudonyms under one key; the key is read on first use, so a collector that never shows one
    never creates the key file. Also keeps each vendor's staff names for ``STAFF_TTL_S``."""

    def __init__(self, key: bytes | Callable[[], bytes], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = key if isinstance(key, bytes) else None
        self._load = key if callable(key) else None
        self._lock = threading.Lock()
        self._clock = clock
        self._staff: dict[int, tuple[float, frozenset[str]]] = {}

    @classmethod
    def in_dir(cls, data_dir: Path) -> Pseudonyms:
        return cls(lambda: pseudonyms_key(data_dir))

    @property
    def key(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None and self._load is not None:
                    self._key = self._load()
        assert self._key is not None
        return self._key

    def staff(self, vendor_id: int, load: Callable[[], Iterable[str]], *, fresh: bool = False) -> frozenset[str]:
        """``vendor_id``'s staff names: ``load()`` at most every ``STAFF_TTL_S`` unless ``fresh``."""
        now = self._clock()
        cached = self._staff.get(vendor_id)
        if cached is not None and not fresh and now - cached[0] < STAFF_TTL_S:
            return cached[1]
        names = frozenset(load())
        self._staff[vendor_id] = (now, names)
        return names

    def of(self, vendor_id: int, user_name: str) -> str:
        """The pseudonym of ``user_name`` among ``vendor_id``'s staff."""
        digest = hmac.new(self.key, f"{vendor_id}:{user_name}".encode(), hashlib.sha256).digest()
        return PREFIX + base64.b32encode(digest).decode("ascii").lower()[:_LENGTH]


@lru_cache(maxsize=1024)
def _standing_alone(name: str) -> re.Pattern[str]:
    return re.compile(f"(?<!{_EDGE}){re.escape(name)}(?!{_EDGE})")


@dataclass(frozen=True)
class Names:
    """How one request shows staff names: a pseudonym per vendor, or the real name once revealed."""

    pseudonyms: Pseudonyms
    revealed: Mapping[int, frozenset[str]]
    """Per vendor, the names a customer reviewer revealed in a case."""
    staff: Mapping[int, frozenset[str]] = field(default_factory=dict)
    """Per vendor, the user names of its events: replaced wherever they stand alone in an event's text."""
    _shown: dict[tuple[int | None, str], str] = field(default_factory=dict, repr=False, compare=False)

    def show(self, vendor_id: int | None, user_name: Any) -> Any:
        """The name to show for ``user_name`` (None stays None; a non-text value is named by its text)."""
        if user_name is None:
            return None
        name = user_name if isinstance(user_name, str) else str(user_name)
        if vendor_id is not None and name in self.revealed.get(vendor_id, frozenset()):
            return name
        shown = self._shown.get((vendor_id, name))
        if shown is None:
            shown = self._shown[(vendor_id, name)] = self.pseudonyms.of(vendor_id if vendor_id is not None else 0, name)
        return shown

    def real_names(self, vendor_id: int, shown: str, candidates: Iterable[str]) -> set[str]:
        """The names among ``candidates`` (that vendor's staff) that are shown as ``shown``."""
        return {name for name in candidates if self.show(vendor_id, name) == shown}

    def apply(self, item: dict[str, Any], vendor_id: int | None) -> None:
        """Replace, in the shown event ``item``, every staff name with what this request shows.

        The event's ``user`` and its process chain's users are replaced outright. Where one of
        those names, or any other name of the vendor's staff, stands alone inside other text of
        the event (a home folder in a path, a mount point, a command line), it is replaced there
        too, so a path does not give away what the field hid.
        """
        found: list[Any] = [item.get("user")]
        process = item.get("process")
        chain = [process] if isinstance(process, dict) else []
        if isinstance(process, dict) and isinstance(process.get("parents"), list):
            chain += [p for p in process["parents"] if isinstance(p, dict)]
        found += [p.get("user") for p in chain]
        own = {name: self.show(vendor_id, name) for name in found if isinstance(name, str) and name}
        hidden = {name: shown for name, shown in own.items() if name != shown}
        known = self.staff.get(vendor_id, frozenset()) - self.revealed.get(vendor_id, frozenset()) if vendor_id is not None else frozenset()
        if item.get("user") is not None:
            item["user"] = self.show(vendor_id, item["user"])
        for p in chain:
            if p.get("user") is not None:
                p["user"] = self.show(vendor_id, p["user"])
        if not hidden and not known:
            return

        def scrub(text: str) -> str:
            for name, shown in hidden.items():
                if name in text:
                    text = _standing_alone(name).sub(shown, text)
            if known:
                text = _WORD.sub(lambda m: self.show(vendor_id, m.group()) if m.group() in known else m.group(), text)
            return text

        for key in item.keys() - _FACTS - {"user"}:
            item[key] = _replaced(item[key], scrub)


def _replaced(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _replaced(inner, scrub) for key, inner in value.items()}
    if isinstance(value, list):
        return [_replaced(inner, scrub) for inner in value]
    return value
