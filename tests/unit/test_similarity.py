"""MinHash-LSH near-duplicates: the fast MinHash path equals datasketch's own, and the per-user index
finds near-duplicates only."""

from __future__ import annotations

import numpy as np
import xxhash
from datasketch import MinHash

from streams.similarity import MinHasher, UserIndexes, nearest, pair_text


def test_the_fast_minhash_equals_datasketchs_own_construction() -> None:
    hasher = MinHasher(num_perm=64, shingle_words=3)
    text = pair_text("What is the capital of Peru?", "The capital of Peru is Lima. Thanks!", "Lima.")
    reference = MinHash(num_perm=64, seed=1, hashfunc=xxhash.xxh32_intdigest)
    reference.update_batch(hasher._shingles(text))
    assert np.array_equal(hasher.minhash(text).hashvalues, reference.hashvalues)
    assert np.array_equal(hasher.minhash(text).hashvalues, hasher.minhash(text).hashvalues)


def test_near_duplicates_are_found_and_different_pairs_are_not() -> None:
    hasher = MinHasher()
    indexes = UserIndexes(hasher, threshold=0.85)
    lsh, members = indexes.get("alice", (0, 0), lambda: [])
    first = hasher.minhash(pair_text("What is the capital of Peru?", "The capital of Peru is Lima, thanks.",
                                     "It is Lima."))
    indexes.add("alice", (0, 1), "p1", first)
    spacing = hasher.minhash(pair_text("What is the capital of  Peru ?", "The capital of Peru is Lima , thanks !",
                                       "It is Lima"))
    other = hasher.minhash(pair_text("What is the capital of Chile?", "The capital of Chile is Santiago, thanks.",
                                     "It is Santiago."))
    assert nearest(lsh, members, spacing, 0.85) == ("p1", 1.0)
    assert nearest(lsh, members, other, 0.85) is None


def test_an_index_is_rebuilt_from_stored_signatures_when_the_state_moved_on() -> None:
    hasher = MinHasher()
    m = hasher.minhash("some text to remember here")
    indexes = UserIndexes(hasher, threshold=0.85)
    lsh, members = indexes.get("bob", (0, 1), lambda: [("p1", m.hashvalues)])
    assert nearest(lsh, members, m, 0.85) == ("p1", 1.0)
    calls = []
    indexes.get("bob", (1, 1), lambda: calls.append(1) or [])  # another epoch: rebuilt, empty
    assert calls == [1]
