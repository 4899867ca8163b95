"""Near-duplicate detection with MinHash-LSH (datasketch): signatures of a pair's text, and a
per-user LSH index rebuilt from the signatures kept in a Faust table."""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

_WORDS = re.compile(r"\w+")


class MinHasher:
    """MinHash signatures over word shingles; permutations are computed once (seeded, so stable)."""

    def __init__(self, num_perm: int = 64, shingle_words: int = 3, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.seed = seed
        # xxhash instead of datasketch's default sha1: the same 32-bit contract, several times faster.
        template = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)
        self._template = template
        self._permutations = template.permutations
        self._scheme = template.scheme

    def _shingles(self, text: str) -> list[bytes]:
        # Words only: punctuation and spacing must not make a near-duplicate look new.
        words = _WORDS.findall(unicodedata.normalize("NFC", text).casefold())
        k = self.shingle_words
        if len(words) <= k:
            return [" ".join(words).encode()]
        return [" ".join(words[i:i + k]).encode() for i in range(len(words) - k + 1)]

    def minhash(self, text: str) -> MinHash:
        m = self._blank()
        m.update_batch(self._shingles(text))
        return m

    def _blank(self) -> MinHash:
        """An empty MinHash sharing the template's permutations.

        MinHash's constructor re-validates the permutations every time (tens of microseconds, per
        event); a shallow copy of an initialized one with fresh hash values is the same object. A
        unit test checks the two agree, so an upgrade of datasketch that breaks this fails loudly.
        """
        m: MinHash = object.__new__(MinHash)
        m.__dict__.update(self._template.__dict__)
        m.hashvalues = self._template.hashvalues.copy()
        return m

    def from_signature(self, signature: np.ndarray) -> MinHash:
        return MinHash(num_perm=self.num_perm, seed=self.seed, hashvalues=signature, scheme=self._scheme,
                       permutations=self._permutations, hashfunc=xxhash.xxh32_intdigest)


def pair_text(prompt: str, chosen: str, rejected: str) -> str:
    return f"{prompt}\n{chosen}\n{rejected}"


class UserIndexes:
    """A bounded cache of per-user LSH indexes (datasketch MinHashLSH), loaded on first use.

    The durable truth is the signatures table; an index is rebuilt from it whenever the cached one
    does not match the user's state (another epoch or count), e.g. after a rebalance or a restart.
    """

    def __init__(self, hasher: MinHasher, threshold: float, capacity: int = 10_000) -> None:
        self.hasher = hasher
        self.threshold = threshold
        # Choosing (bands, rows) integrates a probability curve: milliseconds, so once, not per user.
        self._params = _optimal_param(threshold, hasher.num_perm, 0.5, 0.5)
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[tuple[int, int], MinHashLSH, dict[str, MinHash]]] = OrderedDict()

    def get(self, user_id: str, stamp: tuple[int, int],
            load: Callable[[], Iterable[tuple[str, np.ndarray]]]) -> tuple[MinHashLSH, dict[str, MinHash]]:
        """The user's (index, signatures by pair key); ``stamp`` = (epoch, signature count)."""
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] == stamp:
            self._cache.move_to_end(user_id)
            return hit[1], hit[2]
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.hasher.num_perm, params=self._params)
        members: dict[str, MinHash] = {}
        for key, signature in load():
            m = self.hasher.from_signature(signature)
            if key not in members:
                lsh.insert(key, m)
                members[key] = m
        self._cache[user_id] = (stamp, lsh, members)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return lsh, members

    def add(self, user_id: str, new_stamp: tuple[int, int], key: str, m: MinHash) -> None:
        hit = self._cache.get(user_id)
        if hit is None:
            return
        _, lsh, members = hit
        if key not in members:
            lsh.insert(key, m)
            members[key] = m
        self._cache[user_id] = (new_stamp, lsh, members)

    def forget(self, user_id: str) -> None:
        self._cache.pop(user_id, None)

    def clear(self) -> None:
        self._cache.clear()


def nearest(lsh: MinHashLSH, members: dict[str, MinHash], m: MinHash, threshold: float,
            exclude: str | None = None) -> tuple[str, float] | None:
    """The most similar earlier pair at or above ``threshold`` (estimated Jaccard), if any."""
    best: tuple[str, float] | None = None
    for key in lsh.query(m):
        if key == exclude:
            continue
        j = float(m.jaccard(members[key]))
        if j >= threshold and (best is None or j > best[1]):
            best = (str(key), j)
    return best
