"""Rebuilding projections from the log: the projector replays rows only, in time order, into the tables
asked for; a table that is not a projection is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from typer.testing import CliRunner

from infra.artifacts import ArtifactStore
from infra.clickhouse import fresh_database_name
from infra.kafka import RawMessage
from samtuner.cli import app
from schemas.codec import encode_value
from schemas.commands import EraseUser
from schemas.ddl import INSERT_TIME_COLUMNS
from schemas.ids import user_key
from schemas.topics import Topics
from streams.errors import RebuildError, UnknownProjection
from streams.projector.projection import COLUMNS, Projector
from streams.projector.rebuild import (
    PROJECTIONS,
    RefusingPublisher,
    SelectedSink,
    TimeOrderedMerge,
    replay,
    select_tables,
)
from tests.fakes import FakeSink
from tests.unit.test_decide import Decider, fb
from tests.unit.test_projector import as_messages

TOPICS = Topics()


def replaying(tmp_path: Path, sink: FakeSink, tables: tuple[str, ...] = PROJECTIONS) -> Projector:
    return Projector(
        SelectedSink(sink, tables),
        ArtifactStore(tmp_path),
        RefusingPublisher(),
        TOPICS,
        sleep=lambda s: None,
        effects=False,
    )


def test_a_threshold_replayed_cuts_no_snapshot_and_publishes_nothing(tmp_path: Path) -> None:
    sink = FakeSink()
    events = Decider(min_new_pairs=3).feed(*[fb(n) for n in range(4)])  # 3 pairs, threshold, 1 pair
    result = replaying(tmp_path, sink).project(as_messages(events))
    assert len(sink.tables["preference_pairs"]) == 4 and result.training_requests == []
    assert not any(tmp_path.rglob("*")), "a rebuild writes no artifact"


def test_an_erasure_replayed_deletes_rows_only(tmp_path: Path) -> None:
    sink = FakeSink()
    d = Decider(min_new_pairs=10)
    adapter = tmp_path / "adapters" / user_key("alice") / "1" / "adapter_model.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"w")  # a file the live erasure removed at the time: the rebuild leaves files alone
    p = replaying(tmp_path, sink)
    p.project(as_messages(d.feed(fb(0), fb(1))))
    p.project(as_messages(d.feed(EraseUser(user_id="alice")), start=10))
    assert sink.erased == ["alice"] and not sink.tables["preference_pairs"]
    assert adapter.exists()


def test_a_bad_event_replayed_is_not_dead_lettered_again(tmp_path: Path) -> None:
    bad = RawMessage(TOPICS.pairs, 0, 0, b"alice", b"{not json", (), 0)
    result = replaying(tmp_path, FakeSink()).project([bad])
    assert result.dead_letters == 1  # counted; its dead letter is on the dlq topic already


def test_the_refusing_publisher_makes_a_slip_loud() -> None:
    (event,) = Decider(min_new_pairs=10).feed(fb(0))
    with pytest.raises(RebuildError, match="publish nothing"):
        RefusingPublisher().publish(TOPICS.pairs, event)


def test_only_the_selected_tables_get_rows(tmp_path: Path) -> None:
    sink = FakeSink()
    events = Decider(min_new_pairs=10).feed(fb(0), fb(1, kind="thumbs_up"))
    replaying(tmp_path, sink, ("labelled_examples",)).project(as_messages(events))
    assert set(sink.tables) == {"labelled_examples"}


def test_tables_are_checked_against_the_projections() -> None:
    assert select_tables(None) == PROJECTIONS == tuple(sorted(COLUMNS))
    assert select_tables(["adapters", "adapters"]) == ("adapters",)
    with pytest.raises(UnknownProjection) as caught:
        select_tables(["adapters", "pairs"])
    assert "'pairs'" in str(caught.value) and all(t in str(caught.value) for t in PROJECTIONS)


def test_the_command_refuses_an_unknown_table_before_touching_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["projections", "rebuild", "--table", "nope", "-c", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "unknown table 'nope'" in result.output and "preference_pairs" in result.output


def test_insert_time_columns_name_projection_tables_and_their_columns() -> None:
    for table, columns in INSERT_TIME_COLUMNS.items():
        assert table in COLUMNS
        assert columns <= {*COLUMNS[table], "projected_at"}


def msg(topic: str, partition: int, offset: int, ts: int) -> RawMessage:
    return RawMessage(topic, partition, offset, None, encode_value(Decider().feed(fb(0))[0]), (), ts)


def test_the_merge_releases_in_time_order_and_waits_for_every_open_partition() -> None:
    merge = TimeOrderedMerge([("a", 0), ("b", 0)])
    merge.add(msg("a", 0, 0, 20))
    assert merge.pop() is None, "b may still send something earlier"
    merge.add(msg("b", 0, 0, 10))
    merge.add(msg("b", 0, 1, 30))
    first = merge.pop()
    assert first is not None and (first.topic, first.timestamp_ms) == ("b", 10)
    second = merge.pop()
    assert second is not None and (second.topic, second.timestamp_ms) == ("a", 20)
    assert merge.pop() is None, "a is open and empty"
    merge.close(("a", 0))
    last = merge.pop()
    assert last is not None and last.offset == 1
    merge.close(("b", 0))
    assert merge.done


def test_a_fresh_database_takes_the_first_free_number() -> None:
    assert fresh_database_name({"sam"}, "sam") == "sam_rebuild_1"
    assert fresh_database_name({"sam", "sam_rebuild_1", "sam_rebuild_2"}, "sam") == "sam_rebuild_3"


SWAP_STORY = """
import json, sys
from infra.clickhouse import ClickHouseStore
from infra.errors import StoreError
store = ClickHouseStore(sys.argv[1], "live")
for db, rows in (("live", [[1]]), ("live_rebuild_1", [[2], [3]])):
    store.command(f"CREATE DATABASE {db}")
    for t in ("a", "b"):
        store.command(f"CREATE TABLE {db}.{t} (n UInt32) ENGINE = MergeTree ORDER BY n")
        store.command(f"INSERT INTO {db}.{t} VALUES " + ", ".join(f"({r[0]})" for r in rows))
