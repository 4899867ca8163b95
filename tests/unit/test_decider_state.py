"""The decider's state as it is stored: one value per user, bounded rings, a head per partition, and
what a restart, an erasure or an old journal make of it (streams/decider/journal.py)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import EraseUser
from schemas.events import Event, PairAccepted, PairRejected
from streams.decider.journal import SEP, StateLimits, head_key, old_entry_key, user_value_key
from streams.decider.state import encode_signature
from streams.errors import JournalFormatError
from tests.unit.test_decide import TOPICS, Decider, codes, fb

SMALL = StateLimits(max_sightings_per_user=4, max_signatures_per_user=2)


def peru(n: int, fid: str) -> Any:
    """Corrections that are near duplicates of each other (one pair per prompt variant)."""
    return fb(
        n,
        fid=fid,
        prompt="What is the capital of Peru, the country" + " " * n + "?",
        original="The capital of Peru is Lima.",
        corrected="The capital of Peru is Lima." + " " * (n + 1) + "Cheers!",
    )


def user_keys(journal: dict[str, Any], user: str) -> list[str]:
    return [k for k in journal if user in k.split(SEP)]


def test_the_state_holds_one_value_per_user_and_a_head_per_partition() -> None:
    d = Decider()
    d.feed(fb(0), fb(1), fb(2, user="bob"))
    assert set(d.journal) == {user_value_key(0, "alice"), user_value_key(0, "bob"), head_key(0)}
    assert d.journal[head_key(0)]["t"] == {TOPICS.feedback: 2}
    ((_, batch),) = d.last.journal.items()
    assert batch[-1][0] == head_key(0)  # the head is written last: durable head, durable users


def test_a_user_keeps_a_bounded_number_of_values_however_long_they_write() -> None:
    d = Decider(min_new_pairs=1000, limits=SMALL)
    for n in range(0, 200, 10):
        d.feed(*[fb(i) for i in range(n, n + 10)])
    keys = user_keys(d.journal, "alice")
    # the user's value, and a ring of closed chunks each for sightings and signatures (kept + 1 slots)
    assert len(keys) == 1 + 2 + 2, keys
    part = d.memory.partition(0)
    assert 4 <= len(part.sightings) < 8 and len(list(part.user_signatures("alice", part.user("alice")))) in (2, 3)
    assert part.user("alice").new_pairs == 200  # the counters are whole; only the memory of ids is bounded


def test_within_the_horizon_a_redelivery_changes_nothing_beyond_it_the_event_is_decided_again() -> None:
    d = Decider(min_new_pairs=1000, limits=SMALL)
    d.feed(fb(0))
    assert d.feed(fb(0)) == [] and d.last.skips == {"redelivery": 1}  # at a new offset, within the horizon
    d.feed(*[fb(n) for n in range(1, 20)])
    (again,) = d.feed(fb(0))  # its id and its pair are out of the horizon: decided as new ...
    assert isinstance(again, PairAccepted)
    first = d.memory.partition(0)  # ... with the same deterministic pair id (the projection keeps one row)
    assert first.user("alice").new_pairs == 21


def test_near_duplicates_are_found_among_the_last_signatures_only() -> None:
    d = Decider(min_new_pairs=1000, limits=SMALL)
    (first,) = d.feed(peru(0, "a"))
    assert isinstance(first, PairAccepted)
    assert codes(d.feed(peru(1, "b"))[0]) == ["near_duplicate"]
    d.feed(*[fb(n) for n in range(10, 20)])  # ten other pairs push Peru's signature out
    (later,) = d.feed(peru(1, "c"))
    assert isinstance(later, PairAccepted)


def test_a_restart_after_every_batch_decides_exactly_as_one_long_run() -> None:
    """The state, rings and their cached indexes included, is a function of the events it holds: what a
    crash makes the decider decide again comes out the same."""
    items = [peru(n % 4, f"p{n}") if n % 3 == 0 else fb(n % 13, fid=f"f{n}") for n in range(60)]
    items += [EraseUser(user_id="alice"), *[fb(n, fid=f"g{n}") for n in range(8)]]

    def run(restart: bool) -> list[Event]:
        d = Decider(min_new_pairs=5, limits=SMALL)
        out = []
        for i in range(0, len(items), 3):
            out += d.feed(*items[i : i + 3])
            if restart:  # what a new process starts with: the table only
                d.memory.forget()
                d.decider.indexes.clear()
        return out

    steady, restarted = run(False), run(True)
    assert [e.model_dump() for e in steady] == [e.model_dump() for e in restarted]
    assert any(codes(e) == ["near_duplicate"] for e in steady if isinstance(e, PairRejected))


def test_an_erased_user_leaves_no_key_and_no_value_behind_but_their_counters() -> None:
    d = Decider(min_new_pairs=1000, limits=SMALL)
    d.feed(*[fb(n) for n in range(30)], fb(0, user="bob"))
    assert len(user_keys(d.journal, "alice")) > 1
    d.feed(EraseUser(user_id="alice"))
    assert user_keys(d.journal, "alice") == [] and "alice" not in repr(d.journal) and user_keys(d.journal, "bob")
    d.memory.forget()
    assert d.feed(fb(29)) == [] and d.last.skips == {"erased": 1}  # its id was hashed before the data went
    assert d.memory.partition(0).user("alice").epoch == 1


def old_form(d: Decider) -> dict[str, Any]:
    """What the journal of the old form held for the same history: one value per batch, keyed (partition, seq)."""
    part = d.memory.partition(0)
    entries: list[list[Any]] = []
    for user, mem in part.users.items():
        entries.append(["u", user, mem.state.to_json()])
        entries += [["s", f"{user}{SEP}{name}", s.to_json()] for name, s in mem.sightings.entries()]
        entries += [["g", user, i, encode_signature(k, sig, e)] for i, k, sig, e in mem.signatures.entries()]
    entries += [["t", topic, offset] for topic, offset in part.through.items()]
    return {old_entry_key(0, 0): entries[: len(entries) // 2], old_entry_key(0, 1): entries[len(entries) // 2 :]}


def test_a_journal_of_the_old_form_is_folded_into_the_keyed_form_once() -> None:
    before = Decider()
    before.feed(fb(0), fb(1), fb(2, user="bob"))
    d = Decider()
    d.journal.update(old_form(before))
    d.offset = 3
    assert d.feed(fb(1), at=1) == [] and d.last.skips == {"position": 1}  # the old head: offsets held
    (dup,) = d.feed(fb(0, fid="again"))  # the old sightings
    assert codes(dup) == ["duplicate_pair"]
    assert not any(k.endswith(("000000000000", "000000000001")) for k in d.journal)  # the old keys are gone
    assert set(d.journal) == {user_value_key(0, "alice"), user_value_key(0, "bob"), head_key(0)}
    d.memory.forget()
    (third,) = d.feed(fb(3, user="bob"))  # bob's count came through: his second pair
    assert isinstance(third, PairAccepted) and d.memory.partition(0).user("bob").new_pairs == 2


def test_a_state_of_another_form_is_refused_with_the_fix_named() -> None:
    d = Decider()
    d.journal[head_key(0)] = {"v": 99, "t": {}}
    with pytest.raises(JournalFormatError, match="decider-journal-changelog"):
        d.memory.partition(0)
