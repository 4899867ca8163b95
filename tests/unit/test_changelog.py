"""The decider's state writes go to the table's changelog first and to its local store once acked
(streams/decider/changelog.py): in order per source partition, the head last, as Faust would read them back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from faust.serializers import codecs

from infra.errors import PublishError
from streams.decider.changelog import TableChangelog, encode_write
from streams.decider.journal import head_key, user_value_key
from tests.unit.test_decide import TOPICS, Decider, fb


class FakeProducer:
    """Holds what was produced; a flush makes it 'acked', or fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.queued: list[tuple[str, int | None, bytes | None, bytes | None]] = []
        self.acked: list[tuple[str, int | None, bytes | None, bytes | None]] = []

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        self.queued.append((topic, partition, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.fail:
            raise PublishError("delivery failed: broker down")
        self.acked += self.queued
        self.queued = []


def faust_reads(value: bytes | None) -> Any:
    """What Faust's JSON codec (a table's, for keys and values) makes of a changelog message part in
    a restore; None: a tombstone."""
    return None if value is None else codecs.loads("json", value)


def test_a_batch_of_two_partitions_lands_in_their_changelog_partitions_head_last() -> None:
    d = Decider()
    d.feed(fb(1, user="alice"))  # a real batch's writes for partition 0
    store: dict[str, Any] = {}
    producer = FakeProducer()
    changelog = TableChangelog("app-decider-journal-changelog", store, producer)
    journal = {0: d.last.journal[0], 3: [(user_value_key(3, "bob"), {"u": "bob"}), (head_key(3), {"v": 2})]}

    assert changelog.send(journal) == len(journal[0]) + 2
    by_partition: dict[int | None, list[str]] = {}
    for topic, partition, key, _ in producer.acked:
        assert topic == "app-decider-journal-changelog"
        by_partition.setdefault(partition, []).append(faust_reads(key))
    assert by_partition[0][-1] == head_key(0) and by_partition[3] == [user_value_key(3, "bob"), head_key(3)]
    assert store == {}  # nothing local before apply

    changelog.apply(journal)
    # The store holds what a restore from the changelog would: the same keys and values.
    restored = {faust_reads(k): faust_reads(v) for _, _, k, v in producer.acked}
    assert store == restored
    assert store[head_key(0)]["t"] == {TOPICS.feedback: 0}


def test_a_tombstone_is_a_null_value_and_deletes_the_key() -> None:
    store: dict[str, Any] = {"00000\x1fu\x1fgone": {"u": "gone"}}
    producer = FakeProducer()
    changelog = TableChangelog("cl", store, producer)
    journal = {0: [("00000\x1fu\x1fgone", None), (head_key(0), {"v": 2, "t": {}})]}
    changelog.send(journal)
    changelog.apply(journal)
    assert producer.acked[0] == ("cl", 0, b'"00000\\u001fu\\u001fgone"', None)
    assert "00000\x1fu\x1fgone" not in store


def test_a_write_has_the_bytes_a_faust_table_write_of_it_has() -> None:
    key, value = "00000\x1fu\x1falice", {"u": "alice", "st": {"g": 1}, "s": [0, 8, []]}
    assert encode_write((key, value)) == (codecs.dumps("json", key), codecs.dumps("json", value))
    assert encode_write((key, value)) == (b'"00000\\u001fu\\u001falice"', b'{"u":"alice","st":{"g":1},"s":[0,8,[]]}')


def test_when_the_broker_does_not_ack_the_error_reaches_the_caller_and_nothing_is_applied() -> None:
    producer = FakeProducer(fail=True)
    store: dict[str, Any] = {}
    changelog = TableChangelog("cl", store, producer)
    with pytest.raises(PublishError):
        changelog.send({0: [(head_key(0), {"v": 2, "t": {}})]})
    assert store == {}  # the agent retries the batch from the state as it was


def test_a_batch_without_writes_sends_and_flushes_nothing() -> None:
    producer = FakeProducer(fail=True)  # a flush would raise
    assert TableChangelog("cl", {}, producer).send({}) == 0
