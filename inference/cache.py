"""The adapter cache: loaded adapters, bounded by count and bytes, with a TTL, leases and per-user pointers.

One verb set: ``load / activate / deactivate / evict / pin / list`` (plus ``lookup``, ``unpin``,
``expire``), and one eviction hook, :meth:`AdapterCache._on_evict`, that every removal goes through.

* ``load(key, loader)`` returns a :class:`Lease` on the key's value, calling ``loader`` on a miss. The
  loader runs outside the lock, once per key however many requests wait for it (single flight), and
  the new value is validated by the loader *before* anything is evicted to make room for it.
* A lease is a reference count: a request in flight keeps the value it started with even when the
  entry is evicted or replaced meanwhile; entries in use are not chosen as victims.
* ``activate(owner, key)`` flips an owner's (a user's) pointer to a resident key atomically;
  ``deactivate(owner)`` clears it. Pointers name versions: they survive the eviction of their entry.
* The eviction policy orders victims (:mod:`inference.policies`); it may decline to admit a new key,
  which is then served to the request that loaded it and dropped when that lease ends.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from inference.errors import CacheError
from inference.policies import EvictionPolicy

log = logging.getLogger("samtuner.inference.cache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[K, V]):
    key: K
    value: V
    size: int
    loaded_at: float
    last_used: float
    refs: int = 0
    pinned: bool = False
    resident: bool = True


class Lease(Generic[K, V]):
    """A request's hold on one cached value; ``release`` (or the ``with`` block's end) gives it back once."""

    def __init__(self, cache: AdapterCache[K, V], entry: _Entry[K, V], hit: bool) -> None:
        self._cache = cache
        self._entry = entry
        self.key: K = entry.key
        self.value: V = entry.value
        self.hit = hit
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._cache._release(self._entry)

    def __enter__(self) -> Lease[K, V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class EntryInfo:
    key: Hashable
    size: int
    refs: int
    pinned: bool
    active_for: tuple[Hashable, ...]
    idle_s: float
    age_s: float


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    hits: int
    misses: int
    loads: int
    load_failures: int
    evictions: int
    bypassed: int


class _Flight:
    """One load in progress; waiters block on ``done`` and share the outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


EvictHook = Callable[[Hashable, object, str], None]


