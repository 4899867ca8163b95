"""The producer API for SAM: publish feedback events with an idempotent Kafka producer.

    from samtuner import FeedbackPublisher

    with FeedbackPublisher("127.0.0.1:9092") as sam:
        sam.correction(user_id="alice", prompt="What is the capital of Peru?",
                       original_response="Lima.", corrected_response="The capital of Peru is Lima.")

Producers in other languages use the JSON Schemas (``samtuner schemas export``), key messages by
user id, and use the murmur2 partitioner (the Java client's default).

What ``feedback_id`` means: SAM's id of one piece of feedback (one user action). The event id is
derived from it and the user id, so sending the same feedback again under its id (a retry) is
skipped as a redelivery, and *other* content under an id already used is dead-lettered as
``conflicting_event_id`` rather than lost. Without an id each call makes a fresh one, so a user who
sends the same correction again is heard (it becomes a ``duplicate_pair`` rejection while the first
pair exists, a new pair after an erasure). Ids used before an erasure stay spent: a replay of
erased feedback changes nothing.
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

from infra.kafka import Connection, KafkaEventPublisher
from schemas.events import FeedbackReceived, FeedbackType
from schemas.ids import feedback_event_id
from schemas.topics import Topics


class FeedbackPublisher:
    def __init__(self, connection: Connection, topic_prefix: str = "", **producer_config: Any) -> None:
        """``connection``: a bootstrap address (PLAINTEXT), or the ``kafka`` settings of a config (its
        ``security`` with them); ``producer_config``: extra confluent-kafka producer settings."""
        self.topic = Topics(topic_prefix).feedback
        self._publisher = KafkaEventPublisher(connection, client_id="sam-feedback", **producer_config)

    def publish(self, event: FeedbackReceived) -> FeedbackReceived:
        self._publisher.publish(self.topic, event)
        return event

    def feedback(
        self,
        user_id: str,
        prompt: str,
        original_response: str,
        corrected_response: str | None = None,
        feedback_type: FeedbackType = "correction",
        confidence_score: float = 1.0,
        feedback_id: str | None = None,
        context: dict[str, str] | None = None,
    ) -> FeedbackReceived:
        """Build (validated) and publish one feedback event; returns it. Raises pydantic's ValidationError.

        ``feedback_id``: SAM's id of this feedback (see the module's docstring); default: a fresh one."""
        fid = feedback_id or uuid.uuid4().hex
        event_id = feedback_event_id(user_id, fid)
        event = FeedbackReceived(
            event_id=event_id,
            user_id=user_id,
            correlation_id=event_id,
            feedback_id=fid,
            feedback_type=feedback_type,
            prompt=prompt,
            original_response=original_response,
            corrected_response=corrected_response,
            confidence_score=confidence_score,
            context=context or {},
        )
        return self.publish(event)

    def correction(
        self, user_id: str, prompt: str, original_response: str, corrected_response: str, **kwargs: Any
    ) -> FeedbackReceived:
        return self.feedback(user_id, prompt, original_response, corrected_response, "correction", **kwargs)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every event is acknowledged by the broker; raises PublishError otherwise."""
        self._publisher.flush(timeout_s)

    def __enter__(self) -> FeedbackPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()
