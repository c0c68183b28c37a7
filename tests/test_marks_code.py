"""Code carriers (agent/marks/code.py): marks only in comments, the code still compiles, the payload reads back."""

from __future__ import annotations

import ast
import io
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from agent.marks import code, text
from agent.marks import payload as pl

PAYLOAD = bytes.fromhex("5a6b7c8d9e0f")

PROSE = (
    "This module keeps the supplier price tables in memory and refreshes them every hour from the "
    "procurement service. Every price is stored together with the currency and the date it was agreed, "
    "so that a report can explain where each number came from. The cache is shared by every worker of "
    "the process and protected by a single lock, because updates are rare and reads are frequent. "
    "When the service cannot be reached, the previous tables stay in place and an error is logged once. "
)


def comment_block(prefix: str, repeat: int = 3) -> str:
    """PROSE wrapped into lines that start with ``prefix``."""
    words = (PROSE * repeat).split()
    lines = [" ".join(words[k : k + 10]) for k in range(0, len(words), 10)]
    return "\n".join(f"{prefix}{line}".rstrip() for line in lines) + "\n"


def found(marked: str) -> dict[str, bytes]:
    return {item.carrier: item.payload for item in text.read_text(marked)}


def code_tokens(source: str) -> list[str]:
    """Python tokens other than comments, blank-line breaks and docstrings (their visible text kept)."""
    out = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL):
            continue
        out.append(text.visible(token.string) if token.type == tokenize.STRING else token.string)
    return out


PY_SOURCE = (
    "#!/usr/bin/env python3\n"
    "# -*- coding: utf-8 -*-\n"
    '"""Supplier price tables.\n\n' + comment_block("") + '"""\n\n'
    "import re  # type: ignore\n"
    "\n" + comment_block("# ") + "PATTERN = re.compile(r'# not a comment: price per unit')\n"
    "TEMPLATE = '''\n# also not a comment, part of a string about the supplier price\n'''\n\n\n"
    "def price(table: dict[str, float], item: str) -> float:\n"
    '    """Return the agreed price of one item, or zero when the supplier never quoted it.\n\n'
    "    >>> price({'apple pie': 2.5}, 'apple pie')\n"
    "    2.5\n"
    "    >>> price({}, 'apple pie')\n"
    "    0.0\n\n"
    "    Every price was agreed with the supplier for a year and is kept in the procurement tables.\n"
    '    """\n'
    "    # the table is read without the lock: a stale price is acceptable here\n"
    "    return table.get(item, 0.0)  # trailing comments are left alone\n"
)


def test_python_marks_only_comments_and_docstrings() -> None:
    marked = code.mark_code(PY_SOURCE, PAYLOAD, name="prices.py")
    ast.parse(marked)
    assert code_tokens(marked) == code_tokens(PY_SOURCE)
    lines = marked.splitlines()
    assert lines[:2] == PY_SOURCE.splitlines()[:2]
    assert lines[2] == "# ref: " + pl.token(PAYLOAD)
    for unchanged in ("import re  # type: ignore", "# also not a comment, part of a string about the supplier price", "    return table.get(item, 0.0)  # trailing comments are left alone"):
        assert unchanged in lines
    assert found(marked) == {pl.TOKEN: PAYLOAD, pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}
    assert text.visible(marked).replace(lines[2] + "\n", "") == PY_SOURCE