class AdapterCache(Generic[K, V]):
    def __init__(
        self,
        policy: EvictionPolicy,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        size_of: Callable[[V], int],
        on_evict: EvictHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError(
                f"bounds must be positive: max_entries={max_entries}, max_bytes={max_bytes}, ttl_s={ttl_s}"
            )
        self.policy = policy
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._size_of = size_of
        self._hook = on_evict
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[K, _Entry[K, V]] = {}
        self._flights: dict[K, _Flight] = {}
        self._pointers: dict[Hashable, K] = {}
        self._bytes = 0
        self._hits = self._misses = self._loads = self._load_failures = self._evictions = self._bypassed = 0

    # -- verbs ---------------------------------------------------------------------------------

    def lookup(self, key: K) -> Lease[K, V] | None:
        """A lease on ``key`` when it is resident (a hit), else None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            self.policy.record_access(key, hit=entry is not None)
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            return self._lease(entry, hit=True)

    def load(self, key: K, loader: Callable[[], V]) -> Lease[K, V]:
        """A lease on ``key``'s value, loading it with ``loader`` on a miss (once, however many ask).

        The loader's exception propagates to every waiter and nothing is evicted or inserted.
        """
        with self._lock:
            entry = self._entries.get(key)
            self.policy.record_access(key, hit=entry is not None)
            if entry is not None:
                self._hits += 1
                return self._lease(entry, hit=True)
            self._misses += 1
            flight = self._flights.get(key)
            owner = flight is None
            if owner:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not owner:
            return self._wait(key, flight, loader)
        try:
            value = loader()
        except BaseException as exc:
            with self._lock:
                self._load_failures += 1
                flight.error = exc
                del self._flights[key]
            flight.done.set()
            raise
        with self._lock:
            self._loads += 1
            lease = self._admit(key, value)
            del self._flights[key]
        flight.done.set()
        return lease

    def activate(self, owner: Hashable, key: K) -> K | None:
        """Point ``owner`` at the resident ``key``; returns the key it pointed at before."""
        with self._lock:
            if key not in self._entries:
                raise CacheError(f"cannot activate {key!r}: it is not loaded")
            before = self._pointers.get(owner)
            self._pointers[owner] = key
            return before

    def deactivate(self, owner: Hashable) -> K | None:
        """Clear ``owner``'s pointer; returns the key it pointed at."""
        with self._lock:
            return self._pointers.pop(owner, None)

    def active(self, owner: Hashable) -> K | None:
        with self._lock:
            return self._pointers.get(owner)

    def evict(self, key: K, reason: str = "explicit") -> bool:
        """Drop ``key`` now (pinned or not); leases in flight keep their value. False when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            entry.pinned = False
            self._remove(entry, reason)
            return True

    def evict_where(self, predicate: Callable[[K], bool], reason: str) -> builtins.list[K]:
        with self._lock:
            doomed = [e for k, e in self._entries.items() if predicate(k)]
            for entry in doomed:
                entry.pinned = False
                self._remove(entry, reason)
            return [e.key for e in doomed]

    def pin(self, key: K) -> None:
        """Never evict ``key`` by policy or TTL (``evict`` still removes it)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                raise CacheError(f"cannot pin {key!r}: it is not loaded")
            pinned = sum(1 for e in self._entries.values() if e.pinned)
            if not entry.pinned and pinned + 1 >= self.max_entries:
                raise CacheError(
                    f"cannot pin {key!r}: {pinned} of {self.max_entries} entries are pinned already "
                    "(one slot must stay free for everyone else)"
                )
            entry.pinned = True

    def unpin(self, key: K) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.pinned = False
                self._enforce_bounds(incoming=None)

    def list(self) -> list[EntryInfo]:
        now = self._clock()
        with self._lock:
            owners: dict[K, list[Hashable]] = {}
            for owner, key in self._pointers.items():
                owners.setdefault(key, []).append(owner)
            return [
                EntryInfo(
                    e.key, e.size, e.refs, e.pinned, tuple(owners.get(e.key, ())), now - e.last_used, now - e.loaded_at
                )
                for e in self._entries.values()
            ]

    def expire(self) -> builtins.list[K]:
        """Evict entries idle for longer than the TTL (not pinned, not in use)."""
        now = self._clock()
        with self._lock:
            stale = [
                e for e in self._entries.values() if not e.pinned and e.refs == 0 and now - e.last_used > self.ttl_s
            ]
            for entry in stale:
                self._remove(entry, "ttl")
            return [e.key for e in stale]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> builtins.list[K]:
        with self._lock:
            return list(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries),
                self._bytes,
                self._hits,
                self._misses,
                self._loads,
                self._load_failures,
                self._evictions,
                self._bypassed,
            )

    # -- internals (called with the lock held) -------------------------------------------------

    def _lease(self, entry: _Entry[K, V], hit: bool) -> Lease[K, V]:
        entry.refs += 1
        entry.last_used = self._clock()
        return Lease(self, entry, hit)

    def _release(self, entry: _Entry[K, V]) -> None:
        with self._lock:
            entry.refs -= 1
            entry.last_used = self._clock()

    def _wait(self, key: K, flight: _Flight, loader: Callable[[], V]) -> Lease[K, V]:
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return self._lease(entry, hit=False)
        return self.load(key, loader)  # it was loaded but not admitted (or evicted at once): load again

    def _admit(self, key: K, value: V) -> Lease[K, V]:
        now = self._clock()
        entry = _Entry(key, value, max(int(self._size_of(value)), 0), loaded_at=now, last_used=now)
        lease = self._lease(entry, hit=False)
        if entry.size > self.max_bytes:
            self._bypassed += 1
            entry.resident = False
            log.warning(
                "adapter %r (%d bytes) is larger than the cache (%d bytes): served, not kept",
                key,
                entry.size,
                self.max_bytes,
            )
            return lease
        self._entries[key] = entry
        self._bytes += entry.size
        self.policy.inserted(key)
        self._enforce_bounds(incoming=key)
        return lease

    def _enforce_bounds(self, incoming: K | None) -> None:
        def evictable(k: Hashable) -> bool:
            e = self._entries.get(cast(K, k))
            return e is not None and not e.pinned and (e.refs == 0 or k == incoming)

        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            victim = self.policy.victim(evictable)
            if victim is None:
                log.warning(
                    "adapter cache over its bounds (%d entries, %d bytes) with nothing evictable",
                    len(self._entries),
                    self._bytes,
                )
                return
            entry = self._entries[cast(K, victim)]
            if victim == incoming:
                self._bypassed += 1
            self._remove(entry, "declined" if victim == incoming else "capacity")

    def _remove(self, entry: _Entry[K, V], reason: str) -> None:
        del self._entries[entry.key]
        self._bytes -= entry.size
        entry.resident = False
        self.policy.removed(entry.key)
        self._evictions += 1
        self._on_evict(entry, reason)

    def _on_evict(self, entry: _Entry[K, V], reason: str) -> None:
        """The one eviction hook: every removal (capacity, declined, ttl, explicit, revoked) passes here.

        Leases in flight still hold the value; it is freed when the last of them is released.
        """
        log.debug("evicted %r (%s, %d bytes, %d in use)", entry.key, reason, entry.size, entry.refs)
        if self._hook is not None:
            try:
                self._hook(entry.key, entry.value, reason)
            except Exception:  # an observer must never break the cache
                log.exception("eviction hook failed for %r", entry.key)
