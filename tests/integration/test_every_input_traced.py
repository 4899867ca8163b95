"""Property: nothing is lost. Every offset of the feedback topic ends up as exactly one of a pair, a
rejection, a labelled example or a dead letter, or is a counted skip (an identical redelivery); every
offset of the control topic as exactly one outcome event or dead letter, or a counted skip (a
repeated command, a command for another role). Checked from the output topics' source headers
(``src.*`` on the pairs topic, ``dlq.source.*`` on the dead-letter topic), not from the worker's
counters; the skip counters are then compared with what the test itself sent.

The messages (>= 2,000 in all) mix new feedback of a few users (so duplicates and near-duplicates
happen), identical redeliveries, event ids reused for other content, hostile bytes, and commands:
decider commands, repeated and conflicting ones, garbage, and commands for other roles.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.broker import free_port
from infra.kafka import PRODUCER_DEFAULTS, read_topic
from infra.topics import ensure_topics
from schemas.codec import encode_command
from schemas.commands import ActivateAdapter, CancelTraining, DeactivatePair, EraseUser, RequestTraining, ReweightPair
from schemas.config import Config
from schemas.topics import Topics
from tests.integration.harness import RunningProcess, group_lag, wait_for

pytestmark = pytest.mark.integration

MIN_MESSAGES = 2000
USERS = [f"u{i}" for i in range(5)]
WORDS = ["capital", "river", "answer", "please", "thanks", "city", "north", "south", "big", "small", "is", "the"]
OUTCOMES = {"PairAccepted", "PairRejected", "LabelledExampleAccepted"}
COMMAND_OUTCOMES = {"TrainingThresholdReached", "CommandRejected", "UserForgotten", "PairDeactivated", "PairReweighted"}


@dataclass
class Sent:
    """What the test sent, and what it expects of each message (by topic, partition, offset)."""

    expect: dict[tuple[str, int, int], str] = field(default_factory=dict)
    originals: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)  # valid feedback, first sends
    commands: list[tuple[bytes, Any]] = field(default_factory=list)  # decider commands, first sends
    count: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def worker(kafka: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    from tests.conftest import make_config_at

    cfg, path = make_config_at(
        tmp_path_factory.mktemp("traced"),
        kafka,
        tiny_model,
        trigger={"min_new_pairs": 1000},
        metrics={"decider_port": free_port()},
        # Redeliveries and reused ids are drawn from each user's whole history
        # (~400 events each): what is tested is the trace, not the horizon.
        streams={"state": {"max_sightings_per_user": 4096}},
    )
    ensure_topics(cfg.kafka)
    proc = RunningProcess(cfg, path, command="streams", log_name="streams.log")
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def feedback_value(user: str, words: list[str], kind: str, draw_corrected: bool) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    prompt = "What is the " + " ".join(words[:3]) + "?"
    original = "The " + " ".join(words) + "."
    corrected = (original + " " + " ".join(reversed(words)) + ", thanks!") if draw_corrected else None
    return {
        "event_type": "FeedbackReceived",
        "event_id": eid,
        "correlation_id": eid,
        "user_id": user,
        "feedback_id": eid,
        "feedback_type": kind,
        "prompt": prompt,
        "original_response": original,
        "corrected_response": corrected,
        "confidence_score": 0.9,
    }


ops = st.one_of(
    st.tuples(
        st.just("new"),
        st.sampled_from(USERS),
        st.lists(st.sampled_from(WORDS), min_size=3, max_size=8),
        st.sampled_from(["correction", "correction", "thumbs_up", "thumbs_down"]),
        st.booleans(),
    ),
    st.tuples(st.just("redeliver"), st.integers(0, 10_000)),
    st.tuples(st.just("conflict"), st.integers(0, 10_000), st.text(min_size=1, max_size=30)),
    st.tuples(
        st.just("hostile"),
        st.one_of(
            st.binary(max_size=80), st.text(max_size=60).map(str.encode), st.just(b'{"event_type": "FeedbackReceived"}')
        ),
    ),
    st.tuples(
        st.just("command"),
        st.sampled_from(["train", "deactivate", "reweight", "erase", "activate", "cancel"]),
        st.sampled_from(USERS),
    ),
    st.tuples(st.just("repeat_command"), st.integers(0, 10_000)),
    st.tuples(st.just("conflict_command"), st.integers(0, 10_000)),
    st.tuples(st.just("bad_command"), st.binary(max_size=40)),
)


def make_command(kind: str, user: str) -> Any:
    if kind == "train":
        return RequestTraining(user_id=user)
    if kind == "deactivate":
        return DeactivatePair(user_id=user, pair_id=uuid.uuid4())  # an unknown pair: CommandRejected
    if kind == "reweight":
        return ReweightPair(user_id=user, pair_id=uuid.uuid4(), training_weight=0.5)
    if kind == "erase":
        return EraseUser(user_id=f"ghost-{uuid.uuid4().hex[:6]}")  # a user with no feedback here
    if kind == "activate":
        return ActivateAdapter(user_id=user)
    return CancelTraining(user_id=user, request_id=uuid.uuid4())


def plan(ops_drawn: list[tuple[Any, ...]], sent: Sent, t: Topics) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, expected kind) for each drawn op."""
    out: list[tuple[str, bytes, bytes, str]] = []
    for op in ops_drawn:
        kind = op[0]
        if kind == "new":
            value = feedback_value(op[1], op[2], op[3], op[4] or op[3] == "correction")
            raw = json.dumps(value).encode()
            sent.originals.append((raw, value))
            out.append((t.feedback, op[1].encode(), raw, "decided"))
        elif kind == "redeliver" and sent.originals:
            raw, value = sent.originals[op[1] % len(sent.originals)]
            out.append((t.feedback, value["user_id"].encode(), raw, "redelivery"))
        elif kind == "conflict" and sent.originals:
            _, value = sent.originals[op[1] % len(sent.originals)]
            changed = {**value, "original_response": value["original_response"] + " " + op[2] + " (edited)"}
            out.append((t.feedback, value["user_id"].encode(), json.dumps(changed).encode(), "conflict"))
        elif kind == "hostile":
            out.append((t.feedback, b"hostile", op[1], "dead_letter"))
        elif kind == "command":
            command = make_command(op[1], op[2])
            key, raw, _ = encode_command(command)
            mine = op[1] not in ("activate", "cancel")
            if mine:
                sent.commands.append((raw, command))
            out.append((t.control, key, raw, "decided" if mine else "other_role"))
        elif kind == "repeat_command" and sent.commands:
            raw, command = sent.commands[op[1] % len(sent.commands)]
            out.append((t.control, command.user_id.encode(), raw, "redelivery"))
        elif kind == "conflict_command" and (reusable := [c for _, c in sent.commands if not isinstance(c, EraseUser)]):
            # (not an erasure's id: what stays of it is a one-way hash, without its content)
            command = reusable[op[1] % len(reusable)]
            key, raw, _ = encode_command(command.model_copy(update={"issued_by": f"other-{uuid.uuid4().hex[:4]}"}))
            out.append((t.control, key, raw, "conflict_command"))
        elif kind == "bad_command":
            out.append((t.control, b"u0", op[1], "dead_letter"))
    return out


