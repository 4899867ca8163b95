"""The quality score and the similarity measure behave as the README documents."""

from __future__ import annotations

import pytest

from streams.decider.quality import quality_score, similarity


def test_similarity_is_word_overlap() -> None:
    assert similarity("a b c d", "a b c d") == 1.0
    assert similarity("a b", "c d") == 0.0
    assert similarity("a b c", "a b") == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("confidence", "sim", "chosen", "expected"),
    [
        (1.0, 0.0, "four words in here", 1.0),  # a real rewrite scores its confidence
        (0.9, 0.7, "four words in here", 0.9),  # 30% of the words changed: still full
        (1.0, 1.0, "four words in here", 0.6),  # near-identical keeps 60%
        (1.0, 0.0, "No.", 0.625),  # one word keeps 62.5%
        (0.5, 0.0, "No.", 0.3125),
    ],
)
def test_the_quality_formula(confidence: float, sim: float, chosen: str, expected: float) -> None:
    assert quality_score(confidence, sim, chosen) == pytest.approx(expected, abs=1e-4)
