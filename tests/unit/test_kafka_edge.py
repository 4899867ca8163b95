"""The Kafka edge's shared pieces: consumer settings derived from the topic declarations, the
decode-or-skip readers, and the message-size figures every client and the broker use."""

from __future__ import annotations

from infra.kafka import RawMessage, consumer_config, event_or_none, events_in
from schemas.codec import encode_value
from schemas.topics import ALL, CLIENT_MAX_BYTES, MAX_MESSAGE_BYTES, MIB
from tests.unit.test_decide import fb


def test_the_client_limit_is_the_largest_topic_message_plus_a_mib() -> None:
    assert MAX_MESSAGE_BYTES == max(spec.max_message_bytes for spec in ALL) == 16 * MIB
    assert CLIENT_MAX_BYTES == 17 * MIB


def test_a_consumer_starts_from_the_group_no_auto_commit_and_the_derived_fetch_size() -> None:
    conf = consumer_config("127.0.0.1:9092", "g1", **{"auto.offset.reset": "earliest"})
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"
    assert (conf["group.id"], conf["enable.auto.commit"]) == ("g1", False)
    assert conf["fetch.message.max.bytes"] == CLIENT_MAX_BYTES
    assert conf["auto.offset.reset"] == "earliest"
    assert consumer_config("127.0.0.1:9092", "g2", **{"enable.auto.commit": True})["enable.auto.commit"] is True


def test_readers_skip_what_is_not_an_event_and_keep_the_order() -> None:
    first, second = fb(1, user="a"), fb(2, user="b")

    def msg(offset: int, value: bytes | None) -> RawMessage:
        return RawMessage("t", 0, offset, b"k", value, (), 0)

    messages = [msg(0, encode_value(first)), msg(1, b"{not json"), msg(2, None), msg(3, encode_value(second))]
    assert [e.user_id for e in events_in(messages)] == ["a", "b"]
    assert event_or_none(b"\xff\xfe") is None
    assert event_or_none(encode_value(first)) == first
