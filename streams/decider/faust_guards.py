"""Guards around Faust's offset bookkeeping, for faults seen in the crash test (see ``streams/decider/stall.py``).

Faust commits, per partition, the first run of consecutive acked offsets. Around rebalances its
fetcher can drop a fetched message without handing it to the agent (a hole that is never acked),
and its acked list can pick up duplicates and stale entries. The decider reads such holes from the
log itself (``streams/decider/batch.py``); ``mark_acked`` then tells Faust they are done. Two more guards:

* ``repair_acks`` drops the duplicates and stale entries, which otherwise slow commits to one offset
  per commit interval;
* ``GuardedConsumer`` makes Faust refuse to commit past a hole of exactly one offset at the
  committed position: its own check lets ``min(acked) == committed + 1`` through, which would commit
  past an event that was never processed. The stall watchdog then seeks back and the event is read again.

The guarded consumer comes with its own transport, ``GuardedTransport``, which Faust finds by the
broker URL's scheme (``samtuner://host:port``) through its ``faust.transports`` entry point (declared
in ``pyproject.toml``): only the decider's app uses it; Faust's classes are not patched.
Upstream: faust-streaming/faust #606, robinhood/faust #625.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka
from faust.types.tuples import ack_lock

from streams.decider.stall import repaired_acks
from streams.errors import GuardNotInstalled

log = logging.getLogger("samtuner.streams")

SCHEME = "samtuner"


def repair_acks(consumer: Any, tp: Any) -> None:
    """Clean Faust's acked offsets of ``tp`` (logged when something was dropped).

    Called on the event loop with no await in between, like Faust's own ack bookkeeping."""
    acked = consumer._acked.get(tp)
    if not acked:
        return
    keep = repaired_acks(acked, consumer._committed_offset.get(tp))
    if keep is None:
        return
    with ack_lock:
        log.info(
            "%s[%d]: dropped %d duplicate or stale acked offsets that held back Faust's commits",
            tp.topic,
            tp.partition,
            len(acked) - len(keep),
        )
        acked[:] = keep
        consumer._acked_index[tp] = set(keep)


def mark_acked(consumer: Any, tp: Any, offsets: list[int]) -> None:
    """Record ``offsets`` of ``tp`` as acked: events the decider read from the log itself because
    Faust's fetcher dropped them (they would otherwise hold back its commits for good)."""
    with ack_lock:
        committed = consumer._committed_offset.get(tp)
        index = consumer._acked_index[tp]
        acked = consumer._acked[tp]
        for offset in offsets:
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)


def head_is_missing(acked: list[int], committed: int | None, covered_by_gap: bool) -> bool:
    """True when the event at the committed offset was neither acked nor skipped as a gap."""
    return bool(acked) and committed is not None and min(acked) > committed and not covered_by_gap


class GuardedConsumer(aiokafka.Consumer):
    """Faust's aiokafka consumer, refusing to commit past a missing event at the committed offset."""

    def _new_offset(self, tp: Any) -> int | None:
        committed = self._committed_offset[tp]
        gap = self._gap[tp]
        if head_is_missing(self._acked[tp], committed, bool(gap) and gap.overlaps_point(committed)):
            return None
        result: int | None = super()._new_offset(tp)
        return result


class GuardedTransport(aiokafka.Transport):
    """Faust's aiokafka transport with the guarded consumer (the ``samtuner://`` broker scheme)."""

    Consumer = GuardedConsumer


def guarded_broker_urls(bootstrap_servers: str) -> list[str]:
    """The decider's broker URLs; fails with the cause when Faust does not resolve them to the guard."""
    urls = [f"{SCHEME}://{hp.strip()}" for hp in bootstrap_servers.split(",")]
    found: object
    try:
        found = drivers.by_url(urls[0])
    except ImportError as exc:
        found = exc
    if found is not GuardedTransport:
        raise GuardNotInstalled(SCHEME, found)
    return urls
