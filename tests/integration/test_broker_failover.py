"""Broker faults under the pipeline, after Kafka's own ``kafkatest/tests/core/replication_test.py``:
a 3-broker KRaft cluster (RF 3, min ISR 2, unclean leader election off), a stream worker (deciders
and projector) and a producer that keeps replaying feedback. Meanwhile the leader of the busiest
feedback partitions is hard-bounced (SIGKILL, then started again) 5 times and clean-bounced
(controlled shutdown, then started again) 5 times. After each fault the test measures how long
the pipeline took to make progress again: the deciders and the projector both commit further.

Afterwards every feedback message the producer got an ack for was decided and projected exactly
once: one pair per acked event in ClickHouse (``FINAL``), one ``PairAccepted`` per pair on the wire,
and each (user, generation) threshold once. Then two brokers go down: a publish fails with
``NotEnoughReplicas`` (the broker's NOT_ENOUGH_REPLICAS, with the ISR named); once they are back the
queued messages go out and nothing acked is lost."""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.broker import Broker, Cluster, free_port
from infra.clickhouse import ClickHouseStore
from infra.errors import NotEnoughReplicas
from infra.kafka import PRODUCER_DEFAULTS, KafkaEventPublisher, client_config, read_topic, watermarks
from schemas.config import Config
from schemas.events import FeedbackReceived
from schemas.ids import feedback_event_id
from schemas.topics import Topics
from tests.conftest import make_config_at
from tests.integration.harness import RunningProcess, decisions_on_wire, wait_caught_up, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

EVENTS = 20_000
USERS = 100
THRESHOLD = 7
BOUNCES = 5  # of each kind, as replication_test's hard_bounce and clean_bounce
# The producer's pace: 100 events/s until EVENTS (about the span of the faults on an idle machine),
# then 10/s until the faults are over, so that there is always something new to decide and project.
CHUNK, TRICKLE, EVERY_S = 20, 2, 0.2
WORDS = [f"w{i:04d}" for i in range(3000)]


def feedback(rng: random.Random, n: int, start: datetime) -> tuple[str, str, bytes]:
    """One new correction (a distinct pair): its user, its event id and its bytes."""
    user = f"fail-{rng.randrange(USERS):03d}"
    prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
    original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
    corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
    eid = feedback_event_id(user, f"fail-{n}")
    event = FeedbackReceived(
        event_id=eid,
        correlation_id=eid,
        user_id=user,
        feedback_id=f"fail-{n}",
        occurred_at=start + timedelta(milliseconds=n),
        feedback_type="correction",
        prompt=prompt,
        original_response=original,
        corrected_response=corrected,
        confidence_score=0.9,
    )
    return user, str(eid), event.model_dump_json().encode()


@dataclass
class Replay:
    """Feedback produced at a steady pace from a thread; ``acked`` holds what the brokers acknowledged."""

    cfg: Config
    seed: int
    acked: dict[str, str] = field(default_factory=dict)  # event id -> user
    failed: list[str] = field(default_factory=list)
    produced: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(self.seed)
        start = datetime.now(UTC) - timedelta(hours=1)
        topic = Topics(self.cfg.kafka.topic_prefix).feedback
        producer = Producer(client_config(self.cfg.kafka, **{"client.id": "failover-replay", **PRODUCER_DEFAULTS}))

        def on_delivery(eid: str, user: str) -> Callable[[Any, Any], None]:
            def delivered(err: Any, msg: Any) -> None:
                if err is None:
                    self.acked[eid] = user
                else:
                    self.failed.append(f"{eid}: {err.str()}")

            return delivered

        while not (self.stop.is_set() and self.produced >= EVENTS):
            for _ in range(CHUNK if self.produced < EVENTS else TRICKLE):
                user, eid, value = feedback(rng, self.produced, start)
                producer.produce(topic, key=user.encode(), value=value, on_delivery=on_delivery(eid, user))
                self.produced += 1
            producer.poll(0)
            time.sleep(EVERY_S)  # not poll(EVERY_S): that returns at the first delivery report
        producer.flush(300)


