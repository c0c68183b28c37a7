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
import time
from typing import TYPE_CHECKING, Any

import yara

from agent.events import SEVERITIES
from agent.scanning import externals, rulecache
from agent.scanning.errors import RuleError
from agent.scanning.rulecache import CompiledCache

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
        uses_externals: whether a rule may read the external variables (externals.py); when not,
            the scanner spares itself setting them.
        skipped: the rule files left out because they do not compile (``skip_broken``).
        cached: the compiled rules came from the compiled-rules cache (rulecache.py).
        compile_s: seconds spent compiling or loading the YARA rules.
        warnings: libyara's compile warnings (slow strings and the like), which the compacted or
            cached rules no longer carry; `dlp-signatures check` reports them.
    """

    rules: Any
    version: str
    source: str
    namespaces: tuple[str, ...]
    rule_count: int
    fingerprints: tuple[FingerprintIndex, ...] = ()
    uses_externals: bool = True
    skipped: tuple[RuleError, ...] = ()
    cached: bool = False
    compile_s: float = 0.0
    warnings: tuple[str, ...] = ()

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


def load_rules(location: str | os.PathLike[str], *, skip_broken: bool = False, cache_dir: str | None = None) -> Ruleset:
    """Compile (or load) the rules at ``location``.

    Args:
        skip_broken: leave out the rule files that do not compile (listed in ``Ruleset.skipped``)
            instead of failing; the default is strict.
        cache_dir: keep the compiled rules there by content hash (rulecache.py); None compiles every time.

    Raises:
        RuleError: the location is missing or empty, or a rule does not compile;
            the message names the file and line.
    """
    path = os.fspath(location)
    if os.path.isdir(path):
        files = rule_files(path)
        if not files:
            raise RuleError("no .yar, .yara or .fp files in rules directory", path=path)
        return _compile(files, source=path, skip_broken=skip_broken, cache_dir=cache_dir)
    if not os.path.exists(path):
        raise RuleError("rules not found", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(COMPILED_MAGIC))
    except OSError as exc:
        raise RuleError(f"cannot read rules: {exc.strerror}", path=path) from exc
    if head == COMPILED_MAGIC:
        return _load_compiled(path)
    namespace = os.path.splitext(os.path.basename(path))[0]
    return _compile({namespace: path}, source=path, skip_broken=skip_broken, cache_dir=cache_dir)


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


def compile_rule_files(files: dict[str, str], *, source: str, skip_broken: bool = False, cache_dir: str | None = None) -> Ruleset:
    """Compile namespace -> rule file (e.g. local packs beside a published bundle's packs)."""
    if not files:
        raise RuleError("no rule files", path=source)
    return _compile(files, source=source, skip_broken=skip_broken, cache_dir=cache_dir)


CACHE_FORMAT = "1"
"""Part of every compiled-rules cache key: bump it when what is cached changes meaning."""

_INCLUDE = re.compile(rb"^[ \t]*include[ \t]+\"", re.M)
_IMPORT = re.compile(rb"^[ \t]*import[ \t]+\"([^\"\n]+)\"", re.M)
_EXTERNAL_WORDS = tuple(name.encode() for name in externals.NAMES)


def _compile(files: dict[str, str], *, source: str, skip_broken: bool = False, cache_dir: str | None = None) -> Ruleset:
    """YARA files compiled together (or loaded from the cache), ``.fp`` files loaded as fingerprint indexes."""
    digest = hashlib.sha256()
    cache_key = hashlib.sha256(
        "\0".join(
            ["dlp-compiled-rules", CACHE_FORMAT, yara.YARA_VERSION, yara.__version__, repr(sorted(externals.DEFAULTS.items())), str(skip_broken)]
        ).encode()
    )
    rule_paths = {ns: path for ns, path in files.items() if not path.lower().endswith(INDEX_SUFFIX)}
    indexes: list[FingerprintIndex] = []
    uses_externals = False
    cacheable = cache_dir is not None
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
        body_hash = hashlib.sha256(body).digest()
        digest.update(namespace.encode() + b"\0" + body_hash)
        # The path too: yara's messages (and so the skipped files' reasons) name it.
        cache_key.update(namespace.encode() + b"\0" + os.path.abspath(path).encode("utf-8", "surrogateescape") + b"\0" + body_hash)
        uses_externals = uses_externals or any(word in body for word in _EXTERNAL_WORDS)
        if cacheable and b"include" in body and _INCLUDE.search(body):
            cacheable = False  # an included file is read by libyara: its content is not in the key
    names = [index.name for index in indexes]
    if len(set(names)) != len(names):
        raise RuleError(f"two fingerprint indexes are named {next(n for n in names if names.count(n) > 1)!r}", path=source)
    started = time.perf_counter()
    cache = CompiledCache(cache_dir) if cacheable and cache_dir is not None and rule_paths else None
    found = cache.load(cache_key.hexdigest()) if cache is not None else None
    if found is not None:
        rules, header = found
        skipped = tuple(RuleError(m, path=p, line=n) for p, n, m in header.get("skipped", []))
        rule_count = int(header.get("rule_count", 0))
        kept = tuple(header.get("namespaces", ()))
        warnings = tuple(str(w) for w in header.get("warnings", ()))
    else:
        rules, skipped = _compile_yara(rule_paths, skip_broken=skip_broken)
        warnings = tuple(str(w) for w in getattr(rules, "warnings", None) or ())
        # Saved and loaded back: freshly compiled rules keep libyara's growable compile arenas (8 MB
        # of RSS for the 13 starter rules, 0.1 MB loaded), which an agent would hold for as long as
        # it runs (issue 22); about 0.1 s for 6,000 rules.
        rules = rulecache.compact(rules)
        rule_count = sum(1 for _ in rules)
        dropped = {files_ns for files_ns, path in rule_paths.items() if any(e.path == path for e in skipped)}
        kept = tuple(sorted(set(rule_paths) - dropped))
        if cache is not None:
            header = {"rule_count": rule_count, "namespaces": list(kept), "skipped": [[e.path, e.line, rule_error_message(e)] for e in skipped],
                      "warnings": list(warnings)}
            cache.store(cache_key.hexdigest(), rules, header)
    elapsed = time.perf_counter() - started
    how = "loaded from the compiled-rules cache" if found is not None else "compiled"
    log.info("%d rules of %d files %s in %.2fs (%s)", rule_count, len(kept), how, elapsed, source)
    return Ruleset(
        rules=rules,
        version=digest.hexdigest()[:16],
        source=source,
        namespaces=kept,
        rule_count=rule_count,
        fingerprints=tuple(indexes),
        uses_externals=uses_externals,
        skipped=skipped,
        cached=found is not None,
        compile_s=elapsed,
        warnings=warnings,
    )


def _compile_yara(rule_paths: dict[str, str], *, skip_broken: bool) -> tuple[Any, tuple[RuleError, ...]]:
    """The rules compiled together; with ``skip_broken``, the files that do not compile left out."""
    if not rule_paths:
        return yara.compile(source=""), ()
    try:
        return _yara_compile(rule_paths), ()
    except RuleError:
        if not skip_broken:
            raise
    broken = broken_files(rule_paths)
    left = {ns: path for ns, path in rule_paths.items() if path not in {e.path for e in broken}}
    skipped = list(broken)
    while True:
        if not left:
            return yara.compile(source=""), tuple(skipped)
        try:
            return _yara_compile(left), tuple(skipped)
        except RuleError as exc:
            # Compiles alone, not with the others (a clash between files): leave the file named out too.
            culprit = next((ns for ns, path in left.items() if path == exc.path), None)
            if culprit is None:
                raise
            skipped.append(exc)
            del left[culprit]


def _yara_compile(rule_paths: dict[str, str]) -> Any:
    try:
        return yara.compile(filepaths=rule_paths, externals=externals.DEFAULTS)
    except yara.SyntaxError as exc:
        raise _located(str(exc)) from exc
    except yara.Error as exc:
        raise RuleError(f"cannot compile rules: {exc}") from exc


def broken_files(rule_paths: dict[str, str]) -> list[RuleError]:
    """Every rule file that does not compile on its own (with the external variables), with its first error."""
    broken = []
    for namespace, path in sorted(rule_paths.items(), key=lambda item: item[1]):
        try:
            _yara_compile({namespace: path})
        except RuleError as exc:
            broken.append(exc if exc.path else RuleError(exc.args[0], path=path))
    return broken


@dataclasses.dataclass(frozen=True)
class SetUsage:
    """What a rule set needs of the engine: modules imported, external variables read."""

    modules: dict[str, list[str]]
    """Module -> the files importing it."""
    externals: dict[str, list[str]]
    """External variable (of ours) -> the files reading it."""
    missing_modules: tuple[str, ...]
    """Modules imported that this libyara lacks."""


def set_usage(rule_paths: dict[str, str]) -> SetUsage:
    """The modules and external variables ``rule_paths`` use.

    A file reads a variable when it does not compile without it but does with it (a word in a
    string or comment does not count); a file that does not compile at all is judged by its text.
    """
    modules: dict[str, list[str]] = {}
    used: dict[str, list[str]] = {}
    for namespace, path in sorted(rule_paths.items(), key=lambda item: item[1]):
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError:
            continue
        for name in dict.fromkeys(m.decode("utf-8", "replace") for m in _IMPORT.findall(body)):
            modules.setdefault(name, []).append(path)
        words = [name for name, word in zip(externals.NAMES, _EXTERNAL_WORDS, strict=True) if word in body]
        if not words:
            continue
        try:
            yara.compile(filepaths={namespace: path}, externals=externals.DEFAULTS)
        except yara.Error:
            for name in words:
                used.setdefault(name, []).append(path)
            continue
        for name in words:
            try:
                yara.compile(filepaths={namespace: path}, externals={k: v for k, v in externals.DEFAULTS.items() if k != name})
            except yara.Error:
                used.setdefault(name, []).append(path)
    available = set(getattr(yara, "modules", ()))
    missing = tuple(sorted(m for m in modules if available and m not in available))
    return SetUsage(modules=dict(sorted(modules.items())), externals={n: used[n] for n in externals.NAMES if n in used}, missing_modules=missing)


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
        uses_externals=True,  # unknown: the external variables are set for every file
    )


def rule_error_message(error: RuleError) -> str:
    """A RuleError's message without the ``path:line: `` in front."""
    text = str(error)
    where = f"{error.path}:{error.line}: " if error.path and error.line else f"{error.path}: " if error.path else ""
    return text[len(where) :] if where and text.startswith(where) else text


def _located(message: str) -> RuleError:
    """Turn yara's ``file(line): message`` into a RuleError with path and line."""
    found = _YARA_LOCATION.match(message)
    if not found:
        return RuleError(message)
    text = found["message"]
    if text == 'undefined identifier "md5"':
        text += ' (LOKI\'s md5 variable is not defined by the agent: use hash.md5(0, filesize) with import "hash")'
    return RuleError(text, path=found["path"], line=int(found["line"]))
