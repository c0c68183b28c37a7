"""Deterministic benchmark inputs: a tree of source-like text plus binaries, and rule packs
whose literal strings are lines of that text (as signatures built from a customer's code are)."""

from __future__ import annotations

import itertools
import os
import random

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_KEYWORDS = ["def", "return", "if", "for", "while", "class", "import", "const", "let", "func", "var", "static"]


def _vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Identifier-like words; a Zipf-like pick makes some common, most rare, as in real code."""
    return ["".join(rng.choices(_LETTERS, k=rng.randint(3, 10))) for _ in range(size)]


_VOCAB = _vocabulary(random.Random(0))
_CUMULATIVE = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(_VOCAB))))


def _word(rng: random.Random) -> str:
    return rng.choices(_VOCAB, cum_weights=_CUMULATIVE)[0]


def _line(rng: random.Random) -> str:
    indent = " " * (4 * rng.randint(0, 3))
    kind = rng.random()
    a, b, c = _word(rng), _word(rng), _word(rng)
    if kind < 0.3:
        return f"{indent}{a}_{b} = {c}({_word(rng)}, {rng.randint(0, 9999)})"
    if kind < 0.5:
        return f"{indent}{rng.choice(_KEYWORDS)} {a}{b.capitalize()}({c}) {{"
    if kind < 0.7:
        return f"{indent}# {a} {b} {c} {_word(rng)} {_word(rng)}"
    if kind < 0.85:
        return f"{indent}return {a}.{b}[{rng.randint(0, 64)}] + {c}"
    return f'{indent}log("{a} {b}: %s", {c})'


def line_pool(seed: int = 1, size: int = 200_000) -> list[str]:
    rng = random.Random(seed)
    return [_line(rng) for _ in range(size)]


def make_tree(root: str, *, text_mb: int = 200, binary_mb: int = 16, seed: int = 1) -> list[str]:
    """Write the corpus under ``root`` (reused when already complete); return its files."""
    marker = os.path.join(root, f".complete-{text_mb}-{binary_mb}-{seed}")
    if os.path.exists(marker):
        return list_files(root)
    rng = random.Random(seed)
    pool = line_pool(seed)
    written = 0
    index = 0
    target = text_mb * 1_000_000
    while written < target:
        folder = os.path.join(root, "src", f"pkg{index // 100:03d}")
        os.makedirs(folder, exist_ok=True)
        lines = rng.choices(pool, k=rng.randint(100, 1500))
        body = ("\n".join(lines) + "\n").encode()
        with open(os.path.join(folder, f"mod{index:05d}.py"), "wb") as f:
            f.write(body)
        written += len(body)
        index += 1
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    left = binary_mb * 1_000_000
    index = 0
    while left > 0:
        size = min(left, rng.randint(256_000, 2_000_000))
        with open(os.path.join(root, "bin", f"blob{index:03d}.bin"), "wb") as f:
            f.write(rng.randbytes(size))
        left -= size
        index += 1
    open(marker, "w").close()
    return list_files(root)


def list_files(root: str) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(folder, n) for n in sorted(names) if not n.startswith("."))
    return out


def write_rules(directory: str, *, rules: int = 500, strings: int = 20, packs: int = 10, seed: int = 2) -> str:
    """``rules`` rules of ``strings`` literal lines each, spread over ``packs`` files."""
    rng = random.Random(seed)
    candidates = sorted({line.strip() for line in line_pool(1) if len(line.strip()) >= 20})
    chosen = rng.sample(candidates, rules * strings)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    per_pack = rules // packs
    for p in range(packs):
        parts = []
        for r in range(p * per_pack, (p + 1) * per_pack):
            lits = chosen[r * strings : (r + 1) * strings]
            body = "\n".join(f'        $s{i} = "{_escape(s)}"' for i, s in enumerate(lits))
            parts.append(
                f"rule code_{r:04d}\n{{\n    meta:\n        severity = \"high\"\n        category = \"source_code\"\n"
                f"    strings:\n{body}\n    condition:\n        8 of them\n}}\n"
            )
        with open(os.path.join(directory, f"pack{p:02d}.yar"), "w") as f:
            f.write("\n".join(parts))
    return directory


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
