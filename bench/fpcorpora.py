"""Real third-party code for the fingerprint bench, fetched from PyPI, npm and Debian into bench/.fpcorpus.

Every package is pinned and fetched with the registry's own client (``pip download`` of a wheel,
``npm pack``, ``apt-get download``) on first use, unpacked once and reused afterwards. Three roles:

- customer: the code an index is built from and whose copies must be found;
- unrelated: other projects' code that must not match (false positives);
- filler: more code, disjoint from both, that brings the large index up to ~100 MB;
- baseline: Go libraries passed as ``--baseline`` (what the default baseline reads of Go, the
  toolchain's library, is missing on this machine and is the unrelated Go code anyway).

No unrelated package embeds or vendors a customer package and no customer package copies an
unrelated one (celery was dropped: its signals are django's dispatcher, adapted; so was twisted, which
scrapy is built on and whose names scrapy's imports spell) (the Go standard library does not vendor the gorilla/gin/cobra libraries, the JDK
shares no code with React Native's Android sources, glibc none with ReactCommon, and so on).
The chosen sets are materialised as trees of hard links under ``.fpcorpus/sets/ROLE/PACKAGE``,
so the index builder and ``build_pack`` read exactly the files the bench samples from.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".fpcorpus")
PIP = os.path.join(os.path.dirname(HERE), ".venv", "bin", "pip")

LANGUAGES = ("python", "javascript", "java", "c", "go")
EXTENSIONS = {
    ".py": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "javascript", ".tsx": "javascript",
    ".java": "java",
    ".c": "c", ".h": "c", ".cc": "c", ".cpp": "c", ".cxx": "c", ".hpp": "c",
    ".go": "go",
}  # fmt: skip
SKIP_DIRS = {"testdata", "vendor", "third_party", "third-party", "node_modules", "__pycache__", ".git"}
MAX_FILE_BYTES = 2_000_000
MAX_LINE_CHARS = 1_000  # a longer line means minified or generated code, which no leaker edits by hand
MIN_LINES = 20
FILLER_BYTES = 100_000_000
SMALL_BYTES = 1_000_000


@dataclass(frozen=True)
class Package:
    """One pinned download: ``registry`` is pypi, npm or apt."""

    registry: str
    spec: str

    @property
    def key(self) -> str:
        return self.spec.replace("==", "-").replace("@", "-").replace("/", "-").strip("-")


@dataclass(frozen=True)
class Part:
    """Folders of one package playing one role, for the languages named."""

    package: Package
    role: str
    subdirs: tuple[str, ...]
    languages: tuple[str, ...] = LANGUAGES
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.package.key


def _pypi(spec: str) -> Package:
    return Package("pypi", spec)


def _npm(spec: str) -> Package:
    return Package("npm", spec)


def _apt(spec: str) -> Package:
    return Package("apt", spec)


GOCODE = "usr/share/gocode/src/github.com"
RN = _npm("react-native@0.71.19")
JDK = _apt("openjdk-17-source")

PARTS: tuple[Part, ...] = (
    # customer
    Part(_pypi("flask==3.0.0"), "customer", ("flask",)),
    Part(_pypi("scrapy==2.11.0"), "customer", ("scrapy",)),
    Part(_pypi("dask==2023.12.1"), "customer", ("dask",)),
    Part(_pypi("networkx==3.2.1"), "customer", ("networkx",)),
    Part(_pypi("paramiko==3.4.0"), "customer", ("paramiko",)),
    Part(_npm("rxjs@7.8.1"), "customer", ("package/src",)),
    Part(_npm("effect@2.0.0"), "customer", ("package/src",)),
    Part(_npm("@trpc/server@10.45.0"), "customer", ("package/src",)),
    Part(_npm("lodash@4.17.21"), "customer", ("package",)),
    Part(RN, "customer", ("package/ReactAndroid/src/main/java",), ("java",), "react-native-java"),
    Part(_npm("cordova-android@12.0.1"), "customer", ("package/framework/src",), ("java",)),
    Part(_npm("@capacitor/android@5.7.8"), "customer", ("package/capacitor/src/main",), ("java",)),
    Part(RN, "customer", ("package/ReactCommon", "package/ReactAndroid/src/main/jni"), ("c",), "react-native-cpp"),
    *(
        Part(_apt(f"golang-github-{deb}-dev"), "customer", (f"{GOCODE}/{path}",), ("go",))
        for deb, path in (
            ("gin-gonic-gin", "gin-gonic"),
            ("go-chi-chi", "go-chi"),
            ("gorilla-mux", "gorilla/mux"),
            ("spf13-cobra", "spf13"),
            ("sirupsen-logrus", "sirupsen"),
            ("pelletier-go-toml", "pelletier"),
            ("miekg-dns", "miekg"),
            ("hashicorp-hcl", "hashicorp"),
            ("urfave-cli", "urfave"),
            ("labstack-echo", "labstack"),
        )
    ),  # fmt: skip
    # unrelated
    Part(_pypi("django==4.2.7"), "unrelated", ("django",), ("python",)),
    Part(_pypi("sympy==1.12"), "unrelated", ("sympy",)),
    Part(_pypi("nltk==3.8.1"), "unrelated", ("nltk",)),
    Part(_pypi("pyglet==2.0.10"), "unrelated", ("pyglet",)),
    Part(_npm("three@0.160.0"), "unrelated", ("package/src", "package/examples/jsm")),
    Part(_npm("eslint@8.56.0"), "unrelated", ("package/lib",)),
    Part(_npm("webpack@5.89.0"), "unrelated", ("package/lib",)),
    Part(
        JDK,
        "unrelated",
        tuple(f"src/{m}" for m in ("java.base", "java.desktop", "java.xml", "jdk.compiler", "java.management", "jdk.jfr", "java.naming", "java.net.http", "jdk.javadoc", "java.sql")),
        ("java",),
    ),  # fmt: skip
    Part(_apt("glibc-source"), "unrelated", ("src",), ("c",)),
    Part(_apt("golang-1.19-src"), "unrelated", ("usr/share/go-1.19/src",), ("go",)),
    # baseline: Go code the admin's machine would have (this one has no Go toolchain, whose standard
    # library the default baseline would read, and that library is the unrelated Go code here)
    *(
        Part(_apt(f"golang-github-{deb}-dev"), "baseline", (f"{GOCODE}/{path}",), ("go",))
        for deb, path in (
            ("stretchr-testify", "stretchr"),
            ("prometheus-client-golang", "prometheus"),
            ("google-go-cmp", "google"),
            ("json-iterator-go", "json-iterator"),
            ("go-kit-kit", "go-kit"),
            ("go-sql-driver-mysql", "go-sql-driver"),
            ("lib-pq", "lib"),
            ("minio-minio-go", "minio"),
            ("jmoiron-sqlx", "jmoiron"),
            ("fsnotify-fsnotify", "fsnotify"),
        )
    ),  # fmt: skip
    # filler for the ~100 MB index
    Part(_pypi("ansible-core==2.16.1"), "filler", ("ansible",)),
    Part(_pypi("sphinx==7.2.6"), "filler", ("sphinx",), ("python",)),
    Part(_pypi("pylint==3.0.3"), "filler", ("pylint",)),
    Part(_npm("typeorm@0.3.17"), "filler", ("package",)),
    Part(RN, "filler", ("package/Libraries",), ("javascript",), "react-native-js"),
    Part(_pypi("ansible==9.1.0"), "filler", ("ansible_collections",)),
)


@dataclass(frozen=True)
class SourceFile:
    """One source file of a part: ``name`` is ``PART/relative/path``."""

    path: str
    name: str
    language: str
    role: str
    size: int
    lines: int


@dataclass
class Corpora:
    """The files of every role, and the hard-link trees the builders read."""

    files: list[SourceFile] = field(default_factory=list)
    roots: dict[str, str] = field(default_factory=dict)  # set name -> folder

    def of(self, role: str, language: str | None = None, min_lines: int = 0) -> list[SourceFile]:
        return [f for f in self.files if f.role == role and (language is None or f.language == language) and f.lines >= min_lines]


def _say(message: str) -> None:
    print(f"[fpcorpora] {message}", file=sys.stderr, flush=True)


def _run(argv: list[str], cwd: str) -> None:
    _say(" ".join(argv))
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, timeout=900)


def _only(folder: str, suffixes: tuple[str, ...]) -> str:
    found = [n for n in os.listdir(folder) if n.endswith(suffixes)]
    if len(found) != 1:
        raise RuntimeError(f"expected one {suffixes} in {folder}, found {found}")
    return os.path.join(folder, found[0])


def fetch(package: Package) -> str:
    """The folder ``package`` is unpacked in, downloading and unpacking it the first time."""
    target = os.path.join(CACHE, package.registry, package.key)
    if os.path.exists(os.path.join(target, ".done")):
        return target
    download = os.path.join(CACHE, "downloads", package.key)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(download, ignore_errors=True)
    os.makedirs(download)
    os.makedirs(target)
    if package.registry == "pypi":
        _run([PIP, "download", "-q", "--only-binary", ":all:", "--no-deps", "--python-version", "3.11",
              "--platform", "any", "--implementation", "py", "-d", download, package.spec], download)  # fmt: skip
        with zipfile.ZipFile(_only(download, (".whl",))) as z:
            z.extractall(target)
    elif package.registry == "npm":
        _run(["npm", "pack", "--silent", package.spec], download)
        with tarfile.open(_only(download, (".tgz",))) as t:
            t.extractall(target, filter="data")
    else:
        _run(["apt-get", "download", "-q", package.spec], download)
        _run(["dpkg-deb", "-x", _only(download, (".deb",)), target], download)
        _unpack_inner(package.spec, target)
    shutil.rmtree(download, ignore_errors=True)
    open(os.path.join(target, ".done"), "w").close()
    return target


def _unpack_inner(spec: str, target: str) -> None:
    """Debian ships these two sources as an archive inside the package."""
    src = os.path.join(target, "src")
    if spec == "glibc-source":
        inner = _only(os.path.join(target, "usr/src/glibc"), (".tar.xz",))
        _say(f"unpacking {os.path.basename(inner)}")
        with tarfile.open(inner) as t:
            t.extractall(src, filter="data")
        os.remove(inner)
    elif spec == "openjdk-17-source":
        inner = os.path.join(target, "usr/lib/jvm/openjdk-17/lib/src.zip")
        _say("unpacking the JDK's src.zip (java files)")
        with zipfile.ZipFile(inner) as z:
            z.extractall(src, [n for n in z.namelist() if n.endswith(".java")])
        os.remove(inner)


def _walk(root: str):
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for n in sorted(names):
            yield os.path.join(folder, n)


def _usable(path: str) -> int | None:
    """Line count of a source file a person wrote, or None (minified, generated, binary, too big)."""
    if path.endswith((".min.js", ".d.ts")) or os.path.islink(path):
        return None
    size = os.path.getsize(path)
    if not size or size > MAX_FILE_BYTES:
        return None
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    if any(len(line) > MAX_LINE_CHARS for line in lines):
        return None
    return len(lines)


def _link_tree(files: list[SourceFile], root: str) -> None:
    """Hard links of ``files`` under ``root``, named as the bench names them."""
    shutil.rmtree(root, ignore_errors=True)
    for f in files:
        dest = os.path.join(root, f.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            os.link(f.path, dest)
        except OSError:
            shutil.copyfile(f.path, dest)


def load(*, seed: int = 1) -> Corpora:
    """Fetch (first run) and list every part; build the hard-link trees of the index corpora."""
    corpora = Corpora()
    for part in PARTS:
        base = fetch(part.package)
        for sub in part.subdirs:
            root = os.path.join(base, sub)
            if not os.path.isdir(root):
                raise RuntimeError(f"{part.name}: {sub} is missing in {base}")
            for path in _walk(root):
                language = EXTENSIONS.get(os.path.splitext(path)[1])
                if language not in part.languages:
                    continue
                lines = _usable(path)
                if lines is None:
                    continue
                rel = os.path.relpath(path, base)
                corpora.files.append(SourceFile(path, f"{part.name}/{rel}", language, part.role, os.path.getsize(path), lines))
    customer = corpora.of("customer")
    filler: list[SourceFile] = []
    total = sum(f.size for f in customer)
    for f in corpora.of("filler"):
        if total >= FILLER_BYTES:
            break
        filler.append(f)
        total += f.size
    rng = random.Random(seed)
    small: list[SourceFile] = []
    pool = sorted(customer, key=lambda f: f.name)
    rng.shuffle(pool)
    by_language = {lang: [f for f in pool if f.language == lang] for lang in LANGUAGES}
    size = 0
    while size < SMALL_BYTES and any(by_language.values()):
        for lang in LANGUAGES:
            if by_language[lang] and size < SMALL_BYTES:
                f = by_language[lang].pop()
                small.append(f)
                size += f.size
    sets = {"customer": customer, "filler": filler, "small": small, "baseline": corpora.of("baseline")}
    for name, files in sets.items():
        root = os.path.join(CACHE, "sets", name)
        stamp = root + ".list"
        listing = "\n".join(f.name for f in files)
        if not os.path.exists(stamp) or open(stamp).read() != listing:
            _say(f"linking {len(files)} files into {root}")
            _link_tree(files, root)
            with open(stamp, "w") as out:
                out.write(listing)
        corpora.roots[name] = root
    return corpora


def installed_copies(baseline_roots: list[str]) -> list[str]:
    """Folders of the baseline holding one of the bench's Python packages (this machine's global
    site-packages has flask, networkx and sympy): left out of the baseline, as an admin whose own
    code is not installed on the build machine would have it."""
    names = {sub.split("/")[0] for part in PARTS if part.package.registry == "pypi" for sub in part.subdirs}
    found = []
    for root in baseline_roots:
        for where in (root, os.path.join(root, "site-packages"), os.path.join(root, "dist-packages")):
            for name in sorted(names):
                path = os.path.join(where, name)
                if os.path.isdir(path) and path not in found:
                    found.append(path)
    return found


def summary(corpora: Corpora) -> list[tuple[str, str, int, int, float, str]]:
    """Rows ``(role, language, files, files of 20+ lines, MB, packages)``."""
    rows = []
    for role in ("customer", "unrelated", "filler", "baseline"):
        for lang in LANGUAGES:
            files = corpora.of(role, lang)
            if role == "filler":
                keep = set(open(corpora.roots["filler"] + ".list").read().split("\n"))
                files = [f for f in files if f.name in keep]
            if not files:
                continue
            parts = sorted({f.name.split("/", 1)[0] for f in files})
            rows.append(
                (role, lang, len(files), sum(f.lines >= MIN_LINES for f in files), sum(f.size for f in files) / 1e6,
                 ", ".join(parts))
            )  # fmt: skip
    return rows


if __name__ == "__main__":
    c = load()
    for row in summary(c):
        print(f"{row[0]:9} {row[1]:10} {row[2]:6} files {row[3]:6} of 20+ lines {row[4]:7.1f} MB  {row[5]}")