def test_python_doctests_still_pass(tmp_path: Path) -> None:
    marked = code.mark_code(PY_SOURCE, PAYLOAD, name="prices.py")
    assert ">>> price({'apple pie': 2.5}, 'apple pie')\n    2.5\n    >>> price({}, 'apple pie')\n    0.0\n" in marked
    path = tmp_path / "prices.py"
    path.write_text(marked, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "doctest", "-v", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_python_stdlib_files_still_parse_to_the_same_tree() -> None:
    import json.decoder
    import textwrap

    for module in (textwrap, json.decoder):
        source = Path(str(module.__file__)).read_text(encoding="utf-8")
        marked = code.mark_code(source, PAYLOAD, name=Path(str(module.__file__)).name)
        assert code_tokens(marked) == code_tokens(source)
        assert ast.dump(ast.parse(text.visible(marked))) == ast.dump(ast.parse(source))
        assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


C_SOURCE = (
    "/*\n" + comment_block(" * ") + " */\n"
    "#include <stdio.h>\n"
    "#include <string.h>\n\n" + comment_block("// ", 1) + 'static const char *fake = "// not a comment, the supplier price /* either */";\n'
    "static const char quote = '\"';\n"
    'static const char *after = "a \\"quoted\\" price // still a string";\n\n'
    "int main(void) {\n"
    "    /* the cache is read once at start-up, when the price tables are loaded */\n"
    '    printf("%s %c %s\\n", fake, quote, after);  // trailing\n'
    "    return (int)strlen(fake) - 40;\n"
    "}\n"
)


def preprocessed(path: Path) -> str:
    """The C file without its comments (gcc's own lexer), macros left unexpanded."""
    done = subprocess.run(["gcc", "-fpreprocessed", "-dD", "-E", "-P", str(path)], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_compiles_and_only_comments_changed(tmp_path: Path) -> None:
    original = tmp_path / "original.c"
    original.write_text(C_SOURCE, encoding="utf-8")
    marked_path = tmp_path / "marked.c"
    marked = code.mark_code(C_SOURCE, PAYLOAD, name="prices.c")
    marked_path.write_text(marked, encoding="utf-8")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-fsyntax-only", str(marked_path)], check=True)
    assert preprocessed(marked_path) == preprocessed(original)
    assert found(marked) == {pl.TOKEN: PAYLOAD, pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}
    assert marked.startswith("/* ref: " + pl.token(PAYLOAD) + " */\n")


JS_SOURCE = (
    "// @ts-check\n"
    "'use strict';\n" + comment_block("// ") + "const re = /[/`]+/g;\n"
    "const page = `\n// inside a template literal, the supplier price\n${'x'}`;\n"
    "/**\n" + comment_block(" * ", 1) + " */\n"
    "function price(table, item) {\n"
    "  return (table[item] || 0) / 2; // trailing\n"
    "}\n"
    "module.exports = { price, re, page };\n"
)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_javascript_parses_and_strings_stay(tmp_path: Path) -> None:
    marked = code.mark_code(JS_SOURCE, PAYLOAD, name="prices.js")
    path = tmp_path / "prices.js"
    path.write_text(marked, encoding="utf-8")
    subprocess.run(["node", "--check", str(path)], check=True)
    printed = subprocess.run(["node", "-e", f"const m = require({str(path)!r}); console.log(JSON.stringify([m.re.source, m.page]))"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == '["[/`]+","\\n// inside a template literal, the supplier price\\nx"]'
    assert "// @ts-check\n'use strict';\n" in marked
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


SHELL_SOURCE = (
    "#!/bin/sh\n" + comment_block("# ", 1) + "cat <<EOF\n# a heredoc line about the supplier price tables and the cache\nEOF\n"
    "cat <<-'END'\n\t# another heredoc line about the refresh of the supplier price\n\tEND\n"
    'echo "$# arguments"\n'
)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_heredocs_are_not_comments(tmp_path: Path) -> None:
    marked = code.mark_code(SHELL_SOURCE, PAYLOAD, name="refresh.sh")
    path = tmp_path / "refresh.sh"
    path.write_text(marked, encoding="utf-8")
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert marked.startswith("#!/bin/sh\n# ref: ")
    out = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=True).stdout
    assert out == subprocess.run(["bash", "-c", SHELL_SOURCE], capture_output=True, text=True, check=True).stdout


RUST_SOURCE = (
    "#![allow(dead_code)]\n" + comment_block("// ", 1) + "/* outer /* nested comment about the supplier */ still the outer comment */\n"
    "fn price<'a>(table: &'a [(&'a str, f64)], item: &str) -> f64 {\n"
    "    let _c = '\"';\n"
    '    let _raw = r#"\n// inside a raw string about the supplier price\n"#;\n'
    "    table.iter().find(|(name, _)| *name == item).map(|(_, p)| *p).unwrap_or(0.0)\n"
    "}\n"
)


@pytest.mark.skipif(shutil.which("rustc") is None, reason="needs rustc")
def test_rust_compiles(tmp_path: Path) -> None:
    marked = code.mark_code(RUST_SOURCE, PAYLOAD, name="prices.rs")
    path = tmp_path / "prices.rs"
    path.write_text(marked, encoding="utf-8")
    subprocess.run(["rustc", "--crate-type=lib", "--emit=metadata", "-o", str(tmp_path / "out.rmeta"), str(path)], check=True, capture_output=True)
    assert "// inside a raw string about the supplier price\n" in marked
    assert marked.startswith("// ref: ")
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


JAVA_SOURCE = (
    "package com.example.prices;\n\n" + comment_block("// ", 1) + "/**\n" + comment_block(" * ", 1) + " */\n"
    "public class Prices {\n"
    '    static final String BLOCK = """\n        // inside a text block about the supplier price\n        """;\n'
    "    static double price(java.util.Map<String, Double> table, String item) {\n"
    "        return table.getOrDefault(item, 0.0);\n"
    "    }\n"
    "}\n"
)


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs javac")
def test_java_compiles(tmp_path: Path) -> None:
    marked = code.mark_code(JAVA_SOURCE, PAYLOAD, name="Prices.java")
    path = tmp_path / "Prices.java"
    path.write_text(marked, encoding="utf-8")
    subprocess.run(["javac", "-encoding", "UTF-8", "-d", str(tmp_path / "classes"), str(path)], check=True, capture_output=True)
    assert "        // inside a text block about the supplier price\n" in marked
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


def test_go_directives_and_raw_strings_stay() -> None:
    source = "//go:build linux\n\n" + comment_block("// ", 1) + "package prices\n\nconst doc = `\n// a raw string about the supplier price\n`\n"
    marked = code.mark_code(source, PAYLOAD, name="prices.go")
    assert "\n//go:build linux\n\n" in marked
    assert "`\n// a raw string about the supplier price\n`" in marked
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


def test_sql_and_php() -> None:
    sql = comment_block("-- ", 1) + "SELECT '-- not a comment' AS price;\n"
    marked = code.mark_code(sql, PAYLOAD, name="prices.sql")
    assert marked.startswith("-- ref: ") and "SELECT '-- not a comment' AS price;\n" in marked
    php = "<html>\n<?php\n" + comment_block("// ", 1) + "echo 'price';\n?>\n<p>the supplier price list</p>\n"
    marked = code.mark_code(php, PAYLOAD, name="prices.php")
    assert marked.startswith("<html>\n<?php\n// ref: ") and marked.endswith("?>\n<p>the supplier price list</p>\n")
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs sqlite3")
def test_sql_still_runs(tmp_path: Path) -> None:
    sql = comment_block("-- ", 1) + "/*\n" + comment_block("", 1) + "*/\nSELECT '-- not a comment' AS price;\n"
    marked = code.mark_code(sql, PAYLOAD, name="prices.sql")
    done = subprocess.run(["sqlite3", ":memory:"], input=marked, capture_output=True, text=True, check=True)
    assert done.stdout == "-- not a comment\n"


def test_language_by_name_and_unknown_languages_refused() -> None:
    assert code.language("src/Main.java") == "java"
    assert code.language("lib/x.TSX") == "typescript"
    assert code.language("a/b/Makefile") == "shell"
    assert code.language("notes.txt") is None
    assert code.language("README") is None
    with pytest.raises(pl.Unmarkable):
        code.mark_code("some text", PAYLOAD, name="notes.txt")


def test_reformatting_and_renaming_keep_the_zero_width_frames_and_the_canary(tmp_path: Path) -> None:
    marked = code.mark_code(PY_SOURCE, PAYLOAD, name="prices.py")
    black = shutil.which("black") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "black")
    path = tmp_path / "prices.py"
    path.write_text(marked, encoding="utf-8")
    subprocess.run([black, "-q", "--line-length", "60", str(path)], check=True)
    reformatted = path.read_text(encoding="utf-8")
    assert reformatted != marked
    assert found(reformatted)[pl.ZERO_WIDTH] == PAYLOAD
    renamed = reformatted.replace("price", "cost").replace("table", "tbl").replace("PATTERN", "RX")
    assert found(renamed)[pl.ZERO_WIDTH] == PAYLOAD
    assert found(renamed)[pl.TOKEN] == PAYLOAD


def test_a_comment_heavy_excerpt_holds_a_frame() -> None:
    marked = code.mark_code(PY_SOURCE, PAYLOAD, name="prices.py")
    lines = marked.splitlines(keepends=True)
    start = next(k for k, line in enumerate(lines) if line.startswith("import re"))
    excerpt = "".join(lines[start : start + 20])
    assert pl.token(PAYLOAD) not in excerpt
    assert found(excerpt)[pl.ZERO_WIDTH] == PAYLOAD


def test_remarking_code_leaves_one_payload() -> None:
    once = code.mark_code(PY_SOURCE, bytes.fromhex("0102030405ff"), name="prices.py")
    twice = code.mark_code(once, PAYLOAD, name="prices.py")
    assert found(twice) == {pl.TOKEN: PAYLOAD, pl.ZERO_WIDTH: PAYLOAD, pl.HOMOGLYPH: PAYLOAD}
    assert twice.count(" ref: DLPM1-") == 1
    ast.parse(twice)


@pytest.mark.skipif(shutil.which("clang-format") is None or shutil.which("gcc") is None, reason="needs clang-format and gcc")
def test_clang_format_keeps_the_frames_and_the_code_compiles(tmp_path: Path) -> None:
    marked = code.mark_code(C_SOURCE, PAYLOAD, name="prices.c")
    path = tmp_path / "prices.c"
    path.write_text(marked, encoding="utf-8")
    style = "{BasedOnStyle: LLVM, ColumnLimit: 50, ReflowComments: true}"
    formatted = subprocess.run(["clang-format", f"--style={style}", str(path)], capture_output=True, text=True, check=True).stdout
    assert formatted != marked
    path.write_text(formatted, encoding="utf-8")
    subprocess.run(["gcc", "-std=c99", "-fsyntax-only", str(path)], check=True)
    assert found(formatted)[pl.ZERO_WIDTH] == PAYLOAD
    assert found(formatted)[pl.TOKEN] == PAYLOAD


def test_dockerfile_parser_directives_stay_first() -> None:
    source = "# syntax=docker/dockerfile:1\n# escape=`\n" + comment_block("# ", 1) + "FROM debian:12\nRUN echo '# not a comment'\n"
    marked = code.mark_code(source, PAYLOAD, name="build/Dockerfile")
    assert marked.startswith("# syntax=docker/dockerfile:1\n# escape=`\n# ref: " + pl.token(PAYLOAD) + "\n")
    assert "RUN echo '# not a comment'\n" in marked
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD


@pytest.mark.parametrize("expression", ["1 + " * 50_000 + "1", "-" * 50_000 + "1"], ids=["long-sum", "deep-unary"])
def test_python_the_parser_cannot_nest_falls_back_to_the_comment_scanner(expression: str) -> None:
    source = comment_block("# ") + f"x = {expression}\n"
    marked = code.mark_code(source, PAYLOAD, name="deep.py")
    assert marked.endswith(f"x = {expression}\n")
    assert found(marked)[pl.TOKEN] == PAYLOAD
    assert found(marked)[pl.ZERO_WIDTH] == PAYLOAD
    assert code.comment_ranges(source, "deep.py")
