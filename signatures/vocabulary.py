"""The names a corpus uses but never defines: what a renamed copy still spells the same way.

A leaker's renamer changes the names the customer's code declares (variables, parameters,
functions, classes, fields). It cannot change the names the code takes from elsewhere
(``len``, ``append``, ``println``, ``fmt.Errorf``, ``useState``, the modules it imports)
without breaking the copy. Those names keep their own token class in the fingerprint index
(agent/scanning/tokens.py ``Lexicon``), which makes a k-gram of the customer's code far
less like a k-gram of anybody else's.

Which names are declared is read with patterns, not a parser, over every language at
once (the corpus is not sorted by language). Every pattern errs on one side: a name it
wrongly takes for declared only loses a little specificity, while a declared name taken
for a library one would let renaming break matches. So a name is in the vocabulary when
it occurs in at least ``MIN_FILES`` corpus files and no pattern ever saw it declared.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

from agent.scanning.tokens import KEYWORDS, MAX_VOCABULARY

MIN_FILES = 2
MIN_LENGTH = 2
MAX_LENGTH = 100
"""Longer "names" are generated code or data; an index's vocabulary holds none (fpindex.py checks)."""
_NAME = rb"[A-Za-z_$][\w$]*"
IDENTIFIER = re.compile(rb"(?<![\w$\x80-\xff])[A-Za-z_$\x80-\xff][\w$\x80-\xff]*")
"""A name where a token can start: not the ``xFF`` of ``0xFF`` or the ``e10`` of ``1e10``."""
_KEYWORD_BYTES = frozenset(k.encode() for k in KEYWORDS)
_NOT_A_TYPE = frozenset(
    b"import return yield raise await not in is and or else from package goto case throw new typeof delete print echo"
    b" global nonlocal assert del pass break continue if elif while for with except try finally when where range"
    b" throws extends implements instanceof defer go".split()
)
# Each pattern's groups hold names (or lists of names) that the code declares.
_DECLARATIONS = [
    # def f / class C / func F / var v / let v / const c / struct S / type T ...
    re.compile(rb"\b(?:def|class|function|func|var|let|const|struct|interface|enum|type|fn|val|typedef|namespace|trait|impl|union|record)\s+[*&]?\s*(" + _NAME + rb")"),
    # assignments, including := and the names before it in a, b, c = ...
    re.compile(rb"(?<![:.\w$])(?<!: )((?:" + _NAME + rb"\s*,\s*)*" + _NAME + rb")(?:[ \t]*:[^=\n:]{1,80}?)?\s*(?::=|(?<![=!<>])=(?![=>]))"),
    # ... as name (imports, except, with)
    re.compile(rb"\bas\s+(" + _NAME + rb")"),
    # for a, b in / for (x of ...)
    re.compile(rb"\bfor\b([^\n:;{]{0,200}?)\b(?:in|of)\b"),
    # lambda params:
    re.compile(rb"\blambda\b([^:\n]{0,200}):"),
    # signatures: the parameter lists after def/function/func/fn (and a Go method's receiver)
    _SIGNATURE := re.compile(
        rb"\b(?:def|function|func|fn)[ \t]+(?:" + _NAME + rb")?[ \t]*(\([^)]{0,600}\)(?:[ \t]*" + _NAME + rb"[ \t]*\([^)]{0,600}\))?)"
    ),
    # arrow functions: (a, b) => and a =>
    re.compile(rb"\(([^()\n]{0,300})\)\s*(?::[^=\n]{0,100})?=>"),
    re.compile(rb"(" + _NAME + rb")\s*=>"),
    # typed declarations: Type name; Type<T> name = ...; Type *name, ...; name Type (Go) -- both names
    _TYPED := re.compile(
        rb"(" + _NAME + rb")(?:\s*<[^<>\n]{0,120}>)?(?:\s*\[\s*\])*(?:[ \t]+[*&]*|[*&]+[ \t]+)(" + _NAME + rb")[ \t]*(?=[;,=)(\[:{]|\r?\n)"
    ),
    # #define NAME
    re.compile(rb"#\s*define\s+(" + _NAME + rb")"),
    # catch (E e) / except E as e are covered above; C-style for (int i = ...) by assignments
]


_BRACKETED = re.compile(rb"\[[^\[\]]*\]|<[^<>()]*>")
_PARAMETER = re.compile(rb"(?:^|[(,])\s*[*&.]*\s*(" + _NAME + rb")")
_COMMENTS_AND_STRINGS = re.compile(
    rb"/\*.*?(?:\*/|\Z)|//[^\n]*|#(?!\s*(?:include|define|undef|ifdef|ifndef|if|elif|else|endif|pragma|import)\b)[^\n]*"
    rb'|""".*?(?:"""|\Z)'
    rb"|'''.*?(?:'''|\Z)"
    rb'|"(?:[^"\\\n]|\\.)*"?'
    rb"|'(?:[^'\\\n]|\\.)*'?"
    rb"|`(?:[^`\\]|\\.)*`?",
    re.S,
)
"""What the tokenizer reads as comments and literals: words there are neither used nor declared."""


def vocabulary(texts: Iterable[bytes]) -> list[str]:
    """The names of ``texts`` (one per corpus file) that occur in ``MIN_FILES`` files and are never declared.

    Most widespread first, at most ``MAX_VOCABULARY``; the order is deterministic.
    """
    spread: collections.Counter[bytes] = collections.Counter()
    declared: set[bytes] = set()
    for text in texts:
        text = _COMMENTS_AND_STRINGS.sub(b'""', text)
        spread.update(set(IDENTIFIER.findall(text)))
        for pattern in _DECLARATIONS:
            for found in pattern.findall(text):
                groups = found if isinstance(found, tuple) else (found,)
                if pattern is _TYPED and groups[0] in _NOT_A_TYPE:
                    continue  # return len(...), not isinstance(...): a use, not a declaration
                for group in groups:
                    # Of a parameter list, the names that start a parameter (not its annotation's types).
                    if pattern is _SIGNATURE:
                        declared.update(_PARAMETER.findall(_BRACKETED.sub(b"", _BRACKETED.sub(b"", group))))
                    else:
                        declared.update(IDENTIFIER.findall(group))
    names = [
        name
        for name, files in spread.items()
        if files >= MIN_FILES and MIN_LENGTH <= len(name) <= MAX_LENGTH and name not in declared and name not in _KEYWORD_BYTES
    ]
    names.sort(key=lambda n: (-spread[n], n))
    return [n.decode("latin-1") for n in names[:MAX_VOCABULARY]]
