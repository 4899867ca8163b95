"""Offline analysis of eviction policies: request traces, Belady's optimum, and replays through the real cache.

Used by ``make bench-inference`` to choose the policy by measurement, and by tests.

* :func:`independent_zipf` draws every request independently from a Zipf(s) popularity over users.
* :func:`session_zipf` starts sessions of Zipf-popular users; each sends a burst of requests
  (geometric length), and several sessions are open at once, their requests interleaved at random.
* :func:`belady_hit_rate` is the offline optimum (Belady's MIN, with bypass: a request whose key is
  never needed again, or is needed later than every resident key, is not cached).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from inference.cache import AdapterCache
from inference.policies import EvictionPolicy

Trace = list[int]


def _zipf_probabilities(n_users: int, s: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_users + 1, dtype=np.float64) ** s
    return weights / weights.sum()


def independent_zipf(n_requests: int, n_users: int, s: float = 1.0, seed: int = 0) -> Trace:
    """Each request's user drawn independently from Zipf(s) (user ids shuffled, so id says nothing)."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_users)
    ranks = rng.choice(n_users, size=n_requests, p=_zipf_probabilities(n_users, s))
    return [int(ids[r]) for r in ranks]


def session_zipf(
    n_requests: int, n_users: int, s: float = 1.0, mean_burst: float = 8.0, concurrent: int = 16, seed: int = 0
) -> Trace:
    """Sessions of Zipf-popular users, each a burst of Geometric(1/mean_burst) requests; ``concurrent``
    sessions are open at a time and each request comes from one of them at random."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n_users)
    probs = _zipf_probabilities(n_users, s)

    def new_session() -> list[int]:
        return [int(ids[rng.choice(n_users, p=probs)]), int(rng.geometric(1.0 / mean_burst))]

    sessions = [new_session() for _ in range(concurrent)]
    out: Trace = []
    while len(out) < n_requests:
        i = int(rng.integers(concurrent))
        user, left = sessions[i]
        out.append(user)
        sessions[i][1] = left - 1
        if left - 1 <= 0:
            sessions[i] = new_session()
    return out


def belady_hit_rate(trace: Sequence[int], capacity: int) -> float:
    """The best hit rate any policy can reach on ``trace`` with ``capacity`` entries (it knows the future)."""
    never = len(trace) + 1
    next_use = [never] * len(trace)
    seen: dict[int, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        next_use[i] = seen.get(trace[i], never)
        seen[trace[i]] = i
    resident: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key); stale items skipped
    hits = 0
    for i, key in enumerate(trace):
        if key in resident:
            hits += 1
        elif next_use[i] == never:
            continue  # never needed again: bypass
        elif len(resident) >= capacity:
            while True:
                neg, victim = heapq.heappop(heap)
                if resident.get(victim) == -neg:
                    break
            if -neg < next_use[i]:
                heapq.heappush(heap, (neg, victim))  # every resident key is needed sooner: bypass
                continue
            del resident[victim]
        resident[key] = next_use[i]
        heapq.heappush(heap, (-next_use[i], key))
    return hits / len(trace) if trace else 0.0


def static_top_hit_rate(trace: Sequence[int], capacity: int) -> float:
    """An oracle that keeps the ``capacity`` most frequent keys of the whole trace, from the start."""
    top = {k for k, _ in Counter(trace).most_common(capacity)}
    return sum(1 for k in trace if k in top) / len(trace) if trace else 0.0


def replay(
    trace: Sequence[int], capacity: int, policy: EvictionPolicy, loader: Callable[[int], object] = lambda k: k
) -> float:
    """Hit rate of ``policy`` on ``trace`` through the real :class:`AdapterCache` (count-bounded)."""
    cache: AdapterCache[int, object] = AdapterCache(
        policy, max_entries=capacity, max_bytes=1 << 62, ttl_s=1e12, size_of=lambda v: 1
    )
    for key in trace:
        cache.load(key, lambda k=key: loader(k)).release()  # type: ignore[misc]
    stats = cache.stats()
    return stats.hits / len(trace) if trace else 0.0
