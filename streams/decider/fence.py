"""Partition fencing: a decider that lost a partition publishes and journals nothing more for it.

Several decider processes share one consumer group; each source partition (feedback and control are
co-partitioned, so a partition number names both) has one owner per group generation. The agent
takes a *ticket* when it takes a batch: for each partition of the batch, the generation in which
this worker was given it (its *tenure*). It checks the ticket three times:

1. when the batch is taken: events of a partition Faust's consumer no longer holds are not decided
   (acking them commits nothing: Faust commits assigned partitions only);
2. before publishing: the outputs of partitions lost since the batch was taken are dropped, with
   their journal entries, and the in-memory state is forgotten (the new owner decides those events
   again from its own state);
3. before journalling: the journal entries of partitions lost since step 2 are dropped.

A partition is lost when its tenure is no longer the ticket's: it was revoked, or revoked and given
back in a later generation (state forgotten meanwhile), or this worker is leaving the group without
waiting for the batch (``close``: Faust closes the consumer at once when a rebalance starts while it
stops). Fenced events are acked by Faust but not committed (Faust commits only assigned partitions),
so the new owner reads them again from the committed offset.

Why Faust's own rebalance is not enough, and why the rest is safe:

* With ``stream_wait_empty`` Faust's revocation waits until the in-flight batch is acked before any
  other member can be given its partitions (the eager protocol is a barrier). So in the common case
  the batch completes, and its outputs precede every output of the next owner on the wire.
* That wait is skipped when the worker is stopping (a SIGTERM during a rebalance): the consumer
  leaves at once, while the agent may still be in its batch. ``close`` fences it.
* The remaining window, a loss arriving after the check of step 2 (publishing and the flush have
  begun), is safe by the order of effects: outputs are acked by the broker before the journal is
  written, and the journal is not written for a partition lost by then (step 3). The new owner then
  finds the events not journalled, decides them again, and its output marks
  (``streams/decider/output_marks.py``: the last output on the pairs topic per source partition, read when it
  first handles the partition) suppress the outputs that already landed. The publish calls and the
  check of step 2 run on the event loop with no await in between, so a loss seen by the loop is
  either before the check (fenced) or after every publish call (covered by the flush). ``close``
  comes from Faust's consumer thread and can land between the check and the publish calls; it
  precedes the consumer's leaving, the group's rebalance and the new owner's first read of the
  output marks, so those outputs are the same case as a flush under way. Outside Faust's wait (a
  worker leaving while it stops) this rests on timing, not on an order the broker enforces: the
  flush takes milliseconds, while the new owner's first read follows a group round trip and the
  table's recovery. Only transactional producers with fencing would make it strict.
* Not covered: a worker frozen past the session timeout (SIGSTOP, a swapped-out machine) learns of
  its loss only when it wakes; then it is the output marks alone that keep duplicates off the wire.

Every output carries ``decider.worker`` and ``decider.generation`` headers (who produced it, under
which tenure), so the wire shows the fence at work: for each source partition, generations never go
back in an output partition's order (see ``tests/integration/test_several_deciders.py``).

The decisions (``lost_since``, ``fence_off``, ``stamped``) are pure; ``PartitionFence`` holds the
assignment, fed by Faust's rebalance signals (``streams/decider/app.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from streams.decider.batch import DecidedBatch, Outgoing
from streams.decider.output_marks import SRC_PARTITION

WORKER, GENERATION = "decider.worker", "decider.generation"
DLQ_PARTITION = "dlq.source.partition"

Ticket = Mapping[int, int | None]  # partition -> generation of this worker's tenure (None: not owned)


@dataclass(frozen=True)
class Fenced:
    """What a fence check dropped."""

    partitions: frozenset[int]
    outputs: int = 0
    journal_entries: int = 0


def lost_since(ticket: Ticket, owned: Mapping[int, int]) -> frozenset[int]:
    """The partitions of a ticket this worker no longer holds under the same tenure (a partition it
    did not hold when the ticket was taken counts as lost)."""
    return frozenset(p for p, tenure in ticket.items() if tenure is None or owned.get(p) != tenure)


def tenures(
    partitions: Iterable[int], owned: Mapping[int, int], held: Iterable[int], generation: int, closed: bool
) -> dict[int, int | None]:
    """A ticket: each partition's tenure. A partition the consumer holds before Faust's assignment
    signal reached the fence is held under the current generation (the signal will say the same);
    one the consumer does not hold has none (its events are stale deliveries)."""
    if closed:
        return dict.fromkeys(partitions)
    holding = set(held)
    return {p: owned.get(p, generation if p in holding else None) for p in partitions}


def source_partition(headers: Iterable[tuple[str, bytes]]) -> int | None:
    """The source partition an output names (a decision's ``src.partition``, a dead letter's source)."""
    for key, value in headers:
        if key in (SRC_PARTITION, DLQ_PARTITION):
            return int(value)
    return None


def fence_off(result: DecidedBatch, lost: frozenset[int]) -> tuple[DecidedBatch, Fenced]:
    """``result`` without the outputs, journal entries and recovered offsets of ``lost``.

    An output that names no source partition is kept: every decider output names one (decisions
    through ``src.*`` headers, dead letters through ``dlq.source.*``), so none is expected."""
    if not lost:
        return result, Fenced(lost)
    kept = [out for out in result.outgoing if source_partition(out[3]) not in lost]
    journal = {p: entry for p, entry in result.journal.items() if p not in lost}
    recovered = {tp: offsets for tp, offsets in result.recovered.items() if tp[1] not in lost}
    dropped = Fenced(lost, outputs=len(result.outgoing) - len(kept), journal_entries=len(result.journal) - len(journal))
    return replace(result, outgoing=kept, journal=journal, recovered=recovered), dropped


def stamped(outgoing: list[Outgoing], worker: str, ticket: Ticket) -> list[Outgoing]:
    """The outputs with the producing worker and the tenure of their source partition as headers."""
    who = (WORKER, worker.encode())
    generations: dict[int | None, tuple[str, bytes]] = {}  # per source partition, built once per batch
    out = []
    for topic, key, value, headers in outgoing:
        partition = source_partition(headers)
        generation = generations.get(partition)
        if generation is None:
            tenure = ticket.get(partition) if partition is not None else None
            generation = generations[partition] = (GENERATION, str(-1 if tenure is None else tenure).encode())
        out.append((topic, key, value, [*headers, who, generation]))
    return out


class PartitionFence:
    """The source partitions this worker owns, each with the generation that gave it.

    Fed by Faust's rebalance signals on the event loop and by ``close`` from its consumer thread,
    hence the lock."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._owned: dict[int, int] = {}
        self._revoked: set[int] = set()  # until the next assignment: never adopted again
        self._closed = False
        self._lock = threading.Lock()

    def assigned(self, partitions: Iterable[int], generation: int) -> None:
        """A rebalance gave this worker ``partitions`` (its whole assignment) in ``generation``."""
        with self._lock:
            if self._closed:
                return
            self._owned = dict.fromkeys(partitions, generation)
            self._revoked = set()

    def revoked(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._owned.pop(p, None)
                self._revoked.add(p)

    def close(self) -> None:
        """This worker leaves the group without waiting for its batch: it owns nothing from now on."""
        with self._lock:
            self._closed = True
            self._owned = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def owned(self) -> dict[int, int]:
        with self._lock:
            return dict(self._owned)

    def ticket(self, partitions: Iterable[int], held: Iterable[int], generation: int) -> dict[int, int | None]:
        """The tenures of ``partitions`` now; ``held``: the partitions Faust's consumer is assigned,
        ``generation``: the group generation it joined last."""
        with self._lock:
            # The consumer still lists revoked partitions until the group's next assignment.
            ticket = tenures(set(partitions), self._owned, set(held) - self._revoked, generation, self._closed)
            for p, tenure in ticket.items():
                if tenure is not None:
                    self._owned.setdefault(p, tenure)
            return ticket

    def lost(self, ticket: Ticket) -> frozenset[int]:
        with self._lock:
            return lost_since(ticket, self._owned)
