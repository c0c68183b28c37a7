"""What an egress item carries: a repository's content at HEAD, or the files an upload names.

Whether a push matters depends on whose code the repository holds, and a repository can be
hundreds of MB: its HEAD is scanned once per commit (cached), within a byte and file budget,
and stops early once enough files matched to leave no doubt. An upload tool's arguments name
files and folders; folders are walked (symlinks not followed) up to a file budget. Nothing here
decides what is an event: agent/policy.py ``decide_egress`` does, from what this module found.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from typing import Any

from agent.config import EgressSection
from agent.egress.repository import HeadReader, RepositoryError
from agent.scanning import Scanner
from agent.scanning.results import FINGERPRINT, PROTECTED, Match, ScanResult, Status
from agent.sources.work import EgressWork

log = logging.getLogger(__name__)

MAX_MATCHED_FILES = 20
"""A repository scan stops once this many files matched: the push is the customer's code already,
and the event needs evidence, not an inventory."""
MAX_MATCHES = 200
CACHE_ENTRIES = 64
_REASON_OF_KIND: dict[str, str] = {PROTECTED: "protected_file", FINGERPRINT: "fingerprint"}


@dataclasses.dataclass(frozen=True)
class RepositoryScan:
    """What a repository's HEAD held: the ``repository`` facts it adds and the matches (member = path)."""

    facts: dict[str, Any]
    matches: tuple[Match, ...]


@dataclasses.dataclass(frozen=True)
class UploadScan:
    """The files an upload named that matched (path, result), and the ``transfer`` counts."""

    matched: tuple[ScanResult, ...]
    transfer: dict[str, Any]


class EgressScanner:
    """Scans egress work with the agent's scanner; shared by the pipeline's threads."""

    def __init__(self, scanner: Scanner, config: EgressSection):
        self._scanner = scanner
        self._config = config
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple[str, str, str, int], RepositoryScan] = collections.OrderedDict()

    def repository(self, work: EgressWork) -> RepositoryScan | None:
        """The repository's facts (``work.repository_facts``) completed by a scan of its HEAD."""
        if work.repository is None:
            return None
        facts = dict(work.repository_facts or {"path": work.repository})
        head = facts.get("head")
        if not isinstance(head, str):  # no commit yet: nothing at HEAD to push or to scan
            return RepositoryScan(facts | {"scan_status": "skipped", "scanned_files": 0, "scanned_bytes": 0, "matched_files": 0}, ())
        # The rules or the protected index changing (a bundle, a refresh) changes what HEAD matches.
        key = (work.repository, head, self._scanner.ruleset.version, id(self._scanner.protected))
        with self._lock:
            known = self._cache.get(key)
            if known is not None:
                self._cache.move_to_end(key)
        if known is None:
            known = self._scan_head(work.repository)
            with self._lock:
                self._cache[key] = known
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        reasons = list(facts.get("reasons") or [])
        for reason in known.facts.get("reasons", []):
            if reason not in reasons:
                reasons.append(reason)
        merged = facts | {k: v for k, v in known.facts.items() if k != "reasons"} | {"reasons": reasons, "protected": bool(reasons)}
        return RepositoryScan(merged, known.matches)

    def _scan_head(self, top: str) -> RepositoryScan:
        reader = HeadReader(top, max_files=self._config.repo_scan_max_files, max_bytes=self._config.repo_scan_max_bytes)
        matches: list[Match] = []
        reasons: list[str] = []
        matched_files = 0
        status = "complete"
        try:
            for path, data in reader:
                result = self._scanner.scan_bytes(data, name=path)
                if not result.matches:
                    continue
                matched_files += 1
                for match in result.matches:
                    reason = _REASON_OF_KIND.get(match.kind, "signature")
                    if reason not in reasons:
                        reasons.append(reason)
                    if len(matches) < MAX_MATCHES:
                        matches.append(match.relocated(path))
                if matched_files >= MAX_MATCHED_FILES:
                    status = "partial"
                    break
            else:
                status = reader.status
        except RepositoryError as exc:
            log.warning("could not read %s at HEAD: %s", top, exc)
            status = "failed"
        finally:
            reader.close()
        facts = {
            "scan_status": status, "scanned_files": reader.files, "scanned_bytes": reader.bytes,
            "matched_files": matched_files, "reasons": reasons,
        }  # fmt: skip
        return RepositoryScan(facts, tuple(matches))

    def upload(self, work: EgressWork) -> UploadScan:
        """Each file the upload named (folders walked), scanned; the matching ones kept."""
        limit = self._config.upload_max_files
        named = scanned = scanned_bytes = 0
        truncated = False
        matched: list[ScanResult] = []
        for path in _files(work.files, limit + 1):
            named += 1
            if scanned >= limit:
                truncated = True
                break
            result = self._scanner.scan_path(path)
            scanned += 1
            scanned_bytes += result.size or 0
            if result.status is Status.MATCH:
                matched.append(result)
        transfer = {
            "files_named": named, "files_scanned": scanned, "files_matched": len(matched),
            "bytes_scanned": scanned_bytes, "truncated": truncated,
        }  # fmt: skip
        return UploadScan(tuple(matched), transfer)


def _files(paths: tuple[str, ...], limit: int) -> list[str]:
    """Regular files named by ``paths``, folders walked without following links, at most ``limit``."""
    found: list[str] = []
    for path in paths:
        if len(found) >= limit:
            break
        if os.path.isdir(path) and not os.path.islink(path):
            for folder, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    if not os.path.islink(full) and os.path.isfile(full):
                        found.append(full)
                        if len(found) >= limit:
                            return found
        elif os.path.isfile(path):
            found.append(path)
    return found
