"""MinHash-LSH near-duplicates: the numpy MinHash equals datasketch's on a corpus, its estimates are
close to the exact Jaccard, the index makes datasketch's near-duplicate decisions, and it finds
near-duplicates only."""

from __future__ import annotations

import random
import re
import unicodedata
from typing import Any

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from schemas.config import QualitySettings
from streams.decider.similarity import MinHasher, UserIndexes, affine32_permutations, nearest, optimal_bands, pair_text

THRESHOLD = QualitySettings().near_duplicate_jaccard
WORDS = [f"w{i:03d}" for i in range(300)] + ["Straße", "café", "naïve", "東京", "Ωmega", "ﬁne", "e\u0301t\u00e9"]


def reference_shingles(text: str, k: int = 3) -> list[bytes]:
    """The shingling as first written (a unicode regex), to check the faster one against."""
    words = re.findall(r"\w+", unicodedata.normalize("NFC", text).casefold())
    if len(words) <= k:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)]


def reference_minhash(text: str, num_perm: int = 64) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=1, hashfunc=xxhash.xxh32_intdigest)
    m.update_batch(reference_shingles(text))
    return m


def sentence(rng: random.Random, n: int, ascii_only: bool) -> str:
    pool = WORDS[:300] if ascii_only else WORDS
    punct = [" ", "  ", ", ", ". ", "! ", "\n", "\t", " - ", "? ", "'s "]
    return "".join(rng.choice(pool) + rng.choice(punct) for _ in range(n)).strip()


def edited(rng: random.Random, text: str, changes: int) -> str:
    words = text.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def corpus(n: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    texts = ["", "!!!", "one", "two words", "Hello, World", "ÀÉÎ ÕÜ"]
    for i in range(n):
        texts.append(sentence(rng, rng.randrange(1, 60), ascii_only=i % 3 != 0))
    return texts


def exact_jaccard(a: str, b: str) -> float:
    x, y = set(reference_shingles(a)), set(reference_shingles(b))
    return len(x & y) / len(x | y)


def test_permutations_are_datasketchs() -> None:
    for num_perm in (16, 64, 128, 256):
        for seed in (1, 2, 7):
            a, b = affine32_permutations(num_perm, seed)
            ref = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)
            assert ref.scheme == "affine32"  # the scheme the numpy arithmetic computes
            assert a.dtype == b.dtype == np.uint32
            assert np.array_equal(a, ref.permutations[0]) and np.array_equal(b, ref.permutations[1])


def test_band_parameters_are_datasketchs() -> None:
    thresholds = [t / 100 for t in range(30, 100, 5)] + [THRESHOLD]
    for num_perm in (16, 64, 128):
        got = [optimal_bands(t, num_perm) for t in thresholds]
        assert got == [_optimal_param(t, num_perm, 0.5, 0.5) for t in thresholds]
    assert len(set(got)) > 3  # the grid spans several choices, so a constant answer fails


def test_signatures_equal_datasketchs_bit_for_bit_on_a_corpus() -> None:
    for num_perm in (64, 128):
        hasher = MinHasher(num_perm=num_perm, shingle_words=3)
        texts = corpus(600)
        many = hasher.minhash_many(texts)
        for text, batched in zip(texts, many, strict=True):
            assert hasher._shingles(text) == reference_shingles(text)
            expected = reference_minhash(text, num_perm).hashvalues
            one = hasher.minhash(text).hashvalues
            assert one.dtype == np.uint32 and one.shape == (num_perm,)
            assert np.array_equal(one, expected) and np.array_equal(batched.hashvalues, expected)
    assert hasher.minhash_many([]) == []


def test_jaccard_estimates_equal_datasketchs_and_are_close_to_the_exact_jaccard() -> None:
    rng = random.Random(9)
    hasher = MinHasher()
    errors = []
    for _ in range(400):
        a = sentence(rng, rng.randrange(12, 50), ascii_only=rng.random() < 0.7)
        b = edited(rng, a, rng.randrange(0, 6))
        estimate = hasher.minhash(a).jaccard(hasher.minhash(b))
        assert estimate == reference_minhash(a).jaccard(reference_minhash(b))  # tolerance 0: the same values
        errors.append(abs(estimate - exact_jaccard(a, b)))
    # 64 permutations: the estimate's standard error is at most 1/16.
    assert float(np.mean(errors)) <= 0.05 and max(errors) <= 0.25