out = {}
try:
    store.swap_tables("live", "live_rebuild_1", ["a", "missing", "b"])
except StoreError as exc:
    out["failed"] = str(exc)[:200]
out["after_failure"] = [store.query(f"SELECT groupArray(n) FROM (SELECT n FROM live.{t} ORDER BY n)")[0][0]
                        for t in ("a", "b")]
out["how"] = store.swap_tables("live", "live_rebuild_1", ["a", "b"])
out["after_swap"] = [store.query(f"SELECT groupArray(n) FROM (SELECT n FROM live.{t} ORDER BY n)")[0][0]
                     for t in ("a", "b")]
store.drop_database("live_rebuild_1")
out["databases"] = sorted(d for d in store.databases() if d.startswith("live"))
try:
    store.drop_database("live")
except StoreError as exc:
    out["refused"] = str(exc)
print(json.dumps(out))
"""


def test_a_swap_that_fails_half_way_is_swapped_back(tmp_path: Path) -> None:
    # chDB is one engine per process, and this test process may hold another: the story runs in its own.
    done = subprocess.run(
        [sys.executable, "-c", SWAP_STORY, f"chdb://{tmp_path / 'ch'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "missing" in out["failed"]
    assert out["after_failure"] == [[1], [1]], "a failed swap leaves the live tables as they were"
    assert out["how"] == "exchange" and out["after_swap"] == [[2, 3], [2, 3]]
    assert out["databases"] == ["live"]
    assert "own database" in out["refused"]


class _Msg:
    """A confluent-kafka message (or a partition-EOF event) as the consumer hands it out."""

    def __init__(self, topic: str, partition: int, offset: int, ts: int = 0, eof: bool = False) -> None:
        self._at, self._ts, self._eof = (topic, partition, offset), ts, eof

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]

    def error(self) -> Any:
        return _Eof() if self._eof else None

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


class _Eof:
    def code(self) -> int:
        return CKafkaError._PARTITION_EOF

    def str(self) -> str:
        return "end of partition"


class FakeConsumer:
    """Partitions' logs served round-robin, like a consumer after assign(): pause stops a partition, except
    for one message already fetched (as librdkafka may hand out); seek moves its position; a partition
    whose last offsets hold no message (transaction markers) ends with a partition-EOF event."""

    def __init__(self, logs: dict[tuple[str, int], dict[int, int]], high: dict[tuple[str, int], int]) -> None:
        self.logs, self.high = logs, high  # {tp: {offset: timestamp}}
        self.position: dict[tuple[str, int], int] = {}
        self.paused: dict[tuple[str, int], int] = {}  # tp -> prefetched messages it may still hand out
        self.eof_sent: set[tuple[str, int]] = set()
        self.turn = 0

    def assign(self, parts: list[Any]) -> None:
        self.position = {(tp.topic, tp.partition): tp.offset for tp in parts}

    def pause(self, parts: list[Any]) -> None:
        for tp in parts:
            self.paused[(tp.topic, tp.partition)] = 1

    def resume(self, parts: list[Any]) -> None:
        for tp in parts:
            self.paused.pop((tp.topic, tp.partition), None)

    def seek(self, tp: Any) -> None:
        self.position[(tp.topic, tp.partition)] = tp.offset

    def poll(self, timeout: float) -> _Msg | None:
        order = sorted(self.position)
        for i in range(len(order)):
            tp = order[(self.turn + i) % len(order)]
            if self.paused.get(tp, 1) == 0:
                continue
            found = self._next(tp)
            if found is not None:
                self.turn += i + 1
                if tp in self.paused:
                    self.paused[tp] -= 1
                return found
        return None

    def _next(self, tp: tuple[str, int]) -> _Msg | None:
        log = self.logs[tp]
        while self.position[tp] < self.high[tp]:
            offset = self.position[tp]
            self.position[tp] += 1
            if offset in log:
                return _Msg(tp[0], tp[1], offset, log[offset])
        if tp not in self.eof_sent:
            self.eof_sent.add(tp)
            return _Msg(tp[0], tp[1], self.high[tp], eof=True)
        return None


def test_a_replay_yields_every_message_once_in_time_order_through_pauses() -> None:
    logs = {
        ("a", 0): {o: 10 * o for o in range(12)},  # early and steady
        ("b", 0): {0: 5, 1: 200},  # offset 2 is a transaction marker: the partition ends on EOF
        ("c", 1): {o: 100 + o for o in range(9)},
    }  # late: its buffer fills and it is paused
    high = {("a", 0): 12, ("b", 0): 3, ("c", 1): 9}
    ranges = {tp: (0, h) for tp, h in high.items()}
    consumer = FakeConsumer(logs, high)
    batches = list(replay(consumer, ranges, batch_size=4, cap=2))  # type: ignore[arg-type]
    got = [(m.topic, m.partition, m.offset) for b in batches for m in b]
    expected = sorted(((t, p, o) for (t, p), log in logs.items() for o in log), key=lambda x: (logs[x[:2]][x[2]], x))
    assert got == expected
    assert all(len(b) <= 4 for b in batches)


def test_a_replay_reads_nothing_past_the_end_taken() -> None:
    logs = {("a", 0): {o: o for o in range(10)}}
    batches = list(replay(FakeConsumer(logs, {("a", 0): 10}), {("a", 0): (3, 6)}, batch_size=100))  # type: ignore[arg-type]
    assert [m.offset for b in batches for m in b] == [3, 4, 5]
