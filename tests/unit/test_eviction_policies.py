"""Eviction policies against Belady's optimum: the optimum is right, and W-TinyLFU beats LRU on skewed traffic."""

from __future__ import annotations

import itertools
import random

from inference.cache_sim import (
    belady_hit_rate,
    independent_zipf,
    replay,
    session_zipf,
    static_top_hit_rate,
)
from inference.policies import FrequencySketch, LRUPolicy, WTinyLFUPolicy, make_policy


def brute_force_optimum(trace: list[int], capacity: int) -> float:
    """Try every choice (keep/evict which/bypass) on a tiny trace: the true optimum."""
    best = 0

    def walk(i: int, cache: frozenset[int], hits: int) -> None:
        nonlocal best
        if i == len(trace):
            best = max(best, hits)
            return
        key = trace[i]
        if key in cache:
            walk(i + 1, cache, hits + 1)
            return
        walk(i + 1, cache, hits)  # bypass
        if len(cache) < capacity:
            walk(i + 1, cache | {key}, hits)
        else:
            for victim in cache:
                walk(i + 1, (cache - {victim}) | {key}, hits)

    walk(0, frozenset(), 0)
    return best / len(trace)


def test_belady_matches_a_brute_force_search_on_small_traces() -> None:
    rng = random.Random(7)
    for _ in range(30):
        trace = [rng.randrange(5) for _ in range(12)]
        capacity = rng.choice([1, 2, 3])
        assert abs(belady_hit_rate(trace, capacity) - brute_force_optimum(trace, capacity)) < 1e-12, trace


def test_no_policy_beats_the_optimum() -> None:
    trace = independent_zipf(5_000, 500, seed=3)
    optimum = belady_hit_rate(trace, 16)
    for policy in (LRUPolicy(), WTinyLFUPolicy(16)):
        assert replay(trace, 16, policy) <= optimum


def test_lru_on_a_cycle_larger_than_the_cache_never_hits() -> None:
    trace = list(itertools.islice(itertools.cycle(range(4)), 40))
    assert replay(trace, 3, LRUPolicy()) == 0.0
    assert belady_hit_rate(trace, 3) > 0.5


def test_wtinylfu_beats_lru_on_independent_zipf_and_keeps_up_on_sessions() -> None:
    independent = independent_zipf(30_000, 3_000, seed=1)
    sessions = session_zipf(30_000, 3_000, seed=1)
    tiny_i, lru_i = replay(independent, 32, WTinyLFUPolicy(32)), replay(independent, 32, LRUPolicy())
    tiny_s, lru_s = replay(sessions, 32, WTinyLFUPolicy(32)), replay(sessions, 32, LRUPolicy())
    assert tiny_i > lru_i * 1.15
    assert tiny_s > lru_s * 0.95
    assert static_top_hit_rate(independent, 32) <= belady_hit_rate(independent, 32)


def test_the_frequency_sketch_counts_and_ages() -> None:
    sketch = FrequencySketch(width=64, sample_size=1_000)
    for _ in range(6):
        sketch.add("popular")
    sketch.add("rare")
    assert sketch.estimate("popular") >= 6 > sketch.estimate("rare") >= 1
    assert sketch.estimate("never") <= 1  # a count-min sketch may over-count, never under-count
    for i in range(1_000):
        sketch.add(f"noise-{i}")
    assert sketch.estimate("popular") <= 3  # halved at least once


def test_traces_are_reproducible_and_shaped_as_asked() -> None:
    assert independent_zipf(1_000, 100, seed=5) == independent_zipf(1_000, 100, seed=5)
    sessions = session_zipf(10_000, 1_000, mean_burst=8, concurrent=1, seed=2)
    runs = sum(1 for a, b in itertools.pairwise(sessions) if a != b) + 1
    assert 800 < runs < 1_600  # ~10,000 / 8 bursts (consecutive sessions of one user merge)
    assert make_policy("lru", 4).name == "lru" and make_policy("wtinylfu", 4).name == "wtinylfu"
