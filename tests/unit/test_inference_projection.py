"""AnswerServed -> inference_log, and feedback that names an answer -> answer_feedback (idempotently)."""

from __future__ import annotations

import uuid
from pathlib import Path

from infra.artifacts import ArtifactStore
from infra.kafka import RawMessage
from schemas.codec import encode_value
from schemas.events import AnswerServed, FeedbackReceived
from schemas.topics import Topics
from streams.projector.projection import Projector
from tests.fakes import FakePublisher, FakeSink

TOPICS = Topics()


def served(arm: str, version: int | None) -> AnswerServed:
    answer = uuid.uuid4()
    return AnswerServed(
        event_id=answer,
        answer_id=answer,
        user_id="alice",
        correlation_id=answer,
        node_id="n1",
        arm=arm,
        adapter_version=version,
        latency_ms=12.5,
        completion_tokens=7,
    )


def feedback(i: int, context: dict[str, str]) -> FeedbackReceived:
    eid = uuid.uuid4()
    return FeedbackReceived(
        event_id=eid,
        user_id="alice",
        correlation_id=eid,
        feedback_id=f"f{i}",
        prompt="Q?",
        original_response="A.",
        corrected_response="B.",
        context=context,
    )


def messages(topic: str, values: list[bytes]) -> list[RawMessage]:
    return [RawMessage(topic, 0, i, b"alice", v, (), 0) for i, v in enumerate(values)]


def test_answers_and_the_feedback_about_them_are_projected(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    projector = Projector(sink, ArtifactStore(tmp_path), publisher, TOPICS, sleep=lambda s: None)
    new, previous = served("new", 2), served("previous", 1)
    projector.project(messages(TOPICS.inference, [encode_value(new), encode_value(previous)]))
    fb = [
        feedback(1, {"answer_id": str(new.answer_id)}),
        feedback(2, {"answer_id": f"chatcmpl-{previous.answer_id.hex}"}),  # the OpenAI-style id works too
        feedback(3, {"session": "s1"}),  # about no answer: not projected here
        feedback(4, {"answer_id": "not-a-uuid"}),
    ]
    raw = [encode_value(f) for f in fb] + [b"not json at all"]  # bad feedback is the decider's to dead-letter
    result = projector.project(messages(TOPICS.feedback, raw))
    assert result.dead_letters == 0 and publisher.on(TOPICS.dlq) == []
    assert [(t, n) for t, n, _ in sink.inserts] == [("inference_log", 2), ("answer_feedback", 2)]
    assert {r["answer_id"] for r in sink.tables["answer_feedback"].values()} == {new.answer_id, previous.answer_id}
    logged = {r["answer_id"]: r for r in sink.tables["inference_log"].values()}
    assert (logged[new.answer_id]["arm"], logged[new.answer_id]["adapter_version"]) == ("new", 2)
    projector.project(messages(TOPICS.inference, [encode_value(new), encode_value(previous)]))  # redelivered
    assert len(sink.inserts) == 2
