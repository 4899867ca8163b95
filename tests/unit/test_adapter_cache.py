"""The adapter cache, stepped through load / activate / evict / pin / TTL, asserting what is resident after each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from inference.cache import AdapterCache
from inference.errors import CacheError
from inference.policies import EvictionPolicy, LRUPolicy, WTinyLFUPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_cache(
    max_entries: int = 3,
    max_bytes: int = 1000,
    ttl_s: float = 60.0,
    policy: EvictionPolicy | None = None,
    clock: Clock | None = None,
    evicted: list | None = None,
) -> AdapterCache[str, str]:
    hook = (lambda k, v, reason: evicted.append((k, reason))) if evicted is not None else None
    return AdapterCache(
        policy or LRUPolicy(),
        max_entries=max_entries,
        max_bytes=max_bytes,
        ttl_s=ttl_s,
        size_of=lambda v: len(v),
        on_evict=hook,
        clock=clock or Clock(),
    )


def load(cache: AdapterCache[str, str], key: str, value: str | None = None) -> None:
    cache.load(key, lambda: value or key).release()


def resident(cache: AdapterCache[str, str]) -> set[str]:
    return set(cache.keys())


def test_loads_fill_the_cache_then_the_least_recently_used_goes() -> None:
    evicted: list = []
    cache = make_cache(evicted=evicted)
    for key in ("a", "b", "c"):
        load(cache, key)
    assert resident(cache) == {"a", "b", "c"}
    load(cache, "a")  # a hit: a becomes the most recent
    load(cache, "d")
    assert resident(cache) == {"a", "c", "d"}
    assert evicted == [("b", "capacity")]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.evictions) == (1, 4, 4, 1)


def test_a_pinned_adapter_survives_pressure_and_evict_still_removes_it() -> None:
    cache = make_cache()
    for key in ("a", "b", "c"):
        load(cache, key)
    cache.pin("a")
    load(cache, "d")
    load(cache, "e")
    assert resident(cache) == {"a", "d", "e"}
    cache.unpin("a")
    load(cache, "f")
    assert resident(cache) == {"d", "e", "f"}
    cache.pin("d")
    assert cache.evict("d") is True
    assert resident(cache) == {"e", "f"}
    assert cache.evict("d") is False


def test_pinning_every_slot_is_refused() -> None:
    cache = make_cache(max_entries=2)
    load(cache, "a")
    load(cache, "b")
    cache.pin("a")
    with pytest.raises(CacheError, match="pinned already"):
        cache.pin("b")
    with pytest.raises(CacheError, match="not loaded"):
        cache.pin("zzz")


def test_the_byte_bound_evicts_until_the_new_adapter_fits() -> None:
    cache = make_cache(max_entries=10, max_bytes=10)
    load(cache, "a", "xxxx")
    load(cache, "b", "xxxx")
    load(cache, "c", "xxxxxx")
    assert resident(cache) == {"b", "c"}
    assert cache.stats().bytes == 10


def test_an_adapter_larger_than_the_cache_is_served_but_not_kept() -> None:
    cache = make_cache(max_entries=10, max_bytes=5)
    load(cache, "a", "xx")
    with cache.load("big", lambda: "x" * 50) as lease:
        assert lease.value == "x" * 50
    assert resident(cache) == {"a"}
    assert cache.stats().bypassed == 1


def test_a_failed_load_evicts_nothing_and_every_waiter_sees_the_error() -> None:
    evicted: list = []
    cache = make_cache(max_entries=2, evicted=evicted)
    load(cache, "a")
    load(cache, "b")

    def broken() -> str:
        raise ValueError("bad adapter")

    with pytest.raises(ValueError, match="bad adapter"):
        cache.load("c", broken)
    assert resident(cache) == {"a", "b"}
    assert evicted == []
    assert cache.stats().load_failures == 1


def test_a_request_in_flight_keeps_its_version_when_the_entry_is_evicted() -> None:
    cache = make_cache(max_entries=1)
    lease = cache.load("alice-v1", lambda: "weights-v1")
    cache.evict("alice-v1", "superseded")
    load(cache, "alice-v2", "weights-v2")
    assert lease.value == "weights-v1"  # the in-flight request finishes on the version it started with
    lease.release()
    lease.release()  # releasing twice is harmless
    assert resident(cache) == {"alice-v2"}


def test_entries_in_use_are_not_chosen_as_victims() -> None:
    cache = make_cache(max_entries=2)
    held = cache.load("a", lambda: "a")
    load(cache, "b")
    load(cache, "c")  # a is the LRU but in use: b goes
    assert resident(cache) == {"a", "c"}
    held.release()


def test_one_load_however_many_requests_wait_for_it() -> None:
    cache = make_cache()
    started, calls = threading.Event(), []

    def slow() -> str:
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return "weights"

    results: list[str] = []

    def request() -> None:
        with cache.load("alice", slow) as lease:
            results.append(lease.value)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["weights"] * 8
    assert len(calls) == 1


def test_idle_adapters_expire_but_pinned_or_busy_ones_do_not() -> None:
    clock = Clock()
    evicted: list = []
    cache = make_cache(ttl_s=10, clock=clock, evicted=evicted)
    load(cache, "idle")
    load(cache, "pinned")
    cache.pin("pinned")
    busy = cache.load("busy", lambda: "busy")
    clock.now = 11
    assert cache.expire() == ["idle"]
    assert resident(cache) == {"pinned", "busy"}
    busy.release()
    clock.now = 30
    assert cache.expire() == ["busy"]
    assert evicted == [("idle", "ttl"), ("busy", "ttl")]


def test_a_users_pointer_flips_to_a_loaded_version_and_survives_its_eviction() -> None:
    cache = make_cache()
    load(cache, "alice-v1")
    assert cache.activate("alice", "alice-v1") is None
    load(cache, "alice-v2")
    assert cache.activate("alice", "alice-v2") == "alice-v1"
    with pytest.raises(CacheError, match="not loaded"):
        cache.activate("alice", "alice-v3")
    assert cache.active("alice") == "alice-v2"
    cache.evict("alice-v2")
    assert cache.active("alice") == "alice-v2"
    assert cache.deactivate("alice") == "alice-v2"
    assert cache.active("alice") is None


def test_list_shows_size_use_pin_and_owner() -> None:
    cache = make_cache()
    load(cache, "alice-v1", "abc")
    cache.activate("alice", "alice-v1")
    cache.pin("alice-v1")
    with cache.load("bob-v1", lambda: "z"):
        rows = {info.key: info for info in cache.list()}
    assert rows["alice-v1"].size == 3 and rows["alice-v1"].pinned and rows["alice-v1"].active_for == ("alice",)
    assert rows["bob-v1"].refs == 1 and not rows["bob-v1"].pinned


@pytest.mark.parametrize(
    ("policy", "frequent_kept", "one_offs_kept"),
    [
        (lambda: WTinyLFUPolicy(10), 9, 1),  # the one-offs compete for the window only
        (LRUPolicy, 8, 2),  # LRU lets every one-off push a frequent user out
    ],
)
def test_one_off_users_do_not_push_out_frequent_ones_under_tinylfu(
    policy: Callable[[], EvictionPolicy], frequent_kept: int, one_offs_kept: int
) -> None:
    cache = make_cache(max_entries=10, max_bytes=10**6, policy=policy())
    frequent = [f"u{i}" for i in range(10)]
    for _ in range(20):
        for key in frequent:
            load(cache, key)
    with cache.load("one-off", lambda: "one-off") as lease:
        assert lease.value == "one-off"  # a declined adapter still serves the request that loaded it
    load(cache, "another-one-off")
    assert len(resident(cache) & set(frequent)) == frequent_kept
    assert len(resident(cache) & {"one-off", "another-one-off"}) == one_offs_kept
