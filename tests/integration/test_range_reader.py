"""The range reader the decider uses to read events Faust fetched but never delivered."""

from __future__ import annotations

import uuid

import pytest

from infra.kafka import KafkaEventPublisher, new_consumer, read_range, resume_offset

pytestmark = [pytest.mark.integration]


def test_read_range_returns_the_messages_in_the_range(kafka: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    publisher = KafkaEventPublisher(kafka)
    for n in range(3):
        publisher.publish_raw(topic, b"k", f"m{n}".encode())
    publisher.flush(30)
    assert [(m.offset, m.value) for m in read_range(kafka, topic, 0, 1, 3)] == [(1, b"m1"), (2, b"m2")]
    assert [m.offset for m in read_range(kafka, topic, 0, 0, 100)] == [0, 1, 2]  # to the end
    assert read_range(kafka, topic, 0, 3, 10) == []  # past the end


def test_a_group_resumes_at_its_committed_offset_or_else_at_the_log_s_start(kafka: str) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"probe-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    publisher = KafkaEventPublisher(kafka)
    for n in range(5):
        publisher.publish_raw(topic, b"k", f"m{n}".encode())
    publisher.flush(30)
    group = f"group-{uuid.uuid4().hex[:8]}"
    admin.delete_records([TopicPartition(topic, 0, 2)])[TopicPartition(topic, 0, 2)].result(30)
    assert resume_offset(kafka, group, topic, 0) == 2  # nothing committed: the log's start
    committer = new_consumer(kafka, group)
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    finally:
        committer.close()
    assert resume_offset(kafka, group, topic, 0) == 4
