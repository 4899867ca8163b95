"""The live training feed: a tail of the training topic, fanned out to the browsers' event streams.

The projector writes in batches, so a curve drawn from the store would lag by a batch or more; the
console instead reads the training topic itself, from its current end (its own consumer, no group
offsets), and hands every job event to each subscriber as it arrives. Past points come from the
store (``training_progress``); a page draws both, de-duplicated by (attempt, step, kind).

The consumer runs in its own thread; subscribers are asyncio queues on the HTTP server's loop, fed
with ``call_soon_threadsafe`` (a slow browser drops points rather than stalling the feed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.kafka import Connection, consumer_config, event_or_none
from schemas.events import (
    Event,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)

log = logging.getLogger("samtuner.console.live")

JOB_EVENTS = (
    TrainingRequested,
    TrainingQueued,
    TrainingStarted,
    TrainingProgressed,
    TrainingSucceeded,
    TrainingFailed,
    TrainingCancelled,
    TrainingRejected,
)
QUEUE_LIMIT = 10_000


def feed_item(event: Event) -> dict[str, Any] | None:
    """What a browser gets for one training-topic event (pure); None for events that are not about a job."""
    if not isinstance(event, JOB_EVENTS):
        return None
    item: dict[str, Any] = {
        "type": event.event_type,
        "request_id": str(event.request_id),
        "user": event.user_id,
        "at": event.occurred_at.isoformat(),
    }
    if isinstance(event, TrainingProgressed):
        m = event.metrics
        item.update(
            step=event.step,
            total_steps=event.total_steps,
            epoch=event.epoch,
            loss=event.loss,
            attempt=event.attempt,
            eta_s=event.eta_s,
            eval_loss=m.get("eval_loss"),
            reward_accuracy=m.get("rewards/accuracies", m.get("eval_rewards/accuracies")),
            reward_margin=m.get("rewards/margins", m.get("eval_rewards/margins")),
            event_id=str(event.event_id),
        )
    elif isinstance(event, TrainingSucceeded):
        item.update(adapter_version=event.adapter_version, duration_s=event.duration_s)
    elif isinstance(event, TrainingFailed):
        item.update(cause=event.cause, will_retry=event.will_retry)
    elif isinstance(event, TrainingCancelled | TrainingRejected):
        item.update(reason=event.reason)
    elif isinstance(event, TrainingStarted):
        item.update(attempt=event.attempt, resumed_from_step=event.resumed_from_step)
    return item


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    request_id: str | None


class LiveFeed:
    """Fan-out of job events to subscribers; ``offer`` is called from the consumer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[int, _Subscriber] = {}
        self._next = 0
        self.delivered = 0
        self.dropped = 0

    def subscribe(self, request_id: str | None = None) -> tuple[int, asyncio.Queue[dict[str, Any]]]:
        """Call on the event loop that will read the queue; ``request_id`` None = every job."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        with self._lock:
            self._next += 1
            self._subs[self._next] = _Subscriber(asyncio.get_running_loop(), queue, request_id)
            return self._next, queue

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subs.pop(token, None)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def offer(self, event: Event) -> None:
        item = feed_item(event)
        if item is None:
            return
        with self._lock:
            subs = [s for s in self._subs.values() if s.request_id in (None, item["request_id"])]
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(self._put, sub.queue, item)
            except RuntimeError:  # the loop closed: the subscriber is gone
                continue

    def _put(self, queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
        try:
            queue.put_nowait(item)
            self.delivered += 1
        except asyncio.QueueFull:
            self.dropped += 1


class TrainingTail:
    """Reads the training topic from its end and offers every event to the feed (a thread's target)."""

    def __init__(
        self,
        connection: Connection,
        topic: str,
        feed: LiveFeed,
        consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.connection = connection  # a bootstrap address, or the config's kafka settings (security too)
        self.topic = topic
        self.feed = feed
        self.ready = threading.Event()
        self._factory = consumer_factory

    def _consumer(self) -> Any:
        conf = consumer_config(
            self.connection,
            f"samtuner-console-{uuid.uuid4().hex[:8]}",
            **{
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 20,
                "enable.partition.eof": False,
            },
        )
        if self._factory is not None:
            return self._factory(conf)
        from confluent_kafka import Consumer

        return Consumer(conf)

    def run(self, stop: threading.Event) -> None:
        from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

        while not stop.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                meta = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
                consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in meta.partitions])
                self.ready.set()
                while not stop.is_set():
                    msg = consumer.poll(0.1)
                    if msg is None or msg.error():
                        continue
                    event = event_or_none(msg.value())
                    if event is not None:  # else not an event: the projector dead-letters it
                        self.feed.offer(event)
            except (KafkaException, KeyError) as exc:
                log.warning("live training feed: cannot read %s (%s); retrying in 2s", self.topic, exc)
                stop.wait(2.0)
            except Exception:  # a bug must not end the feed silently: say so, and start again
                log.exception("live training feed failed; restarting it in 2s")
                stop.wait(2.0)
            finally:
                if consumer is not None:
                    consumer.close()
