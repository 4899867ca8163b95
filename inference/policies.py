"""Eviction policies for the adapter cache: plain LRU, and an adaptive W-TinyLFU that beats it on skewed traffic.

A policy only orders keys; the cache owns the entries. The cache tells the policy about every lookup
(``record_access``), every key that became resident (``inserted``) or left (``removed``), and asks it
for the next ``victim`` among the keys it may evict (pinned keys are not). A victim may be the key
just inserted: the policy declined to admit it (the request that loaded it is still served).

W-TinyLFU (Einziger, Friedman, Manes: "TinyLFU: A Highly Efficient Cache Admission Policy", 2017):
new keys enter a small LRU *window*; a key leaving the window competes with the main region's LRU
victim, and the one a frequency sketch saw more often stays. The window's share adapts the way ARC
adapts its lists: a miss on a key the window evicted recently (a "ghost") grows the window, a miss on
a key the main region evicted shrinks it. So bursts (sessions) get a larger window and stable
popularity (independent Zipf draws) a larger frequency-guarded main region. This beat hill climbing
on the hit rate (Caffeine's method), which the noise of short sampling periods kept moving the wrong
way; the parameters were chosen by replaying traces against Belady's optimum
(``inference.cache_sim``, ``make bench-inference``).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

Key = Hashable
Evictable = Callable[[Key], bool]


class EvictionPolicy(Protocol):
    name: str

    def record_access(self, key: Key, hit: bool) -> None: ...

    def inserted(self, key: Key) -> None: ...

    def removed(self, key: Key) -> None: ...

    def victim(self, evictable: Evictable) -> Key | None: ...


def _first(keys: Iterable[Key], evictable: Evictable) -> Key | None:
    return next((k for k in keys if evictable(k)), None)


class LRUPolicy:
    """Least recently used first."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def record_access(self, key: Key, hit: bool) -> None:
        if hit and key in self._order:
            self._order.move_to_end(key)

    def inserted(self, key: Key) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def removed(self, key: Key) -> None:
        self._order.pop(key, None)

    def victim(self, evictable: Evictable) -> Key | None:
        return _first(self._order, evictable)


def stable_hash(value: object) -> int:
    """A hash that is the same in every process (``hash()`` of a str is salted per process)."""
    return zlib.crc32(repr(value).encode("utf-8", errors="replace"))


class FrequencySketch:
    """Count-min sketch of recent access counts (4 rows of 4-bit counters), halved every ``sample_size`` adds."""

    ROWS = 4
    SEEDS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)
    MAX = 15

    def __init__(self, width: int, sample_size: int) -> None:
        self.width = 1 << max(8, (max(width, 1) - 1).bit_length())
        self.sample_size = max(sample_size, 1)
        self._rows = [[0] * self.width for _ in range(self.ROWS)]
        self._adds = 0

    def _slots(self, key: Key) -> list[int]:
        h = stable_hash(key)
        return [((h * seed) >> 7) % self.width for seed in self.SEEDS]

    def add(self, key: Key) -> None:
        for row, slot in zip(self._rows, self._slots(key), strict=True):
            if row[slot] < self.MAX:
                row[slot] += 1
        self._adds += 1
        if self._adds >= self.sample_size:
            self._age()

    def estimate(self, key: Key) -> int:
        return min(row[slot] for row, slot in zip(self._rows, self._slots(key), strict=True))

    def _age(self) -> None:
        # Halving keeps the sketch about recent traffic: a user popular last week fades.
        self._adds //= 2
        for row in self._rows:
            for i, count in enumerate(row):
                row[i] = count >> 1


