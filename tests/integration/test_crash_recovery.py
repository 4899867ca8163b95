"""Crash recovery: 20,000 events replayed while the stream worker is killed with SIGKILL at random
points (at least 5 times) and restarted each time. Afterwards the projection holds exactly the
expected pairs, and every (user, generation) threshold and training request was emitted once."""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from infra.kafka import KafkaEventPublisher, read_topic
from schemas.config import Config
from schemas.events import FeedbackReceived
from schemas.ids import feedback_event_id, pair_id
from schemas.topics import Topics
from tests.integration.harness import (
    MakeConfig,
    RunningProcess,
    decisions_on_wire,
    group_lag,
    projected_pairs,
    training_requests_on_wire,
    wait_caught_up,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 20_000
USERS = 100
THRESHOLD = 7
KILLS = 5
WORDS = [f"v{i:04d}" for i in range(3000)]
# generate() draws duplicates from the whole replay, so a decider's horizon (streams.state) must cover a
# user's whole history (~200 events each) wherever it is used: what is tested is crashes, not the horizon.
WHOLE_HISTORY_STATE = {"max_sightings_per_user": 1024}


def generate(rng: random.Random) -> tuple[list[tuple[bytes, bytes]], set[str], dict[str, int]]:
    """The events, the pair ids that must be projected, and the number of distinct pairs per user."""
    start = datetime.now(UTC) - timedelta(hours=1)
    messages: list[tuple[bytes, bytes]] = []
    earlier: list[tuple[str, str, str, str]] = []
    expected: set[str] = set()
    per_user: collections.Counter[str] = collections.Counter()
    for n in range(EVENTS):
        user = f"crash-{rng.randrange(USERS):03d}"
        roll = rng.random()
        if roll < 0.05:
            messages.append((user.encode(), rng.choice([b"garbage", b"{}", b'{"event_type": "FeedbackReceived"}'])))
            continue
        kind, corrected = "correction", None
        if roll < 0.15 and earlier:
            user, prompt, original, corrected = rng.choice(earlier)  # a duplicate: another event, the same pair
        elif roll < 0.20:
            kind = "thumbs_up"
            prompt = "Tell me " + " ".join(rng.choices(WORDS, k=6))
            original = "Sure: " + " ".join(rng.choices(WORDS, k=8))
        else:
            prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
            original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
            corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
            earlier.append((user, prompt, original, corrected))
            key = str(pair_id(user, prompt, corrected, original))
            if key not in expected:
                expected.add(key)
                per_user[user] += 1
        eid = feedback_event_id(user, f"crash-{n}")
        event = FeedbackReceived(
            event_id=eid,
            correlation_id=eid,
            user_id=user,
            feedback_id=f"crash-{n}",
            occurred_at=start + timedelta(milliseconds=n),
            feedback_type=kind,
            prompt=prompt,
            original_response=original,
            corrected_response=corrected,
            confidence_score=0.9,
        )
        messages.append((user.encode(), event.model_dump_json().encode()))
    return messages, expected, dict(per_user)


def decider_lag(cfg: Config) -> int:
    t = Topics(cfg.kafka.topic_prefix)
    try:
        return group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control])
    except Exception:
        return -1


def _progressing(cfg: Config, worker: RunningProcess) -> Callable[[], bool]:
    before = decider_lag(cfg)
    limit = before if before > 0 else EVENTS + 1
    return lambda: worker.alive() and 0 <= decider_lag(cfg) < limit


def test_kill_dash_nine_during_a_replay_loses_and_duplicates_nothing(make_config: MakeConfig) -> None:
    cfg, cfg_path = make_config(
        trigger={"min_new_pairs": THRESHOLD},
        streams={"session_timeout_s": 6, "batch_size": 500, "state": WHOLE_HISTORY_STATE},
    )
    rng = random.Random(20261125)
    messages, expected, per_user = generate(rng)
    topics = Topics(cfg.kafka.topic_prefix)
    from infra.topics import ensure_topics

    ensure_topics(cfg.kafka)
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    for key, value in messages:
        publisher.publish_raw(topics.feedback, key, value)
    publisher.flush(120)

    kills = 0
    lags = []
    while kills < KILLS:
        worker = RunningProcess(cfg, cfg_path, command="streams", log_name=f"streams-{kills}.log")
        # Wait for this incarnation to make progress, then kill it at a random point.
        wait_for(_progressing(cfg, worker), 180, "the restarted worker to make progress")
        time.sleep(rng.uniform(0.2, 2.5))
        worker.kill()
        kills += 1
        lags.append(decider_lag(cfg))
        if lags[-1] == 0:
            break  # nothing left to interrupt
    assert kills >= KILLS, f"the worker finished after {kills} kills; lags when killed: {lags}"

    final = RunningProcess(cfg, cfg_path, command="streams", log_name="streams-final.log")
    try:
        wait_caught_up(cfg, timeout_s=600, proc=final)
    finally:
        assert final.stop() == 0, final.log()[-3000:]

    count, projected, requests = projected_pairs(cfg)
    assert count == len(expected)
    assert projected == expected, f"missing {len(expected - projected)}, unexpected {len(projected - expected)}"

    pairs, thresholds = decisions_on_wire(list(read_topic(cfg.kafka.bootstrap_servers, topics.pairs)))
    accepted = collections.Counter(str(event.pair_id) for event in pairs)
    expected_generations = {(u, g) for u, n in per_user.items() for g in range(1, n // THRESHOLD + 1)}
    assert set(thresholds) == expected_generations
    assert max(thresholds.values()) == 1, [k for k, v in thresholds.items() if v > 1]
    assert max(accepted.values()) == 1, "a pair was emitted twice"
    assert sorted(requests) == sorted(expected_generations)
    training = training_requests_on_wire(cfg, topics.training)
    assert len(training) == len(expected_generations) and max(training.values()) == 1
    print(
        f"\ncrash test: {EVENTS} events, {kills} kills (decider lag at each kill: {lags}), "
        f"{len(expected)} pairs, {len(expected_generations)} threshold events, each emitted once"
    )
