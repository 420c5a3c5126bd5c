"""Prompt template sets, stored as data files (`templates/<name>.txt`, one template per line).

Keeping them as data (not Python lists) makes the exact strings reviewable and diffable against the
official repositories; a template set is a vocabulary-independent config value.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def available_templates() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt")))


@lru_cache(maxsize=None)
def get_templates(name: str) -> tuple[str, ...]:
    """The templates of set `name` (e.g. "catseg", "imagenet80", "tcl_custom"), in file order.

    Lines are taken verbatim apart from the newline (no stripping: a trailing space or a missing final
    period is part of a method's recipe); empty lines are skipped. Every template has exactly one "{}".
    """
    path = TEMPLATE_DIR / f"{name}.txt"
    if not path.is_file():
        raise KeyError(f"Unknown template set {name!r}; available: {', '.join(available_templates())}")
    templates = tuple(line for line in path.read_text(encoding="utf-8").split("\n") if line)
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"Template {t!r} in {path} must contain exactly one '{{}}'")
    return templates