def produce(cfg: Config, planned: list[tuple[str, bytes, bytes, str]], sent: Sent) -> None:
    errors: list[str] = []
    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, **PRODUCER_DEFAULTS})
    for topic, key, value, expected in planned:

        def delivered(err: Any, msg: Any, expected: str = expected) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                sent.expect[(msg.topic(), msg.partition(), msg.offset())] = expected

        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        sent.count[expected] += 1
    producer.flush(60)
    assert not errors, errors


def outcomes(cfg: Config) -> dict[tuple[str, int, int], list[str]]:
    """Every output the worker made, by the source position it names in its headers."""
    t = Topics(cfg.kafka.topic_prefix)
    found: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    for msg in read_topic(cfg.kafka.bootstrap_servers, t.pairs):
        h = {k: v.decode() for k, v in msg.headers}
        if "src.topic" in h and h.get("src.index") == "0":
            found[(h["src.topic"], int(h["src.partition"]), int(h["src.offset"]))].append(h["event_type"])
    for msg in read_topic(cfg.kafka.bootstrap_servers, t.dlq):
        h = {k: v.decode(errors="replace") for k, v in msg.headers}
        found[(h["dlq.source.topic"], int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))].append(
            "dlq:" + h["dlq.reason"]
        )
    return found


def skipped(worker: RunningProcess) -> Counter[str]:
    text = httpx.get(f"http://127.0.0.1:{worker.cfg.metrics.decider_port}/metrics", timeout=10).text
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("samtuner_skipped_total{") and 'role="decider"' in line:
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def check(expected: str, got: list[str]) -> str | None:
    """None when the outcome fits what was sent, else what is wrong."""
    if expected in ("redelivery", "other_role"):
        return None if not got else f"a {expected} left outputs {got}"
    if len(got) != 1:
        return f"expected exactly one outcome, got {got}"
    (one,) = got
    fits = {
        "decided": one in OUTCOMES | COMMAND_OUTCOMES,
        "dead_letter": one.startswith("dlq:"),
        "conflict": one == "dlq:conflicting_event_id",
        "conflict_command": one == "dlq:conflicting_command_id",
    }
    return None if fits[expected] else f"{expected} became {one}"


def test_every_input_leaves_exactly_one_record(worker: RunningProcess) -> None:
    cfg = worker.cfg
    t = Topics(cfg.kafka.topic_prefix)
    sent = Sent()

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(batch=st.lists(ops, min_size=100, max_size=130))
    def one_batch(batch: list[tuple[Any, ...]]) -> None:
        produce(cfg, plan(batch, sent, t), sent)

        def settled() -> bool:
            assert worker.alive(), worker.log()[-3000:]
            if group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control]):
                return False
            found = outcomes(cfg)
            return all(k in found for k, e in sent.expect.items() if e not in ("redelivery", "other_role"))

        wait_for(settled, 120, "the decider to handle every message", every_s=0.5)

    one_batch()
    found = outcomes(cfg)
    problems = {pos: why for pos, e in sent.expect.items() if (why := check(e, found.get(pos, [])))}
    assert not problems, dict(list(problems.items())[:10])
    assert set(found) <= set(sent.expect), "outputs that name a source the test never sent"
    total = sum(sent.count.values())
    assert total >= MIN_MESSAGES, f"only {total} messages were generated"
    # The worker's own counters agree with what the test sent (the check above did not use them).
    counters = skipped(worker)
    assert counters["redelivery"] == sent.count["redelivery"], (counters, sent.count)
    assert counters["other_role"] == sent.count["other_role"], (counters, sent.count)
    assert sent.count["conflict"] and sent.count["conflict_command"] and sent.count["dead_letter"]
