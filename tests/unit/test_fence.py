"""The partition fence: a decider that lost a partition publishes and journals nothing more for it."""

from __future__ import annotations

from streams.decider.batch import DecidedBatch, Outgoing
from streams.decider.fence import GENERATION, WORKER, PartitionFence, fence_off, lost_since, source_partition, stamped
from streams.decider.output_marks import source_headers


def decision(partition: int, offset: int) -> Outgoing:
    return "pairs", b"u", b"{}", source_headers("feedback", partition, offset)


def dead_letter(partition: int) -> Outgoing:
    return "dlq", b"u", b"garbage", [("dlq.reason", b"bad_json"), ("dlq.source.partition", str(partition).encode())]


def batch_result() -> DecidedBatch:
    return DecidedBatch(
        outgoing=[decision(0, 5), decision(1, 7), dead_letter(1), decision(2, 9)],
        journal={0: [("k0", {"t": 5})], 1: [("k1", {"t": 7}), ("k1u", None)], 2: [("k2", {"t": 9})]},
        recovered={("feedback", 1): [6], ("feedback", 2): [8]},
        decided=3,
    )


def test_a_partition_revoked_after_the_batch_was_taken_is_fenced() -> None:
    fence = PartitionFence("w1")
    fence.assigned({0, 1, 2}, generation=4)
    ticket = fence.ticket({0, 1}, held={0, 1, 2}, generation=4)
    assert fence.lost(ticket) == frozenset()
    fence.revoked({1})
    assert fence.lost(ticket) == {1}


def test_a_partition_given_back_in_a_later_generation_is_still_fenced() -> None:
    fence = PartitionFence("w1")
    fence.assigned({0, 1}, generation=4)
    ticket = fence.ticket({0, 1}, held={0, 1}, generation=4)
    fence.revoked({0, 1})
    fence.assigned({0}, generation=5)  # state was forgotten meanwhile: the batch is not ours any more
    assert fence.lost(ticket) == {0, 1}


def test_events_of_a_partition_the_consumer_no_longer_holds_are_stale() -> None:
    fence = PartitionFence("w1")
    fence.assigned({0}, generation=4)
    ticket = fence.ticket({0, 2}, held={0}, generation=4)
    assert ticket == {0: 4, 2: None}
    assert fence.lost(ticket) == {2}


def test_a_partition_held_before_the_assignment_signal_is_adopted_under_the_current_generation() -> None:
    fence = PartitionFence("w1")
    ticket = fence.ticket({3}, held={3}, generation=7)
    assert ticket == {3: 7}
    fence.assigned({3}, generation=7)  # the signal arrives: same tenure, nothing lost
    assert fence.lost(ticket) == frozenset()


def test_a_revoked_partition_is_not_adopted_while_the_consumer_still_lists_it() -> None:
    fence = PartitionFence("w1")
    fence.assigned({0, 1}, generation=4)
    fence.revoked({0, 1})
    assert fence.ticket({1}, held={0, 1}, generation=4) == {1: None}  # between revocation and assignment
    fence.assigned({1}, generation=5)
    assert fence.ticket({1}, held={1}, generation=5) == {1: 5}


def test_a_worker_that_leaves_during_a_rebalance_owns_nothing_more() -> None:
    fence = PartitionFence("w1")
    fence.assigned({0, 1}, generation=4)
    ticket = fence.ticket({0, 1}, held={0, 1}, generation=4)
    fence.close()
    assert fence.lost(ticket) == {0, 1}
    fence.assigned({0, 1}, generation=5)  # a late signal cannot reopen it
    assert fence.lost(fence.ticket({0}, held={0}, generation=5)) == {0}


def test_lost_since_compares_tenures() -> None:
    assert lost_since({0: 3, 1: 3, 2: None}, {0: 3, 1: 4}) == {1, 2}


def test_fencing_drops_outputs_journal_and_recovered_offsets_of_lost_partitions_only() -> None:
    result, dropped = fence_off(batch_result(), frozenset({1}))
    assert [source_partition(o[3]) for o in result.outgoing] == [0, 2]
    assert set(result.journal) == {0, 2}
    assert result.recovered == {("feedback", 2): [8]}
    assert (dropped.outputs, dropped.journal_entries) == (2, 1)
    assert result.decided == 3  # counters describe the work done, not what was sent


def test_nothing_lost_keeps_the_result_as_it_is() -> None:
    original = batch_result()
    result, dropped = fence_off(original, frozenset())
    assert result is original and dropped.outputs == 0


def test_outputs_name_their_worker_and_the_tenure_of_their_source_partition() -> None:
    out = stamped([decision(0, 5), dead_letter(2)], "host-12", {0: 4, 2: 6})
    headers = [dict(o[3]) for o in out]
    assert [(h[WORKER], h[GENERATION]) for h in headers] == [(b"host-12", b"4"), (b"host-12", b"6")]
    assert headers[0]["src.offset"] == b"5"  # the source headers stay
