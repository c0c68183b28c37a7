"""Loading YARA rule packs into a versioned, immutable ruleset.

A rules location is either a directory of ``.yar``/``.yara`` files (one YARA
namespace per file, named by its path relative to the directory) and ``.fp``
fingerprint indexes (see fpindex.py), a single rule file or index, or a compiled
rules file (as written by ``yarac`` or ``Rules.save``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import yara

from agent.events import SEVERITIES
from agent.scanning.errors import RuleError

if TYPE_CHECKING:
    from agent.scanning.fpindex import FingerprintIndex

log = logging.getLogger(__name__)

RULE_SUFFIXES = (".yar", ".yara")
INDEX_SUFFIX = ".fp"
"""Fingerprint indexes (fpindex.py); numpy and the index code load only when one is used."""
COMPILED_MAGIC = b"YARA"

DEFAULT_SEVERITY = "medium"
DEFAULT_CATEGORY = "uncategorized"

_YARA_LOCATION = re.compile(r"^(?P<path>.+?)\((?P<line>\d+)\): (?P<message>.*)$", re.S)


@dataclasses.dataclass(frozen=True)
class RuleInfo:
    """The meta of one rule with documented defaults applied."""

    severity: str
    category: str
    description: str


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """Compiled rules plus what a result needs to say about them.

    Attributes:
        rules: the compiled yara-python rules (only the scanner touches them).
        version: a digest of the rule sources; it keys the result cache and is
            reported with every event so reviewers know what was in force.
        source: where the rules came from, for messages.
        namespaces: the namespaces compiled, in order.
        rule_count: how many rules were compiled.
        fingerprints: the fingerprint indexes loaded beside the rules.
    """

    rules: Any
    version: str
    source: str
    namespaces: tuple[str, ...]
    rule_count: int
    fingerprints: tuple[FingerprintIndex, ...] = ()

    @staticmethod
    def rule_info(meta: dict[str, Any]) -> RuleInfo:
        """Apply defaults to a matched rule's meta (see docs/signatures.md)."""
        severity = str(meta.get("severity", DEFAULT_SEVERITY)).lower()
        if severity not in SEVERITIES:
            severity = DEFAULT_SEVERITY
        return RuleInfo(
            severity=severity,
            category=str(meta.get("category", DEFAULT_CATEGORY)) or DEFAULT_CATEGORY,
            description=str(meta.get("description", "")),
        )


def starter_packs_dir() -> str | None:
    """The starter packs installed with the product, found without importing their code.

    The one-file agent binary carries them as data in the folder it unpacks to (``sys._MEIPASS``).
    """
    unpacked = getattr(sys, "_MEIPASS", None)
    if unpacked is not None:
        packs = os.path.join(unpacked, "signatures", "packs")
        return packs if os.path.isdir(packs) else None
    spec = importlib.util.find_spec("signatures")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        packs = os.path.join(location, "packs")
        if os.path.isdir(packs):
            return packs
    return None


def load_rules(location: str | os.PathLike[str]) -> Ruleset:
    """Compile (or load) the rules at ``location``.

    Raises:
        RuleError: the location is missing or empty, or a rule does not compile;
            the message names the file and line.
    """
    path = os.fspath(location)
    if os.path.isdir(path):
        files = rule_files(path)
        if not files:
            raise RuleError("no .yar, .yara or .fp files in rules directory", path=path)
        return _compile(files, source=path)
    if not os.path.exists(path):
        raise RuleError("rules not found", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(COMPILED_MAGIC))
    except OSError as exc:
        raise RuleError(f"cannot read rules: {exc.strerror}", path=path) from exc
    if head == COMPILED_MAGIC:
        return _load_compiled(path)
    if path.lower().endswith(INDEX_SUFFIX):
        return _compile({os.path.splitext(os.path.basename(path))[0]: path}, source=path)
    namespace = os.path.splitext(os.path.basename(path))[0]
    return _compile({namespace: path}, source=path)


def rule_files(directory: str) -> dict[str, str]:
    """Map namespace -> file for every rule file and fingerprint index under ``directory``."""
    files: dict[str, str] = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in RULE_SUFFIXES and ext.lower() != INDEX_SUFFIX:
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(os.path.join(root, stem), directory)
            namespace = rel.replace(os.sep, ".")
            if namespace in files:
                raise RuleError(f"two rule files give namespace {namespace!r}", path=full)
            files[namespace] = full
    return files


def compile_rule_files(files: dict[str, str], *, source: str) -> Ruleset:
    """Compile namespace -> rule file (e.g. local packs beside a published bundle's packs)."""
    if not files:
        raise RuleError("no rule files", path=source)
    return _compile(files, source=source)


def _compile(files: dict[str, str], *, source: str) -> Ruleset:
    """YARA files compiled together, ``.fp`` files loaded as fingerprint indexes."""
    digest = hashlib.sha256()
    rule_paths = {ns: path for ns, path in files.items() if not path.lower().endswith(INDEX_SUFFIX)}
    indexes: list[FingerprintIndex] = []
    for namespace in sorted(files):
        path = files[namespace]
        if path.lower().endswith(INDEX_SUFFIX):
            index = _load_index(path)
            indexes.append(index)
            digest.update(namespace.encode() + b"\0fp\0" + index.version.encode())
            continue
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError as exc:
            raise RuleError(f"cannot read rule file: {exc.strerror}", path=path) from exc
        digest.update(namespace.encode() + b"\0" + hashlib.sha256(body).digest())
    try:
        rules = yara.compile(filepaths=rule_paths) if rule_paths else yara.compile(source="")
    except yara.SyntaxError as exc:
        raise _located(str(exc)) from exc
    except yara.Error as exc:
        raise RuleError(f"cannot compile rules: {exc}", path=source) from exc
    names = [index.name for index in indexes]
    if len(set(names)) != len(names):
        raise RuleError(f"two fingerprint indexes are named {next(n for n in names if names.count(n) > 1)!r}", path=source)
    return Ruleset(
        rules=rules,
        version=digest.hexdigest()[:16],
        source=source,
        namespaces=tuple(sorted(rule_paths)),
        rule_count=sum(1 for _ in rules),
        fingerprints=tuple(indexes),
    )


def _load_index(path: str) -> FingerprintIndex:
    from agent.scanning.fpindex import FingerprintIndex, FingerprintIndexError

    try:
        return FingerprintIndex.load(path)
    except FingerprintIndexError as exc:
        raise RuleError(str(exc).removeprefix(f"{path}: "), path=path) from None


def _load_compiled(path: str) -> Ruleset:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    try:
        rules = yara.load(filepath=path)
    except yara.Error as exc:
        raise RuleError(f"not a compiled YARA rules file this engine can load: {exc}", path=path) from exc
    return Ruleset(
        rules=rules,
        version=digest.hexdigest()[:16],
        source=path,
        namespaces=(),
        rule_count=sum(1 for _ in rules),
    )


def _located(message: str) -> RuleError:
    """Turn yara's ``file(line): message`` into a RuleError with path and line."""
    found = _YARA_LOCATION.match(message)
    if not found:
        return RuleError(message)
    return RuleError(found["message"], path=found["path"], line=int(found["line"]))
