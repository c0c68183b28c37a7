"""What a leaker does to copied code, per language: renaming, reflowing, stripping comments, reordering, editing.

Each transform takes the text of a file or an excerpt, its language (python, javascript,
java, c, go: JavaScript covers TypeScript) and a seeded ``random.Random``, and returns the
new text. A small lexer per language family (comments, strings, numbers, identifiers,
punctuation; ``join`` of its tokens gives back the text) is enough to do what a person
with an editor's search-and-replace and a formatter does, and the output stays valid code
wherever that is cheap to keep (Python indentation, Go's brace placement, statement
boundaries for inserted lines).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

Token = tuple[str, str]  # (kind, text); kinds: ws nl comment string number ident op pre
Unit = list[Token]  # one line, with any multi-line string or comment that starts on it

# ---------------------------------------------------------------------------- lexing

_PY = re.compile(
    r"(?P<nl>\n)|(?P<ws>[ \t\r\f\v]+|\\\n)|(?P<comment>#[^\n]*)"
    r"|(?P<string>(?:[rRbBuUfF]{1,2})?(?:'''[\s\S]*?(?:'''|$)|\"\"\"[\s\S]*?(?:\"\"\"|$)"
    r"|'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?))"
    r"|(?P<number>\.?[0-9](?:[eE][+-]|[\w.])*)|(?P<ident>[^\W\d]\w*)"
    r"|(?P<op>\*\*=?|//=?|->|:=|<<=?|>>=?|[-+*/%&|^@=<>!]=|[^\s])"
)
_CLIKE = {
    "javascript": r"(?P<string>`(?:[^`\\]|\\[\s\S])*`?|'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?)",
    "java": r"(?P<string>\"\"\"[\s\S]*?(?:\"\"\"|$)|'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?)",
    "c": r"(?P<string>(?:u8|[uUL])?R\"([^(\s]{0,16})\([\s\S]*?\)\2\"|(?:u8|[uUL])?'(?:[^'\\\n]|\\.)*'?"
    r"|(?:u8|[uUL])?\"(?:[^\"\\\n]|\\.)*\"?)",
    "go": r"(?P<string>`[^`]*`?|'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?)",
}
_CLIKE_RE = {
    lang: re.compile(
        r"(?P<nl>\n)|(?P<ws>[ \t\r\f\v]+|\\\n)|(?P<comment>//[^\n]*|/\*[\s\S]*?(?:\*/|$))"
        + (r"|(?P<pre>(?<![^\n])[ \t]*#(?:[^\n\\]|\\[\s\S])*)" if lang == "c" else "")
        + "|"
        + strings
        + r"|(?P<number>\.?[0-9](?:[eE][+-]|[pP][+-]|[\w.'])*)|(?P<ident>[A-Za-z_$\x80-\uffff][\w$\x80-\uffff]*)"
        r"|(?P<op>>>>=?|\.\.\.|<<=?|>>=?|->|::|\+\+|--|&&|\|\||=>|:=|&\^=?|<-|[-+*/%&|^=<>!]=|===|!==|[^\s])"
    )
    for lang, strings in _CLIKE.items()
}
_JS_REGEX = re.compile(r"/(?![/*])(?:[^/\\\[\n]|\\.|\[(?:[^\]\\\n]|\\.)*\])+/[a-z]*")
_JS_REGEX_AFTER = set("( , = : [ ! & | ? { } ; + - * % < > ~ ^".split()) | {"return", "typeof", "case", "=>", "&&", "||"}


def lex(text: str, lang: str) -> list[Token]:
    """Tokens of ``text``; ``"".join(t for _, t in lex(...)) == text``."""
    pattern = _PY if lang == "python" else _CLIKE_RE[lang]
    out: list[Token] = []
    at, end = 0, len(text)
    last = ""
    while at < end:
        if lang == "javascript" and text[at] == "/" and (not last or last in _JS_REGEX_AFTER):
            m = _JS_REGEX.match(text, at)
            if m:
                out.append(("string", m.group()))
                last, at = "regex", m.end()
                continue
        m = pattern.match(text, at)
        kind = m.lastgroup if m and m.end() > at else None
        if kind is None or kind not in ("nl", "ws", "comment", "string", "number", "ident", "op", "pre"):
            # a named group inside a string pattern (C raw strings) reports the string itself
            kind = "string" if m and m.end() > at else "op"
        piece = m.group() if m and m.end() > at else text[at]
        out.append((kind, piece))
        if kind not in ("ws", "nl", "comment"):
            last = piece
        at += len(piece)
    return out


def units_of(tokens: list[Token]) -> list[Unit]:
    """Tokens split at line ends (a multi-line string or comment stays in the unit it starts in)."""
    units: list[Unit] = [[]]
    for tok in tokens:
        if tok[0] == "nl":
            units.append([])
        else:
            units[-1].append(tok)
    return units


def join(units: list[Unit]) -> str:
    return "\n".join("".join(t for _, t in u) for u in units)


def _code(unit: Unit) -> list[Token]:
    return [t for t in unit if t[0] not in ("ws", "comment")]


def _indent(unit: Unit) -> str:
    return unit[0][1] if unit and unit[0][0] == "ws" else ""


def _is_blank(unit: Unit) -> bool:
    return all(k == "ws" for k, _ in unit)


# ---------------------------------------------------------------------------- names

KEYWORDS = {
    "python": """False None True and as assert async await break class continue def del elif else except finally
        for from global if import in is lambda nonlocal not or pass raise return try while with yield self cls
        print len range str int float list dict set tuple bool bytes object type isinstance issubclass super
        open iter next enumerate zip map filter sorted reversed min max sum any all abs getattr setattr hasattr
        delattr repr hash id callable vars dir format round divmod pow chr ord hex oct bin input property
        staticmethod classmethod Exception ValueError TypeError KeyError IndexError AttributeError RuntimeError
        NotImplementedError StopIteration OSError IOError ImportError NotImplemented Ellipsis BaseException
        os sys re json time logging typing functools itertools collections math warnings""",
    "javascript": """abstract arguments as async await boolean break byte case catch char class const constructor
        continue debugger declare default delete do double else enum export extends false final finally float for
        from function get if implements import in instanceof interface int keyof let long module namespace native
        new null number of package private protected public readonly require return set short static string super
        switch symbol synchronized this throw throws transient true try type typeof undefined unknown never any
        var void volatile while with yield Array Object String Number Boolean Symbol Promise Map Set WeakMap
        WeakSet Error TypeError RangeError JSON Math Date RegExp console window document globalThis process
        Infinity NaN isNaN parseInt parseFloat setTimeout clearTimeout Reflect Proxy BigInt Iterable Record
        Partial Readonly Pick Omit Exclude Extract ReturnType Parameters length prototype push pop slice splice
        call apply bind then catch log""",
    "java": """abstract assert boolean break byte case catch char class const continue default do double else enum
        extends final finally float for goto if implements import instanceof int interface long native new
        package private protected public return short static strictfp super switch synchronized this throw
        throws transient try void volatile while true false null var record yield String Object System Integer
        Long Double Float Boolean Character Byte Short Math List Map Set HashMap ArrayList HashSet Arrays
        Collections Override Deprecated SuppressWarnings FunctionalInterface Exception RuntimeException
        IllegalArgumentException IllegalStateException NullPointerException IOException Throwable Error Class
        Thread Runnable StringBuilder Iterator Iterable Optional Objects out err println print length size get
        put add equals hashCode toString valueOf""",
    "c": """auto break case char const continue default do double else enum extern float for goto if inline int
        long register restrict return short signed sizeof static struct switch typedef union unsigned void
        volatile while bool true false NULL nullptr alignas alignof and asm catch class constexpr const_cast
        decltype delete dynamic_cast explicit export friend mutable namespace new noexcept not operator or
        private protected public reinterpret_cast static_assert static_cast template this thread_local throw
        try typeid typename using virtual override final std string vector map unordered_map set shared_ptr
        unique_ptr weak_ptr make_shared make_unique move forward size_t ssize_t int8_t int16_t int32_t int64_t
        uint8_t uint16_t uint32_t uint64_t uintptr_t intptr_t printf fprintf sprintf snprintf malloc calloc
        realloc free memcpy memset memmove memcmp strlen strcmp strncmp strcpy strncpy strchr strdup abort exit
        assert errno stderr stdout stdin FILE fopen fclose fread fwrite size empty begin end push_back
        emplace_back first second c_str data reset get""",
    "go": """break case chan const continue default defer else fallthrough for func go goto if import interface
        map package range return select struct switch type var true false nil iota append cap close complex
        copy delete imag len make new panic print println real recover bool byte complex64 complex128 error
        float32 float64 int int8 int16 int32 int64 rune string uint uint8 uint16 uint32 uint64 uintptr any
        comparable Error String""",
}
_KEEP = {lang: set(words.split()) | {"_"} for lang, words in KEYWORDS.items()}
_SYLLABLES = "ka lo mi ne ru sa ti vo be da fu gi ho ja ke lu ma no pe qui ra so tu ve wi xa yo ze".split()


def _new_name(old: str, rng: random.Random, taken: set[str], lang: str) -> str:
    while True:
        parts = [rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))]
        if old[:1].isupper() and not old.isupper():
            name = "".join(p.capitalize() for p in parts)
        elif old.isupper() and len(old) > 1:
            name = "_".join(parts).upper()
        elif "_" in old.strip("_"):
            name = "_".join(parts)
        else:
            name = parts[0] + "".join(p.capitalize() for p in parts[1:])
        if lang == "go" and old[:1].isupper() != name[:1].isupper():
            name = name[:1].swapcase() + name[1:]
        name = "_" * (len(old) - len(old.lstrip("_"))) + name
        if name not in taken and name not in _KEEP[lang]:
            taken.add(name)
            return name


def _kept_names(units: list[Unit], lang: str) -> set[str]:
    """Names a renamer leaves: imports and package names, macros and C types, dunders."""
    keep = set(_KEEP[lang])
    in_go_import = False
    for unit in units:
        code = _code(unit)
        if not code:
            continue
        first = code[0][1]
        if lang == "go":
            if first == "import":
                in_go_import = len(code) > 1 and code[1][1] == "("
            if first == "import" or in_go_import:
                for kind, text in code:
                    if kind == "string":
                        keep.add(text.strip('"`').rsplit("/", 1)[-1].replace("-", "_").split(".")[0])
                    elif kind == "ident":
                        keep.add(text)
                if first == ")":
                    in_go_import = False
                continue
        if first in ("import", "from", "package", "using", "#include") or (lang == "javascript" and any(t == "require" for _, t in code)):
            keep.update(t for k, t in code if k == "ident")
    return keep


_NOT_A_TYPE = set(
    """return new throw throws case else goto sizeof typeof instanceof import package delete await yield in of
    extends implements export default if while for switch catch do try elif not and or is from raise assert
    del pass break continue defer go select range""".split()
)
_DECLARING = {"def", "class", "function", "func", "var", "let", "const", "struct", "interface", "enum", "type",
              "typedef", "namespace", "record", "trait", "fn", "val", "as"}  # fmt: skip
_GO_TYPE_START = {"*", "[", "...", "func", "map", "chan", "struct", "interface"}


CORPUS_DECLARED: dict[str, set[str]] = {}
"""Per language, the names the whole customer corpus declares (set by the bench): a renamer working on
a project renames a class everywhere, also in the files that only use it."""


def declared_names(text: str, lang: str) -> set[str]:
    """Names ``text`` declares (functions, classes, variables, parameters, fields), read from its tokens:
    what a renaming refactoring renames. Names only used (library functions, imported modules) are not in it."""
    tokens = [t for t in lex(text, lang) if t[0] not in ("ws", "comment")]
    sig = [t for t in tokens if t[0] != "nl"]
    line_start = set()
    at = 0
    fresh = True
    for t in tokens:
        if t[0] == "nl":
            fresh = True
            continue
        if fresh:
            line_start.add(at)
            fresh = False
        at += 1
    found: set[str] = set()
    n = len(sig)
    # matching parentheses, to find parameter lists
    close: dict[int, int] = {}
    stack: list[int] = []
    for i, (k, t) in enumerate(sig):
        if k == "op" and t == "(":
            stack.append(i)
        elif k == "op" and t == ")" and stack:
            close[stack.pop()] = i
    for i, (kind, name) in enumerate(sig):
        if kind != "ident":
            continue
        before = sig[i - 1][1] if i else ""
        after = sig[i + 1][1] if i + 1 < n else ""
        if before in _DECLARING:
            found.add(name)
        elif lang == "python" and after == "=" and before in ("(", ","):
            pass  # a keyword argument names the callee's parameter, declared (or not) where the callee is
        elif after in ("=", ":=") and (before not in (".", "->", "?.") or (i >= 2 and sig[i - 2][1] in ("self", "this"))):
            found.add(name)
        elif (
            lang in ("java", "c", "javascript")
            and (sig[i - 1][0] == "ident" and before not in _NOT_A_TYPE or before in (">", "]", "*", "&"))
            and i > 0
            and after in ("=", ";", ",", ")", "[", "(", ":", "{")
        ):
            if before not in ("*", "&") or (i >= 2 and sig[i - 2][0] == "ident"):
                found.add(name)
        elif lang == "go" and i in line_start and (sig[i + 1][0] == "ident" if i + 1 < n else False or after in _GO_TYPE_START):
            found.add(name)
        elif lang in ("javascript",) and i in line_start and after in (":", "?"):
            found.add(name)
        if lang == "python" and name == "for":
            j = i + 1
            while j < n and sig[j][1] != "in":
                if sig[j][0] == "ident":
                    found.add(sig[j][1])
                j += 1
    for start, end in close.items():
        prev = sig[start - 1][1] if start else ""
        follow = sig[end + 1][1] if end + 1 < n else ""
        is_params = False
        if lang == "python":
            is_params = start >= 2 and sig[start - 2][1] == "def"
        elif lang == "go":
            is_params = any(sig[x][1] == "func" for x in range(max(0, start - 8), start))
        else:
            is_params = (follow in ("{", "=>", "throws", ":", "const", "override", "noexcept") and prev not in ("if", "for", "while", "switch", "return", "catch")) or prev == "catch"
        if not is_params:
            continue
        depth = 0
        piece: list[Token] = []
        for k in range(start + 1, end + 1):
            t = sig[k]
            if t[1] in ("(", "[", "{", "<"):
                depth += 1
            elif t[1] in (")", "]", "}", ">") and k != end:
                depth -= 1
            if depth == 0 and t[1] in (",", ")") or k == end:
                names = [x[1] for x in piece if x[0] == "ident"]
                if names:
                    if lang in ("java", "c"):
                        found.add(names[-1])
                    else:
                        found.add(names[0])
                piece = []
                continue
            if depth == 0 and t[1] in ("=", ":") and lang in ("javascript", "python"):
                names = [x[1] for x in piece if x[0] == "ident"]
                if names:
                    found.add(names[0])
                piece = [("op", "skip")]
                continue
            if piece[:1] != [("op", "skip")]:
                piece.append(t)
    return found - _KEEP[lang]


def rename(text: str, lang: str, rng: random.Random, *, consistent: bool = True, declared: set[str] | None = None) -> str:
    """Every declared name renamed (``declared``: the customer corpus's, else this text's own): the same new
    name for every occurrence, or a new one each time. Imports, library names and keywords stay."""
    tokens = lex(text, lang)
    units = units_of(tokens)
    keep = _kept_names(units, lang)
    local = declared_names(text, lang)
    if declared is None:
        declared = CORPUS_DECLARED.get(lang, set())
    own = declared | local
    significant = [i for i, (k, _) in enumerate(tokens) if k not in ("ws", "nl", "comment")]
    prev_of = {b: a for a, b in zip(significant, significant[1:])}
    taken = {t for k, t in tokens if k == "ident"}
    mapping: dict[str, str] = {}
    out = list(tokens)
    for i in significant:
        kind, name = tokens[i]
        if kind != "ident" or name in keep or name not in own:
            continue
        p = prev_of.get(i)
        if p is not None and tokens[p][1] in (".", "->", "?.", "::"):
            owner = prev_of.get(p)
            if owner is not None and tokens[owner][1] in keep:
                continue  # a module's or a library type's member: os.path, fmt.Println, std::move
            if name not in local and not (owner is not None and tokens[owner][1] in ("self", "this")):
                continue  # x.append(): a member this file does not declare is most likely a library's
        if name.startswith("__") and name.endswith("__"):
            continue
        if lang == "c" and (name.isupper() or name.endswith("_t") or name.startswith("__")):
            continue
        if consistent:
            if name not in mapping:
                mapping[name] = _new_name(name, rng, taken, lang)
            out[i] = ("ident", mapping[name])
        else:
            out[i] = ("ident", _new_name(name, rng, taken, lang))
    return "".join(t for _, t in out)


# ---------------------------------------------------------------------------- comments


def strip_comments(text: str, lang: str, rng: random.Random | None = None) -> str:
    """Comments removed (and Python docstrings); lines left empty by it go, other blank lines stay."""
    units = units_of(lex(text, lang))
    out: list[Unit] = []
    prev_code: Unit = []
    for unit in units:
        code = _code(unit)
        if lang == "python" and len(code) == 1 and code[0][0] == "string":
            opener = not prev_code or (_code(prev_code) and _code(prev_code)[-1][1] == ":")
            if opener:
                if prev_code and _code(prev_code)[-1][1] == ":":
                    out.append([("ws", _indent(unit)), ("ident", "pass")] if _indent(unit) else [("ident", "pass")])
                    prev_code = out[-1]
                continue
        if any(k == "comment" for k, _ in unit):
            kept: Unit = []
            for k, t in unit:
                if k == "comment":
                    if "\n" in t or (kept and kept[-1][0] != "ws"):
                        kept.append(("ws", " "))
                    continue
                kept.append((k, t))
            while kept and kept[-1][0] == "ws":
                kept.pop()
            if not _code(kept):
                continue
            unit = kept
        out.append(unit)
        if code:
            prev_code = unit
    if lang == "python":
        out = _drop_redundant_pass(out)
    return join(out)


def _drop_redundant_pass(units: list[Unit]) -> list[Unit]:
    """A ``pass`` put for a docstring is dropped when the block has other statements."""
    result: list[Unit] = []
    for i, unit in enumerate(units):
        code = _code(unit)
        if len(code) == 1 and code[0][1] == "pass":
            nxt = next((u for u in units[i + 1 :] if _code(u)), None)
            if nxt is not None and _indent(nxt) == _indent(unit):
                continue
        result.append(unit)
    return result


# ---------------------------------------------------------------------------- reflow


def _indent_unit(units: list[Unit]) -> str:
    widths = [len(_indent(u)) for u in units if _code(u) and _indent(u) and "\t" not in _indent(u)]
    tabs = sum(1 for u in units if _indent(u).startswith("\t"))
    if tabs > len(widths):
        return "\t"
    if not widths:
        return "    "
    small = min(w for w in widths)
    return " " * (2 if small <= 2 else 4 if small <= 4 else small)


def _reindent(units: list[Unit], old: str, new: str) -> None:
    width = 8 if old == "\t" else len(old)
    for unit in units:
        if unit and unit[0][0] == "ws":
            expanded = unit[0][1].expandtabs(8 if old == "\t" else 4)
            levels, rest = divmod(len(expanded), width)
            unit[0] = ("ws", new * levels + " " * rest)


def reflow(text: str, lang: str, rng: random.Random) -> str:
    """Another indentation width, no blank lines, continuation lines joined, some calls' arguments one a line,
    and (C family but Go) braces moved to the other style."""
    units = units_of(lex(text, lang))
    old = _indent_unit(units)
    new = "  " if old in ("    ", "\t") else "    "
    if lang == "go" and old == "\t":
        new = "    "
    _reindent(units, old, new)
    units = [u for u in units if not _is_blank(u)]
    units = _join_continuations(units, lang)
    if lang in ("javascript", "java", "c"):
        units = _move_braces(units, rng, new)
    units = _split_arguments(units, rng, new, lang)
    return join(units)


def _depth_change(unit: Unit) -> int:
    d = 0
    for k, t in unit:
        if k == "op":
            if t in ("(", "["):
                d += 1
            elif t in (")", "]"):
                d -= 1
    return d


_CONTINUING = {"(", "[", ",", "+", "-", "*", "/", "&&", "||", "=", "==", "!=", "<", ">", "<=", ">=", "?", ":", "&", "|", "."}


def _continues(prev: Unit, unit: Unit) -> bool:
    """In the C family a line is joined to the one before only when that one cannot end a statement
    and neither holds a block (Go and JavaScript insert semicolons at line ends)."""
    before, code = _code(prev), _code(unit)
    if not before or not code or any(t in ("{", "}", ";") for _, t in before[-1:] + code):
        return False
    return before[-1][1] in _CONTINUING and not any(t in ("{", "}") for _, t in code)


def _join_continuations(units: list[Unit], lang: str) -> list[Unit]:
    out: list[Unit] = []
    depth = 0
    for unit in units:
        joinable = (
            out
            and depth > 0
            and out[-1]
            and out[-1][-1][0] not in ("comment", "pre")
            and not any(k == "pre" for k, _ in unit)
            and len("".join(t for _, t in out[-1])) + len("".join(t for _, t in unit)) < 160
            and (lang == "python" or _continues(out[-1], unit))
        )
        depth = max(0, depth + _depth_change(unit))
        if joinable:
            body = unit[1:] if unit and unit[0][0] == "ws" else unit
            prev = out[-1]
            sep = [] if prev[-1][1] in ("(", "[") or (body and body[0][1] in (")", "]", ",")) else [("ws", " ")]
            out[-1] = prev + sep + body
        else:
            out.append(list(unit))
    return out


def _move_braces(units: list[Unit], rng: random.Random, step: str) -> list[Unit]:
    """K&R braces put on a line of their own (Allman), or Allman ones pulled up, whichever the file is not."""
    trailing = sum(1 for u in units if _code(u) and _code(u)[-1][1] == "{" and len(_code(u)) > 1)
    alone = sum(1 for u in units if len(_code(u)) == 1 and _code(u)[0][1] == "{")
    out: list[Unit] = []
    if trailing >= alone:
        for unit in units:
            code = _code(unit)
            if len(code) > 1 and code[-1][1] == "{" and unit[-1][1] == "{" and code[-2][1] in (")", "else", "try", "do", "finally") and rng.random() < 0.8:
                head = unit[:-1]
                while head and head[-1][0] == "ws":
                    head.pop()
                out.append(head)
                out.append([("ws", _indent(unit))] if _indent(unit) else [])
                out[-1].append(("op", "{"))
            else:
                out.append(unit)
    else:
        for unit in units:
            code = _code(unit)
            if len(code) == 1 and code[0][1] == "{" and out and _code(out[-1]) and out[-1][-1][0] not in ("comment", "pre"):
                out[-1] = out[-1] + [("ws", " "), ("op", "{")]
            else:
                out.append(unit)
    return out


def _split_arguments(units: list[Unit], rng: random.Random, step: str, lang: str) -> list[Unit]:
    out: list[Unit] = []
    for unit in units:
        if any(k in ("pre", "comment") for k, _ in unit) or rng.random() < 0.5:
            out.append(unit)
            continue
        opened = None
        depth = 0
        commas: list[int] = []
        for i, (k, t) in enumerate(unit):
            if k != "op":
                continue
            if t in ("(", "[", "{"):
                depth += 1
                if depth == 1 and t == "(" and opened is None:
                    opened = i
            elif t in (")", "]", "}"):
                depth -= 1
                if depth == 0 and opened is not None:
                    break
            elif t == "," and depth == 1 and opened is not None:
                commas.append(i)
        else:
            commas = []
        if not commas or depth != 0:
            out.append(unit)
            continue
        inner = _indent(unit) + step + step
        pieces: Unit = []
        for i, tok in enumerate(unit):
            if i in commas:
                pieces.append(tok)
                out.append(pieces)
                pieces = [("ws", inner)]
                continue
            if pieces and pieces[-1][0] == "ws" and pieces[-1][1] == inner and tok[0] == "ws":
                continue
            pieces.append(tok)
        out.append(pieces)
    return out


# ---------------------------------------------------------------------------- reorder

_CLASSY = {"class", "interface", "namespace", "object", "impl", "trait"}


def reorder(text: str, lang: str, rng: random.Random) -> str:
    """Top-level functions (and a class's methods) swapped among themselves."""
    units = units_of(lex(text, lang))
    if lang == "python":
        _shuffle_python(units, 0, len(units), rng, 0)
    else:
        starts = _brace_depths(units)
        base = min((d for d, u in zip(starts, units) if _code(u)), default=0)
        _shuffle_braces(units, starts, 0, len(units), base, rng, 0)
    return join(units)


def _py_indent(unit: Unit) -> int:
    return len(_indent(unit).expandtabs(8))


def _shuffle_python(units: list[Unit], lo: int, hi: int, rng: random.Random, level: int) -> None:
    depth = 0
    starts_at: list[int] = []
    for i in range(lo, hi):
        starts_at.append(depth)
        depth = max(0, depth + _depth_change(units[i]))
    code_at = [i for i in range(lo, hi) if _code(units[i]) and starts_at[i - lo] == 0]
    if not code_at:
        return
    base = min(_py_indent(units[i]) for i in code_at)
    blocks: list[tuple[int, int]] = []
    i_pos = 0
    while i_pos < len(code_at):
        i = code_at[i_pos]
        first = _code(units[i])[0][1]
        if _py_indent(units[i]) == base and first in ("def", "class", "async", "@"):
            j_pos = i_pos + 1
            while j_pos < len(code_at) and _code(units[code_at[j_pos - 1]])[0][1] == "@" and _py_indent(units[code_at[j_pos]]) == base:
                j_pos += 1
            while j_pos < len(code_at) and _py_indent(units[code_at[j_pos]]) > base:
                j_pos += 1
            end = code_at[j_pos] if j_pos < len(code_at) else hi
            while end - 1 > i and _is_blank(units[end - 1]):
                end -= 1
            blocks.append((i, end))
            i_pos = j_pos
        else:
            i_pos += 1
    if level == 0:
        for a, b in blocks:
            head = _code(units[a])
            if any(t == "class" for _, t in head[:3]) or any(_code(units[x])[:1] == [("ident", "class")] for x in range(a, b) if _code(units[x])):
                _shuffle_python(units, a + 1, b, rng, 1)
    _permute(units, blocks, rng)


def _permute(units: list[Unit], blocks: list[tuple[int, int]], rng: random.Random) -> None:
    """Blocks (disjoint, ascending ranges) exchanged among their places; what lies between stays."""
    if len(blocks) < 2:
        return
    contents = [units[a:b] for a, b in blocks]
    order = list(range(len(contents)))
    for _ in range(5):
        rng.shuffle(order)
        if order != sorted(order):
            break
    pieces: list[Unit] = []
    at = 0
    for slot, (a, b) in enumerate(blocks):
        pieces.extend(units[at:a])
        pieces.extend(contents[order[slot]])
        at = b
    pieces.extend(units[at:])
    units[:] = pieces


def _brace_depths(units: list[Unit]) -> list[int]:
    depths = []
    d = 0
    for u in units:
        depths.append(d)
        for k, t in u:
            if k == "op" and t == "{":
                d += 1
            elif k == "op" and t == "}":
                d -= 1
    return depths


def _paren_depths(units: list[Unit]) -> list[int]:
    depths, d = [], 0
    for u in units:
        depths.append(d)
        d = max(0, d + _depth_change(u))
    return depths


def _shuffle_braces(units: list[Unit], starts: list[int], lo: int, hi: int, base: int, rng: random.Random, level: int) -> None:
    parens = _paren_depths(units)
    blocks: list[tuple[int, int]] = []
    i = lo
    while i < hi:
        code = _code(units[i])
        if starts[i] != base or parens[i] or not code or code[0][1] in ("}", "if", "for", "while", "switch", "return", "case", "default", "else", "do", "try", "package", "import"):
            i += 1
            continue
        j = i + 1
        while j < hi and (parens[j] > 0 or starts[j] > base):
            j += 1
        deeper = any(starts[x] > base for x in range(i + 1, j))
        if deeper and j <= hi and (j == len(starts) or starts[j] == base):
            a = i
            while (
                a > lo
                and starts[a - 1] == base
                and units[a - 1]
                and (
                    not _code(units[a - 1])
                    and any(k == "comment" for k, _ in units[a - 1])
                    or (_code(units[a - 1]) and _code(units[a - 1])[0][1] == "@" and _code(units[a - 1])[-1][1] not in (";", "{", "}"))
                )
            ):
                a -= 1
            if not blocks or a >= blocks[-1][1]:
                blocks.append((a, j))
            if level == 0 and any(t in _CLASSY for _, t in code):
                _shuffle_braces(units, starts, i + 1, j - 1, base + 1, rng, 1)
        i = j
    _permute_with_depths(units, starts, blocks, rng)


def _permute_with_depths(units: list[Unit], starts: list[int], blocks: list[tuple[int, int]], rng: random.Random) -> None:
    both = [u + [("depth", str(d))] for u, d in zip(units, starts)]
    _permute(both, blocks, rng)
    units[:] = [u[:-1] for u in both]
    starts[:] = [int(u[-1][1]) for u in both]


# ---------------------------------------------------------------------------- edits

_OPERATOR_SWAP = {
    "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+", "&&": "||",
    "||": "&&", "and": "or", "or": "and", "*": "/", "===": "!==", "!==": "===", "+=": "-=", "-=": "+=",
}  # fmt: skip


def change_statements(text: str, lang: str, rng: random.Random, *, share: float = 0.1, pool: list[str] | None = None) -> str:
    """About ``share`` of the code lines changed: an operator or literal edited, a term added, or the line
    replaced by another statement of the same bracket balance (from ``pool``, lines of other code)."""
    units = units_of(lex(text, lang))
    code_lines = [i for i, u in enumerate(units) if _code(u) and not any(k in ("pre",) for k, _ in u)]
    count = max(1, round(share * len(code_lines)))
    rng.shuffle(code_lines)
    for i in code_lines:
        if count <= 0:
            break
        unit = units[i]
        code = _code(unit)
        if pool and rng.random() < 0.5:
            balance = _balance(code)
            ends = code[-1][1]
            for _ in range(20):
                candidate = rng.choice(pool)
                other = _code(lex(candidate.strip(), lang))
                if (
                    len(other) > 2
                    and _balance(other) == balance
                    and (other[-1][1] == ":") == (ends == ":")
                    and (other[0][1] in ("def", "class", "func", "function")) == (code[0][1] in ("def", "class", "func", "function"))
                    and not any("\n" in t for _, t in other)
                ):
                    units[i] = ([("ws", _indent(unit))] if _indent(unit) else []) + [("ident", candidate.strip())]
                    count -= 1
                    break
                continue
            else:
                count -= _edit_token(unit, lang, rng)
        else:
            count -= _edit_token(unit, lang, rng)
    return join(units)


def _balance(code: list[Token]) -> tuple[int, int, int]:
    count = {t: sum(1 for _, x in code if x == t) for t in "()[]{}"}
    return count["("] - count[")"], count["["] - count["]"], count["{"] - count["}"]


_RESERVED = set(
    """and as assert async await break case catch class const continue def default del do elif else enum except
    export extends finally for from func function go if import in is lambda let new nonlocal not or package pass
    raise return static struct switch throw try typedef var while with yield True False None true false null nil
    self this super public private protected void int long char""".split()
)


def _edit_token(unit: Unit, lang: str, rng: random.Random) -> bool:
    sig = [i for i, (k, _) in enumerate(unit) if k not in ("ws", "comment")]
    binary = {"ident", "number", "string"}
    spots = [
        i
        for a, i in enumerate(sig)
        if unit[i][0] in ("number",)
        or (unit[i][0] == "string" and "\n" not in unit[i][1])
        or (
            unit[i][1] in _OPERATOR_SWAP
            and a > 0
            and (unit[sig[a - 1]][0] in binary or unit[sig[a - 1]][1] in (")", "]"))
            and 0 < i < len(unit) - 1
            and unit[i - 1][0] == "ws"
            and unit[i + 1][0] == "ws"
        )
    ]
    idents = []
    calls: list[bool] = []
    for a, i in enumerate(sig):
        kind, t = unit[i]
        if t in ("(", "[", "{"):
            calls.append(t == "(" and a > 0 and unit[sig[a - 1]][0] == "ident" and unit[sig[a - 1]][1] not in _RESERVED)
        elif t in (")", "]", "}"):
            if calls:
                calls.pop()
        elif kind == "ident" and t not in _RESERVED and calls and calls[-1] and unit[sig[a - 1]][1] in ("(", ",") and a + 1 < len(sig) and unit[sig[a + 1]][1] in (")", ","):
            idents.append(i)
    if sig and unit[sig[0]][1] in ("def", "class", "func", "function", "import", "from", "package", "@", "#include"):
        idents = []
    if spots and (rng.random() < 0.6 or not idents):
        i = rng.choice(spots)
        kind, t = unit[i]
        if t in _OPERATOR_SWAP:
            unit[i] = (kind, _OPERATOR_SWAP[t])
        elif kind == "number":
            unit[i] = ("ident", f"({t} + 1)")
        else:
            unit[i] = ("ident", f"{t} + {t}")
    elif idents:
        i = rng.choice(idents)
        call = {"python": "str", "javascript": "String", "java": "String.valueOf", "c": "abs", "go": "len"}[lang]
        unit[i] = ("ident", f"{call}({unit[i][1]})")
    else:
        return False
    return True


_DEAD = {
    "python": ["{v} = {n}", "{v} = str({n})", "{v} = [{n}, {m}]", "{v} = len([{n}, {m}]) > {n}", "{v} = {{'k{n}': {m}}}"],
    "javascript": ["let {v} = {n};", "const {v} = String({n});", "var {v} = [{n}, {m}];", "let {v} = {n} * {m};"],
    "java": ["int {v} = {n};", "long {v} = {n}L * {m};", "String {v} = String.valueOf({n});", "boolean {v} = {n} > {m};"],
    "c": ["int {v} = {n};", "unsigned {v} = {n}u;", "long {v} = {n} * {m};", "int {v} = ({n} > {m});"],
    "go": ["var {v} = {n}", "var {v} = []int{{{n}, {m}}}", "var {v} = {n} * {m}", 'var {v} = "x{n}"'],
}
_DEAD_FIELD = {"javascript": ["{v} = {n};"], "java": ["private int {v} = {n};", "static final long {v} = {n}L;"], "c": ["int {v} = {n};"]}
_NO_INSERT_BEFORE = {"else", "elif", "except", "finally", "catch", "while", ")", "]", ",", ".", "?", ":", "case", "default", "&&", "||", "+"}


def insert_dead_code(text: str, lang: str, rng: random.Random, *, share: float = 0.25) -> str:
    """``share`` more lines: plausible unused statements, only where a statement may stand."""
    units = units_of(lex(text, lang))
    gaps = _statement_gaps(units, lang)
    code = sum(1 for u in units if _code(u))
    if not gaps:
        return text
    inserts: dict[int, list[Unit]] = {}
    for n in range(max(1, round(share * code))):
        at, indent, field = rng.choice(gaps)
        templates = _DEAD_FIELD[lang] if field else _DEAD[lang]
        name = f"unused_{n}" if lang != "go" else f"unused{n}"
        if lang == "javascript" or lang == "java":
            name = f"unused{n}"
        line = rng.choice(templates).format(v=name, n=rng.randint(0, 999), m=rng.randint(1, 99))
        inserts.setdefault(at, []).append(([("ws", indent)] if indent else []) + [("ident", line)])
    out: list[Unit] = []
    for i, unit in enumerate(units):
        out.extend(inserts.get(i, []))
        out.append(unit)
    out.extend(inserts.get(len(units), []))
    return join(out)


def _brace_kind(before: list[str], prev_last: str, lang: str) -> str:
    """What a ``{`` opens, from the tokens before it on its line (and the previous line's last token)."""
    if lang == "javascript" and any(x in ("interface", "type", "enum") for x in before[:3]):
        return "data"
    if lang == "go" and any(x in ("struct", "interface") for x in before):
        return "data"
    if any(x in _CLASSY for x in before) and not any(x in ("=", "new", "(") for x in before[-3:]):
        return "class"
    if not before:
        return "body" if prev_last in (")", "else", "try", "do", "finally", "=>") else "data"
    last = before[-1]
    if last in (")", "else", "try", "do", "finally", "=>", "const", "override", "noexcept"):
        return "body"
    if lang == "go" and ("func" in before or before[0] in ("if", "for", "switch", "select", "else", "go", "defer")):
        return "body"
    if lang in ("javascript", "java", "c") and ")" in before and last not in ("=", ",", "(", "[", ":", "return", "?"):
        return "body"  # a return type or a throws clause between the parameters and the brace
    return "data"


def _statement_gaps(units: list[Unit], lang: str) -> list[tuple[int, str, bool]]:
    """``(unit index, indent, in a class body)`` before which a statement may be inserted."""
    gaps: list[tuple[int, str, bool]] = []
    stack: list[str] = []  # open brackets: "(", "[", or what a brace opened: body, class, data
    prev_code: list[Token] = []
    prev_code_unit: Unit = []
    seen_func = False
    for i, unit in enumerate(units):
        code = _code(unit)
        if code and code[0][1] == "func":
            seen_func = True
        where = stack[-1] if stack else "top"
        if code and lang == "python" and not stack:
            first = code[0][1]
            last = prev_code[-1][1] if prev_code else ""
            ok = first not in _NO_INSERT_BEFORE and last != "\\" and (not prev_code or prev_code[0][1] != "@")
            if ok and not any(t == "__future__" for _, t in code):
                gaps.append((i, _indent(unit), False))
        elif code and lang != "python" and where in ("top", "body", "class"):
            first = code[0][1]
            last = prev_code[-1][1] if prev_code else ""
            ends_ok = not prev_code or last in (";", "{", "}") or (lang == "go" and last not in (",", "(", "+", "-", "*", "/", "=", "&&", "||", "."))
            indent = _indent(prev_code_unit) if first == "}" and prev_code else _indent(unit)
            good_place = where in ("body", "class") or (where == "top" and lang != "java")
            if lang == "go":
                good_place = where == "body" or (where == "top" and seen_func)
            if lang == "javascript" and where == "top" and first in ("case", "default"):
                good_place = False
            if ends_ok and good_place and first not in _NO_INSERT_BEFORE and code[0][0] != "pre" and first != "@" and not (lang == "go" and first == "}"):
                gaps.append((i, indent, where == "class" and lang != "go"))
        for j, (k, t) in enumerate(code):
            if k != "op":
                continue
            if t in ("(", "[") or (lang == "python" and t == "{"):
                stack.append(t)
            elif t in (")", "]", "}"):
                if stack:
                    stack.pop()
            elif t == "{":
                before = [x for _, x in code[:j]]
                stack.append(_brace_kind(before, prev_code[-1][1] if prev_code else "", lang))
        if code:
            prev_code = code
            prev_code_unit = unit
    if lang == "python":
        future = [i for i, u in enumerate(units) if any(t == "__future__" for _, t in u)]
        gaps = [g for g in gaps if not future or g[0] > future[-1]]
    return gaps


# ---------------------------------------------------------------------------- variants

Transform = Callable[[str, str, random.Random], str]


def combo(text: str, lang: str, rng: random.Random) -> str:
    """Renamed, reflowed, comments stripped and functions reordered, as a careful leaker would."""
    text = strip_comments(text, lang)
    text = reorder(text, lang, rng)
    text = rename(text, lang, rng)
    return reflow(text, lang, rng)


def rename_reflow(text: str, lang: str, rng: random.Random) -> str:
    return reflow(rename(text, lang, rng), lang, rng)


VARIANTS: dict[str, Transform] = {
    "verbatim": lambda text, lang, rng: text,
    "renamed": rename,
    "renamed (each use)": lambda text, lang, rng: rename(text, lang, rng, consistent=False),
    "reflowed": reflow,
    "no comments": strip_comments,
    "reordered": reorder,
    "renamed+reflowed": rename_reflow,
    "10% changed": change_statements,
    "25% dead code": insert_dead_code,
    "combined": combo,
}


def code_line_flags(text: str, lang: str) -> list[bool]:
    """For each line: does a code token start on it (not a comment, a docstring's inner lines or blank)."""
    flags = [False] * (text.count("\n") + 1)
    line = 0
    for kind, piece in lex(text, lang):
        if kind not in ("ws", "nl", "comment") and not (kind == "string" and "\n" in piece and lang == "python"):
            flags[line] = True
        line += piece.count("\n")
    return flags


def excerpt(text: str, size: int, rng: random.Random, lang: str) -> tuple[int, str] | None:
    """A window of ``size`` lines (first line, text) of which at least half hold code, or None."""
    lines = text.split("\n")
    if len(lines) < size:
        return None
    code_lines = code_line_flags(text, lang)
    for _ in range(10):
        start = rng.randrange(len(lines) - size + 1)
        if sum(code_lines[start : start + size]) * 2 >= size:
            return start + 1, "\n".join(lines[start : start + size]) + "\n"
    return None


def _self_check() -> None:
    samples = {
        "python": 'import os\n\n\ndef add(a, b):\n    """Sum."""\n    return a + b  # plus\n\n\nclass K:\n'
        '    def m(self, x):\n        y = add(x,\n                1)\n        return os.path.join(str(y), "z")\n',
        "go": 'package main\n\nimport "fmt"\n\n// Add adds.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n\nfunc main() {\n\tfmt.Println(Add(1, 2))\n}\n',
        "javascript": "const re = /a\\/b/g;\nfunction f(x, y) {\n  return x / y; // div\n}\nclass A {\n  m() { return f(1, 2); }\n}\n",
    }
    for lang, text in samples.items():
        assert "".join(t for _, t in lex(text, lang)) == text, lang
        for name, transform in VARIANTS.items():
            result = transform(text, lang, random.Random(3))
            if lang == "python":
                compile(result, name, "exec")
    for lang, text in samples.items():
        assert "unused" in insert_dead_code(text, lang, random.Random(1))


if __name__ == "__main__":
    _self_check()
    print("ok")
