"""Detect a decider that stopped consuming while its sources still hold unprocessed events.

Faust can lose track of fetched messages around a rebalance: its fetcher drops a message whose offset
is below the partition's last read offset, so a message that was fetched but never handed to the
agent is neither processed nor acked, and the committed offset stops at it for good. The worker
looks healthy (group stable, agent idle) while the lag never shrinks. The first remedy is to seek the
stuck partitions back to their committed offsets: the fetcher reads them again, every handler is
idempotent, and the output marks suppress outputs that already landed. It is not a cure (a seek races
with the records the fetcher is still handing out): the decider reads a gap straight from the log
(``streams/decider/batch.py``), and a stall that seeking does not end stops the worker, which its
supervisor restarts.

Faust's acked-offset bookkeeping can also pick up duplicates and stale entries around a rebalance,
which slows its commits to one offset per commit interval; ``repaired_acks`` says what to keep.

This module holds the decisions only (pure, clock passed in); ``streams/decider/app.py`` acts on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

TP = TypeVar("TP")


@dataclass(frozen=True)
class Lagging(Generic[TP]):
    """A source partition with events past its committed offset."""

    tp: TP
    committed: int
    highwater: int


def lagging_partitions(committed: Mapping[TP, int | None], highwater: Mapping[TP, int | None]) -> list[Lagging[TP]]:
    """Partitions whose log end is past the committed offset (None committed = nothing committed yet)."""
    out = []
    for tp, end in highwater.items():
        if end is None:
            continue  # highwater unknown until the first fetch: not evidence of a stall
        done = committed.get(tp) or 0
        if end > done:
            out.append(Lagging(tp, done, end))
    return out


def repaired_acks(acked: list[int], committed: int | None) -> list[int] | None:
    """Faust's acked offsets of a partition without the entries that block its commits, or None when
    there are none.

    Faust commits the first run of consecutive acked offsets; a duplicate (an offset acked twice, as
    seen after a rebalance) splits every run at it, so each commit advances by one offset. An offset
    below the committed one is stale. Dropping both keeps exactly the set of acked offsets that are
    still to be committed.
    """
    keep = sorted({o for o in acked if committed is None or o >= committed})
    return None if keep == acked else keep


@dataclass
class StallDetector(Generic[TP]):
    """Says when to act: lag present, nothing processed and nothing in flight for ``after_s`` seconds.

    ``observe`` is called periodically with what the worker sees; it returns the partitions to seek
    back once the stall has lasted ``after_s``, then waits another ``after_s`` before acting again.
    ``escalate`` becomes true when seeking did not help ``max_seeks`` times in a row.

    ``wedged`` becomes true when a rebalance or recovery (``settling``) lasted ``max_busy_s`` with
    events waiting and none handled: Faust can hang in its changelog recovery (seen in the soak:
    ``Recovery._slurp_changelogs`` waiting for good, the worker idle), and waiting looks normal then,
    so seeking never starts; only a restart helps (``None``: wait for ever, as before).
    """

    after_s: float
    max_seeks: int = 3
    max_busy_s: float | None = None
    _since: float | None = None
    _progress: int = -1
    _seeks: int = 0
    _settling_since: float | None = None
    wedged: bool = False

    def observe(
        self, now: float, processed: int, busy: bool, lagging: list[Lagging[TP]], settling: bool = False
    ) -> list[Lagging[TP]]:
        """``processed``: a counter that grows with every handled batch; ``busy``: a batch or a
        rebalance/recovery is under way (waiting is normal then); ``settling``: the latter."""
        if processed != self._progress:
            self._progress = processed
            self._seeks = 0
            self._since = now
            self._settling_since = None
            return []
        if settling and lagging:
            if self._settling_since is None:
                self._settling_since = now
            if self.max_busy_s is not None and now - self._settling_since >= self.max_busy_s:
                self.wedged = True
                return lagging
        else:
            self._settling_since = None
        if busy or not lagging:
            self._since = None
            return []
        if self._since is None:
            self._since = now
            return []
        if now - self._since < self.after_s:
            return []
        self._since = now
        self._seeks += 1
        return lagging

    @property
    def escalate(self) -> bool:
        return self._seeks > self.max_seeks
