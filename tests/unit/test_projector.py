"""The projector writes batches idempotently and cuts a snapshot at the threshold's position."""

from __future__ import annotations

from pathlib import Path

from infra.artifacts import ArtifactStore
from infra.kafka import RawMessage
from schemas.codec import decode, encode_value
from schemas.events import Event, SourceRef, TrainingRequested
from schemas.topics import Topics
from streams.projector import Projector
from streams.snapshot import read_snapshot
from tests.fakes import FakePublisher, FakeSink
from tests.unit.test_decide import Run, at, fb

TOPICS = Topics()


def pair_events(n: int) -> list[Event]:
    run = Run()
    return [e for i in range(n) for e in run.feed(fb(i), at(i))]


def as_messages(events: list[Event], topic: str = TOPICS.pairs) -> list[RawMessage]:
    return [RawMessage(topic, 0, i, e.user_id.encode(), encode_value(e), (), 0) for i, e in enumerate(events)]


def projector(tmp_path: Path, sink: FakeSink, publisher: FakePublisher) -> Projector:
    return Projector(sink, ArtifactStore(tmp_path), publisher, TOPICS, sleep=lambda s: None)


def test_pairs_before_the_threshold_are_written_before_the_snapshot(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    events = pair_events(4)  # 3 pairs, threshold, 1 pair
    result = projector(tmp_path, sink, publisher).project(as_messages(events))
    assert [(t, n) for t, n, _ in sink.inserts] == [("preference_pairs", 3), ("preference_pairs", 1)]
    (request,) = result.training_requests
    assert request.dataset.rows == 3
    data = ArtifactStore(tmp_path).read_verified(request.dataset.uri, request.dataset.sha256)
    assert len(read_snapshot(data)) == 3
    (sent,) = publisher.on(TOPICS.training)
    assert isinstance(decode(sent[2]), TrainingRequested)


def test_the_same_batch_twice_is_written_once(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    messages = as_messages(pair_events(2))
    p = projector(tmp_path, sink, publisher)
    p.project(messages)
    p.project(messages)
    assert len(sink.inserts) == 1
    assert len(sink.tables["preference_pairs"]) == 2


def test_a_transient_store_failure_is_retried(tmp_path: Path) -> None:
    sink, publisher = FakeSink(fail_times=2), FakePublisher()
    projector(tmp_path, sink, publisher).project(as_messages(pair_events(2)))
    assert len(sink.tables["preference_pairs"]) == 2


def test_an_undecodable_message_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    bad = RawMessage(TOPICS.pairs, 2, 7, b"u", b"not json", (), 0)
    result = projector(tmp_path, sink, publisher).project([bad])
    assert result.dead_letters == 1
    (_, _, value, headers) = publisher.on(TOPICS.dlq)[0]
    assert value == b"not json"
    assert dict(headers)["dlq.reason"] == b"invalid_json"
    assert dict(headers)["dlq.source.offset"] == b"7"


def test_threshold_events_carry_their_position() -> None:
    events = pair_events(3)
    threshold = events[-1]
    assert threshold.through == SourceRef(topic="sam.feedback.v1", partition=0, offset=2)