class WTinyLFUPolicy:
    """Window TinyLFU with a ghost-adapted window: LRU window + frequency-guarded segmented-LRU main region."""

    name = "wtinylfu"

    def __init__(
        self,
        capacity: int,
        frequency_key: Callable[[Key], Key] = lambda k: k,
        initial_window: float = 0.10,
        protected_share: float = 0.80,
        sample_factor: int = 60,
        step: float = 0.5,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._fkey = frequency_key
        self._protected_share = protected_share
        self.sketch = FrequencySketch(16 * capacity, sample_factor * capacity)
        self._window: OrderedDict[Key, None] = OrderedDict()
        self._probation: OrderedDict[Key, None] = OrderedDict()
        self._protected: OrderedDict[Key, None] = OrderedDict()
        self.window_size = max(1.0, capacity * initial_window)
        self._step = step
        # Recently evicted keys, by the region that evicted them (at most ``capacity`` each).
        self._window_ghosts: OrderedDict[Key, None] = OrderedDict()
        self._main_ghosts: OrderedDict[Key, None] = OrderedDict()

    @property
    def _window_cap(self) -> int:
        return max(1, int(self.window_size))

    @property
    def _main_cap(self) -> int:
        return max(self.capacity - self._window_cap, 0)

    def record_access(self, key: Key, hit: bool) -> None:
        self.sketch.add(self._fkey(key))
        if not hit:
            self._adapt(key)
            return
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._probation:
            del self._probation[key]
            self._protected[key] = None
            self._shrink_protected()
        elif key in self._protected:
            self._protected.move_to_end(key)

    def inserted(self, key: Key) -> None:
        self.removed(key)
        self._window[key] = None
        # While the main region has room, the window's overflow moves there without a contest.
        while len(self._window) > self._window_cap and self._main_size() < self._main_cap:
            moved, _ = self._window.popitem(last=False)
            self._probation[moved] = None

    def removed(self, key: Key) -> None:
        self._window.pop(key, None)
        self._probation.pop(key, None)
        self._protected.pop(key, None)

    def victim(self, evictable: Evictable) -> Key | None:
        main_victim = _first(self._probation, evictable) or _first(self._protected, evictable)
        if len(self._window) > self._window_cap:
            candidate = _first(self._window, evictable)
            if candidate is None:
                return self._remember(main_victim, self._main_ghosts)
            if main_victim is None:
                return self._remember(candidate, self._window_ghosts)
            if self.sketch.estimate(self._fkey(candidate)) > self.sketch.estimate(self._fkey(main_victim)):
                del self._window[candidate]
                self._probation[candidate] = None  # admitted: the main region's victim goes instead
                return self._remember(main_victim, self._main_ghosts)
            return self._remember(candidate, self._window_ghosts)
        if main_victim is not None:
            return self._remember(main_victim, self._main_ghosts)
        return self._remember(_first(self._window, evictable), self._window_ghosts)

    def _remember(self, key: Key | None, ghosts: OrderedDict[Key, None]) -> Key | None:
        if key is not None:
            ghosts[key] = None
            ghosts.move_to_end(key)
            if len(ghosts) > self.capacity:
                ghosts.popitem(last=False)
        return key

    def _adapt(self, key: Key) -> None:
        """A miss on a ghost says which region should have kept it: move the window's share that way."""
        if key in self._window_ghosts:
            del self._window_ghosts[key]
            self.window_size = min(self.capacity - 1.0, self.window_size + self._step)
        elif key in self._main_ghosts:
            del self._main_ghosts[key]
            self.window_size = max(1.0, self.window_size - self._step)

    def _main_size(self) -> int:
        return len(self._probation) + len(self._protected)

    def _shrink_protected(self) -> None:
        limit = int(self._main_cap * self._protected_share)
        while len(self._protected) > limit:
            demoted, _ = self._protected.popitem(last=False)
            self._probation[demoted] = None


POLICIES = ("wtinylfu", "lru")


def make_policy(name: str, capacity: int, frequency_key: Callable[[Key], Key] = lambda k: k) -> EvictionPolicy:
    if name == "lru":
        return LRUPolicy()
    if name == "wtinylfu":
        return WTinyLFUPolicy(capacity, frequency_key=frequency_key)
    raise ValueError(f"unknown eviction policy {name!r}; valid: {', '.join(POLICIES)}")
