"""Near-duplicate detection with MinHash-LSH: signatures of a pair's text, and a per-user LSH index
rebuilt from the signatures kept in the decider's state.

The signatures are datasketch's (``MinHash(num_perm, seed, hashfunc=xxh32)``, scheme ``affine32``)
bit for bit, so signatures stored by earlier versions stay comparable: no version marker is needed,
and ``tests/unit/test_similarity.py`` fails if a datasketch upgrade changes its values. They are
computed here with a few whole-array numpy operations (datasketch's own MinHash object and its
``MinHashLSH`` cost tens of microseconds per event in argument checks and per-band byte swaps).
The LSH is datasketch's banding (the same ``(bands, rows)`` as its ``_optimal_param``), so the
candidates and the near-duplicate decisions are the same. The permutations and the band choice are
computed here too, so the decider imports neither datasketch nor scipy (datasketch is a test
dependency, the reference these are checked against).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import xxhash

_WORDS = re.compile(r"\w+")
# For ASCII text, ``\w`` is [A-Za-z0-9_]: mapping every other byte to a space and splitting gives the
# same words as the regex, several times faster.
_ASCII_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ASCII_SPLIT = bytes.maketrans(bytes(range(256)), bytes(c if c in _ASCII_WORD else 0x20 for c in range(256)))
_hash32 = xxhash.xxh32_intdigest
# MurmurHash3's 32-bit finalizer: datasketch's affine32 scheme pre-mixes every input hash with it.
_S16, _S13 = np.uint32(16), np.uint32(13)
_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.0's affine32 permutations ``h -> a*h + b mod 2**32`` (odd ``a``), drawn as it draws them.

    Computed here rather than taken from a ``datasketch.MinHash`` so the decider does not import
    datasketch (and scipy, ~0.35 s of every start); test_similarity checks they stay equal.
    """
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """datasketch's ``_optimal_param``: the (bands, rows) minimising weighted false positives and negatives.

    Its integrands are polynomials of degree <= num_perm, so Gauss-Legendre with num_perm // 2 + 1
    points integrates them exactly, without scipy; test_similarity checks the choice equals
    datasketch's over a grid of thresholds and sizes.
    """
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    below = threshold / 2 * (x + 1)  # the nodes mapped onto [0, threshold] and [threshold, 1]
    above = threshold + (1 - threshold) / 2 * (x + 1)
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]  # datasketch's order
    bands, rows = (np.array(v, dtype=np.float64)[:, None] for v in zip(*pairs, strict=True))
    # P(some band of `rows` rows matches) at similarity s is 1 - (1 - s**rows)**bands.
    fp = threshold / 2 * ((1 - (1 - below**rows) ** bands) @ w)
    fn = (1 - threshold) / 2 * (((1 - above**rows) ** bands) @ w)
    return pairs[int(np.argmin(fp * fp_weight + fn * fn_weight))]  # the first of equal minima, as datasketch


class Signature:
    """A MinHash signature: ``hashvalues`` (numpy uint32, ``num_perm`` values)."""

    __slots__ = ("_bands", "hashvalues")

    def __init__(self, hashvalues: np.ndarray) -> None:
        self.hashvalues = hashvalues
        self._bands: tuple[int, int, list[bytes]] | None = None

    def bands(self, count: int, rows: int, keep: bool = True) -> list[bytes]:
        """The LSH bucket keys: the bytes of the first ``count`` runs of ``rows`` hash values.

        Kept until used with ``keep=False``: a new pair's signature is queried and then inserted with
        the same keys, and the insert lets them go (the index holds them; ~190 bytes per signature).
        """
        cached = self._bands
        if cached is None or cached[0] != count or cached[1] != rows:
            data, width = self.hashvalues.tobytes(), rows * 4
            cached = (count, rows, [data[i : i + width] for i in range(0, count * width, width)])
        self._bands = cached if keep else None
        return cached[2]

    def jaccard(self, other: Signature) -> float:
        """Estimated Jaccard similarity: the share of equal hash values (as datasketch computes it)."""
        return float(np.count_nonzero(self.hashvalues == other.hashvalues)) / len(self.hashvalues)


