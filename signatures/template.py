"""Rendering rule templates (templates/*.yar.in) with a customer's own details."""

from __future__ import annotations

import os
import re

from agent.events import SEVERITIES

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
COPYRIGHT_TEMPLATE = os.path.join(TEMPLATES_DIR, "copyright_owner.yar.in")


def yara_text(value: str) -> str:
    """Escape ``value`` for use inside a YARA text string or meta value."""
    if any(ord(c) < 0x20 for c in value):
        raise ValueError("owner name must not contain control characters")
    return value.replace("\\", "\\\\").replace('"', '\\"')


def rule_id(owner: str) -> str:
    """A YARA identifier derived from the owner name (letters, digits, underscores)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", owner).strip("_").lower()
    if not slug:
        raise ValueError("owner name needs at least one letter or digit")
    return slug[:100]


def render_copyright_rule(owner: str, *, severity: str = "high", template: str = COPYRIGHT_TEMPLATE) -> str:
    """The copyright rule for ``owner``, ready to save as a pack."""
    owner = owner.strip()
    if len(owner) < 3:
        raise ValueError("owner name must be at least 3 characters to be specific")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    with open(template, encoding="utf-8") as f:
        text = f.read()
    return (
        text.replace("@RULE_ID@", rule_id(owner))
        .replace("@SEVERITY@", severity)
        .replace("@OWNER@", yara_text(owner))
    )