def committed(consumer: Consumer, topics: list[str]) -> int:
    """The sum of a group's committed offsets on ``topics`` (-1 when the coordinator does not answer)."""
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.list_topics(t, timeout=5).topics[t].partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=5))
    except KafkaException:
        return -1


def busiest_leader(admin: AdminClient, consumer: Consumer, topic: str) -> int:
    """The broker that leads the partitions of ``topic`` holding the most messages."""
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    load: collections.Counter[int] = collections.Counter()
    for p in meta.partitions.values():
        _, high = watermarks(consumer, topic, p.id, 10)  # retries while a leader moves
        load[p.leader] += high + 1  # +1: an empty partition still counts for its leader
    return load.most_common(1)[0][0]


def fully_replicated(admin: AdminClient, prefix: str) -> bool:
    """Every partition of the project's topics has all 3 replicas in sync again."""
    try:
        meta = admin.list_topics(timeout=5)
    except KafkaException:
        return False
    return all(
        len(p.isrs) == 3 for name, t in meta.topics.items() if name.startswith(prefix) for p in t.partitions.values()
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster.on_free_ports(tmp_path / "cluster", size=3)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def workers() -> Iterator[list[RunningProcess]]:
    """The stream worker's incarnations; one still running when the test ends is killed."""
    procs: list[RunningProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.alive():
                proc.kill()


def test_leader_bounces_under_the_pipeline_lose_and_duplicate_nothing(
    cluster: Cluster, workers: list[RunningProcess], tiny_model: Path, tmp_path: Path
) -> None:
    cfg, cfg_path = make_config_at(
        tmp_path,
        cluster.bootstrap,
        tiny_model,
        kafka={"replication_factor": 3},
        trigger={"min_new_pairs": THRESHOLD},
        streams={"session_timeout_s": 10, "batch_size": 200},
        console={"port": free_port()},
    )  # not 8100: tests run side by side
    topics = Topics(cfg.kafka.topic_prefix)
    from infra.topics import ensure_topics

    ensure_topics(cfg.kafka)
    admin = AdminClient(client_config(cfg.kafka))
    probe_decider = Consumer(client_config(cfg.kafka, **{"group.id": cfg.streams.app_id}))
    probe_projector = Consumer(client_config(cfg.kafka, **{"group.id": f"{cfg.streams.app_id}-projector"}))
    workers.append(RunningProcess(cfg, cfg_path, command="streams", log_name="streams-0.log"))
    replay = Replay(cfg, seed=20261202)
    feeder = threading.Thread(target=replay.run, name="replay", daemon=True)
    feeder.start()
    wait_for(lambda: committed(probe_projector, [topics.pairs]) > 0, 240, "the pipeline's first projected pair")

    def restart_worker_if_gone() -> None:
        # A worker that exits under a broker fault is a finding: it is restarted (as a supervisor
        # would), counted and printed, and the exactness checks below still hold.
        if not workers[-1].alive():
            workers.append(RunningProcess(cfg, cfg_path, command="streams", log_name=f"streams-{len(workers)}.log"))

    recoveries: list[tuple[str, int, float]] = []
    for kind in ["hard_bounce"] * BOUNCES + ["clean_bounce"] * BOUNCES:
        wait_for(lambda: fully_replicated(admin, cfg.kafka.topic_prefix), 180, "every replica to be in sync")
        leader = busiest_leader(admin, probe_decider, topics.feedback)
        node: Broker = cluster.node(leader)
        decided, projected = committed(probe_decider, [topics.feedback]), committed(probe_projector, [topics.pairs])
        faulted = time.monotonic()
        if kind == "hard_bounce":
            node.kill()
        else:
            node.stop()

        def progressed(decided: int = decided, projected: int = projected) -> bool:
            restart_worker_if_gone()
            return (
                committed(probe_decider, [topics.feedback]) > decided
                and committed(probe_projector, [topics.pairs]) > projected
            )

        wait_for(progressed, 240, f"the pipeline to progress after the {kind} of broker {leader}", every_s=0.1)
        recoveries.append((kind, leader, time.monotonic() - faulted))
        print(
            f"fault {len(recoveries)}: {kind} of broker {leader}: progressing after {recoveries[-1][2]:.1f} s "
            f"({replay.produced} produced)",
            flush=True,
        )
        node.start()
        cluster.wait_registered(3)
    replay.stop.set()
    feeder.join(600)
    assert not feeder.is_alive(), "the replay did not finish"
    assert replay.produced >= EVENTS

    # Two brokers down: a publish fails, saying why; nothing acked is lost once they are back.
    wait_for(lambda: fully_replicated(admin, cfg.kafka.topic_prefix), 180, "every replica to be in sync")
    publisher = KafkaEventPublisher(cfg.kafka, client_id="failover-probe")
    rng, start = random.Random(7), datetime.now(UTC)
    first = feedback(rng, EVENTS * 10, start)
    publisher.publish_raw(topics.feedback, first[0].encode(), first[2])
    publisher.flush(60)  # the producer has its id (which needs a controller quorum) before the faults
    probes = [first] + [feedback(rng, EVENTS * 10 + i, start) for i in range(1, 6)]
    survivor = cluster.node(3)
    down = [b for b in cluster.brokers if b is not survivor]
    for b in down:
        b.stop()
    for user, _, value in probes[1:]:
        publisher.publish_raw(topics.feedback, user.encode(), value)
    cause = r"NOT_ENOUGH_REPLICAS: .*feedback.*ISR \[3\].*min\.insync\.replicas=2"
    with pytest.raises(NotEnoughReplicas, match=cause) as refused:
        publisher.flush(15)
    cluster.start()
    publisher.flush(120)  # the queued messages go out once the partitions have their replicas again
    acked = dict(replay.acked) | {eid: user for user, eid, _ in probes}

    restart_worker_if_gone()
    wait_caught_up(cfg, timeout_s=900, proc=workers[-1])
    assert workers[-1].stop() == 0, workers[-1].log()[-3000:]
    probe_decider.close()
    probe_projector.close()

    # Every topic, the Faust table's changelog and the consumer offsets included, has 3 replicas.
    replicas = {
        name: {len(p.replicas) for p in t.partitions.values()}
        for name, t in admin.list_topics(timeout=10).topics.items()
    }
    assert f"{cfg.streams.app_id}-decider-journal-changelog" in replicas and "__consumer_offsets" in replicas
    assert {name: r for name, r in replicas.items() if r != {3}} == {}

    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        (count,) = store.query("SELECT count() FROM sam.preference_pairs FINAL")[0]
        projected_events = {str(r[0]) for r in store.query("SELECT feedback_event_id FROM sam.preference_pairs FINAL")}
        (rejected,) = store.query("SELECT count() FROM sam.rejected_feedback FINAL")[0]
    finally:
        store.close()
    assert rejected == 0
    assert count == len(projected_events)
    missing = set(acked) - projected_events
    assert not missing, f"{len(missing)} acked feedback events were not projected"
    # Only what was produced can be projected; an unacked message may still have landed.
    assert len(projected_events) <= replay.produced + len(probes)

    pairs, thresholds = decisions_on_wire(list(read_topic(cfg.kafka, topics.pairs)))
    accepted = collections.Counter(str(event.feedback_event_id) for event in pairs)
    assert set(accepted) == projected_events
    assert max(accepted.values()) == 1, "a pair was emitted twice"
    per_user = collections.Counter(acked.values())
    expected_generations = {(u, g) for u, n in per_user.items() for g in range(1, n // THRESHOLD + 1)}
    assert max(thresholds.values()) == 1
    if not replay.failed:  # the usual case: every message was acked, so the sets are exact
        assert projected_events == set(acked)
        assert set(thresholds) == expected_generations
    assert set(thresholds) >= expected_generations

    print(f"\ntwo brokers down: {type(refused.value).__name__}: {refused.value}")
    print(
        f"broker failover: {replay.produced + len(probes)} feedback events, {len(acked)} acked, "
        f"{len(replay.failed)} not acked, {len(projected_events)} pairs projected once each; "
        f"stream worker restarts: {len(workers) - 1}"
    )
    for i, (kind, leader, seconds) in enumerate(recoveries, 1):
        print(f"  fault {i:2d}: {kind:12s} broker {leader}: pipeline progressing again after {seconds:5.1f} s")
