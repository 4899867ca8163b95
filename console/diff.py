"""A word-level diff of chosen vs rejected, for the pairs table (pure)."""

from __future__ import annotations

import difflib
import re
from typing import Literal

Op = Literal["same", "added", "removed"]
_TOKENS = re.compile(r"\s+|[^\s]+")


def word_diff(rejected: str, chosen: str) -> list[tuple[Op, str]]:
    """Runs of words: ``removed`` from the rejected answer, ``added`` in the chosen one, ``same`` in both.

    Whitespace travels with the words, so joining the ``same`` and ``added`` runs gives ``chosen`` back,
    and joining ``same`` and ``removed`` gives ``rejected``."""
    a, b = _TOKENS.findall(rejected), _TOKENS.findall(chosen)
    out: list[tuple[Op, str]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _push(out, "same", "".join(a[i1:i2]))
            continue
        if tag in ("replace", "delete"):
            _push(out, "removed", "".join(a[i1:i2]))
        if tag in ("replace", "insert"):
            _push(out, "added", "".join(b[j1:j2]))
    return out


def _push(out: list[tuple[Op, str]], op: Op, text: str) -> None:
    if not text:
        return
    if out and out[-1][0] == op:
        out[-1] = (op, out[-1][1] + text)
    else:
        out.append((op, text))