def test_near_duplicate_decisions_are_datasketchs_on_a_labelled_corpus() -> None:
    rng = random.Random(3)
    hasher = MinHasher()
    indexes = UserIndexes(hasher, THRESHOLD)
    index, members = indexes.get("alice", (0, 0), lambda: [])
    reference = MinHashLSH(threshold=THRESHOLD, num_perm=64)
    reference_members: dict[str, MinHash] = {}
    originals = []
    for i in range(150):
        text = pair_text(sentence(rng, 10, True) + "?", sentence(rng, 20, i % 4 == 0), sentence(rng, 12, True))
        key = f"p{i}"
        indexes.add("alice", (0, i + 1), key, hasher.minhash(text))
        reference_members[key] = reference_minhash(text)
        reference.insert(key, reference_members[key])
        originals.append(text)
    labelled: list[tuple[str, bool | None]] = []
    for text in originals[:60]:  # the same text, spaced and punctuated otherwise: a near-duplicate
        labelled.append((text.replace(" ", "  ").replace("?", " ?!").upper(), True))
    for _ in range(120):  # new texts: not near-duplicates
        labelled.append((pair_text(sentence(rng, 10, True), sentence(rng, 20, False), sentence(rng, 12, True)), False))
    for text in originals[60:]:  # a few words changed: no label, the estimate decides, the same both ways
        labelled.append((edited(rng, text, rng.randrange(1, 4)), None))
    found_some = 0
    for text, is_duplicate in labelled:
        found = nearest(index, members, hasher.minhash(text), THRESHOLD)
        m = reference_minhash(text)
        scores = sorted((-float(m.jaccard(reference_members[k])), str(k)) for k in reference.query(m))
        expected = next(((k, -s) for s, k in scores if -s >= THRESHOLD), None)  # highest; ties: least key
        assert found == expected
        if is_duplicate is not None:
            assert (found is not None) == is_duplicate
        found_some += found is not None and is_duplicate is None
    assert found_some > 0  # the edited ones do reach the threshold at times: the comparison is not vacuous


def test_near_duplicates_are_found_and_different_pairs_are_not() -> None:
    hasher = MinHasher()
    indexes = UserIndexes(hasher, threshold=0.85)
    lsh, members = indexes.get("alice", (0, 0), lambda: [])
    first = hasher.minhash(
        pair_text("What is the capital of Peru?", "The capital of Peru is Lima, thanks.", "It is Lima.")
    )
    indexes.add("alice", (0, 1), "p1", first)
    spacing = hasher.minhash(
        pair_text("What is the capital of  Peru ?", "The capital of Peru is Lima , thanks !", "It is Lima")
    )
    other = hasher.minhash(
        pair_text("What is the capital of Chile?", "The capital of Chile is Santiago, thanks.", "It is Santiago.")
    )
    assert nearest(lsh, members, spacing, 0.85) == ("p1", 1.0)
    assert nearest(lsh, members, other, 0.85) is None
    assert nearest(lsh, members, spacing, 0.85, exclude="p1") is None


def test_an_index_is_rebuilt_from_stored_signatures_when_the_state_moved_on() -> None:
    hasher = MinHasher()
    m = hasher.minhash("some text to remember here")
    indexes = UserIndexes(hasher, threshold=0.85)
    lsh, members = indexes.get("bob", (0, 1), lambda: [("p1", m.hashvalues)])
    assert nearest(lsh, members, m, 0.85) == ("p1", 1.0)
    calls: list[int] = []

    def members_of_bob() -> list[tuple[str, Any]]:
        calls.append(1)
        return []

    indexes.get("bob", (1, 1), members_of_bob)  # another epoch: rebuilt, empty
    assert calls == [1]
