"""How the demo's users correct answers: each style is a correction and a check, both pure.

A style's ``correct`` is what the user does to one of SAM's answers (None: nothing to correct); its
``shows`` says whether an answer follows the style, so the demo can measure the style's rate on
held-out prompts before and after training.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# A sentence ends at . ! or ? (closing quotes/brackets included) followed by whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?][\"'\)\]]*(?=\s|$)")

CLOSING_LINE = "Hope this helps!"
CAVEAT = "Please double-check this with a reliable source."


def sentences(text: str) -> list[str]:
    """Complete sentences of ``text``, in order; a cut-off last fragment is not one."""
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.end()].strip()
        if piece:
            out.append(piece)
        start = match.end()
    return out


def without_fragment(text: str) -> str:
    """``text`` up to its last complete sentence (answers cut off at the token limit end mid-sentence)."""
    return " ".join(sentences(text))


def _one_sentence(answer: str) -> str | None:
    found = sentences(answer)
    if not found or answer.strip() == found[0]:
        return None  # no complete sentence to keep, or already one sentence
    return found[0]


def _is_one_sentence(answer: str) -> bool:
    text = answer.strip()
    found = sentences(text)
    return len(found) == 1 and found[0] == text


def _closed(answer: str) -> str:
    """The answer's complete sentences; an answer with none ends with a full stop instead."""
    kept = without_fragment(answer) or answer.strip()
    return kept if not kept or kept[-1] in ".!?\"')]" else kept + "."


def _with_caveat(answer: str) -> str | None:
    if _has_caveat(answer):
        return None
    kept = _closed(answer)
    return f"{kept} {CAVEAT}" if kept else None


def _has_caveat(answer: str) -> bool:
    text = answer.lower()
    return "double-check" in text and "reliable source" in text


def _with_closing_line(answer: str) -> str | None:
    if _has_closing_line(answer):
        return None
    kept = _closed(answer)
    return f"{kept} {CLOSING_LINE}" if kept else None


def _has_closing_line(answer: str) -> bool:
    return answer.strip().endswith(CLOSING_LINE)


@dataclass(frozen=True)
class Style:
    name: str
    kind: Literal["form", "content"]
    description: str
    correct: Callable[[str], str | None]
    shows: Callable[[str], bool]


ONE_SENTENCE = Style(
    "one-sentence", "form", "trims every answer to its first sentence", _one_sentence, _is_one_sentence
)
ADDS_CAVEAT = Style(
    "caveat", "content", f"drops a cut-off last fragment and adds a caveat: {CAVEAT!r}", _with_caveat, _has_caveat
)
CLOSES_WITH_LINE = Style(
    "closing-line",
    "form",
    f"drops a cut-off last fragment and closes with {CLOSING_LINE!r}",
    _with_closing_line,
    _has_closing_line,
)
STYLES = {s.name: s for s in (ONE_SENTENCE, ADDS_CAVEAT, CLOSES_WITH_LINE)}


def style_rate(style: Style, answers: list[str]) -> float:
    """Share of ``answers`` that follow ``style`` (0.0 for no answers)."""
    return round(sum(1 for a in answers if style.shows(a)) / len(answers), 4) if answers else 0.0