class MinHasher:
    """MinHash signatures over word shingles; permutations are datasketch's (seeded, so stable)."""

    def __init__(self, num_perm: int = 64, shingle_words: int = 3, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.seed = seed
        self._a, self._b = affine32_permutations(num_perm, seed)

    def _shingles(self, text: str) -> list[bytes]:
        # Words only: punctuation and spacing must not make a near-duplicate look new.
        text = unicodedata.normalize("NFC", text).casefold()
        if text.isascii():
            words = text.encode().translate(_ASCII_SPLIT).split()
        else:
            words = [w.encode() for w in _WORDS.findall(text)]
        k = self.shingle_words
        if len(words) <= k:
            return [b" ".join(words)]
        return list(map(b" ".join, zip(*(words[i:] for i in range(k)), strict=False)))  # k-word windows

    def _permuted(self, hashes: list[int]) -> np.ndarray:
        """(len(hashes), num_perm): every permutation of every (pre-mixed) shingle hash."""
        hv = np.array(hashes, dtype=np.uint32)
        hv ^= hv >> _S16
        hv *= _M1
        hv ^= hv >> _S13
        hv *= _M2
        hv ^= hv >> _S16
        out: np.ndarray = np.multiply.outer(hv, self._a)  # uint32: the wrap-around is the scheme's modulo
        out += self._b
        return out

    def minhash(self, text: str) -> Signature:
        return Signature(self._permuted([_hash32(s) for s in self._shingles(text)]).min(axis=0))

    def minhash_many(self, texts: Sequence[str]) -> list[Signature]:
        """The signatures of several texts with one pass of numpy (a batch's pairs)."""
        if not texts:
            return []
        hashes: list[int] = []
        starts: list[int] = []
        for text in texts:
            starts.append(len(hashes))
            hashes.extend(_hash32(s) for s in self._shingles(text))
        mins = np.minimum.reduceat(self._permuted(hashes), starts, axis=0)
        return [Signature(row) for row in mins]

    def from_signature(self, signature: np.ndarray) -> Signature:
        return Signature(np.asarray(signature, dtype=np.uint32))


def pair_text(prompt: str, chosen: str, rejected: str) -> str:
    return f"{prompt}\n{chosen}\n{rejected}"


class BandIndex:
    """LSH by banding: ``bands`` buckets of ``rows`` hash values each; a candidate shares a bucket."""

    __slots__ = ("_rows", "_tables")

    def __init__(self, bands: int, rows: int) -> None:
        self._rows = rows
        self._tables: list[dict[bytes, list[str]]] = [{} for _ in range(bands)]

    def _keys(self, m: Signature, keep: bool = True) -> Iterable[tuple[dict[bytes, list[str]], bytes]]:
        return zip(self._tables, m.bands(len(self._tables), self._rows, keep), strict=True)

    def insert(self, key: str, m: Signature) -> None:
        for table, band in self._keys(m, keep=False):
            table.setdefault(band, []).append(key)

    def remove(self, key: str, m: Signature) -> None:
        for table, band in self._keys(m):
            hit = table.get(band)
            if hit is not None and key in hit:
                hit.remove(key)
                if not hit:
                    del table[band]

    def query(self, m: Signature) -> set[str]:
        out: set[str] = set()
        for table, band in self._keys(m):
            hit = table.get(band)
            if hit:
                out.update(hit)
        return out


class UserIndexes:
    """A bounded cache of per-user LSH indexes, loaded on first use.

    The durable truth is the signatures in the state; an index is rebuilt from them whenever the
    cached one does not match the user's state (another epoch or count), e.g. after a rebalance or a
    restart.
    """

    def __init__(self, hasher: MinHasher, threshold: float, capacity: int = 10_000) -> None:
        self.hasher = hasher
        self.threshold = threshold
        # Choosing (bands, rows) integrates a probability curve: milliseconds, so once, not per user.
        self._params: tuple[int, int] = optimal_bands(threshold, hasher.num_perm)
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[tuple[int, int], BandIndex, dict[str, Signature]]] = OrderedDict()

    def get(
        self, user_id: str, stamp: tuple[int, int], load: Callable[[], Iterable[tuple[str, np.ndarray]]]
    ) -> tuple[BandIndex, dict[str, Signature]]:
        """The user's (index, signatures by pair key); ``stamp`` = (epoch, signature count)."""
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] == stamp:
            self._cache.move_to_end(user_id)
            return hit[1], hit[2]
        lsh = BandIndex(*self._params)
        members: dict[str, Signature] = {}
        for key, signature in load():
            m = self.hasher.from_signature(signature)
            if key not in members:
                lsh.insert(key, m)
                members[key] = m
        self._cache[user_id] = (stamp, lsh, members)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return lsh, members

    def add(
        self, user_id: str, new_stamp: tuple[int, int], key: str, m: Signature, removed: Iterable[str] = ()
    ) -> None:
        """Add a signature to a cached index; ``removed``: pair keys that left the user's signatures."""
        hit = self._cache.get(user_id)
        if hit is None:
            return
        _, lsh, members = hit
        for gone in removed:
            old = members.pop(gone, None)
            if old is not None:
                lsh.remove(gone, old)
        if key not in members:
            lsh.insert(key, m)
            members[key] = m
        self._cache[user_id] = (new_stamp, lsh, members)

    def forget(self, user_id: str) -> None:
        self._cache.pop(user_id, None)

    def clear(self) -> None:
        self._cache.clear()


def nearest(
    lsh: BandIndex, members: dict[str, Signature], m: Signature, threshold: float, exclude: str | None = None
) -> tuple[str, float] | None:
    """The most similar earlier pair at or above ``threshold`` (estimated Jaccard), if any."""
    best: tuple[str, float] | None = None
    for key in lsh.query(m):
        if key == exclude:
            continue
        j = members[key].jaccard(m)
        if j >= threshold and (best is None or j > best[1] or (j == best[1] and key < best[0])):
            best = (key, j)
    return best
