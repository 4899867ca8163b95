"""Rebuilding projections from the log: the projector replays rows only, in time order, into the tables
asked for; a table that is not a projection is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
from streams.projector import COLUMNS, Projector
from streams.rebuild import PROJECTIONS, RefusingPublisher, SelectedSink, TimeOrderedMerge, select_tables
from tests.fakes import FakeSink
from tests.unit.test_decide import Decider, fb
from tests.unit.test_projector import as_messages

TOPICS = Topics()


def replaying(tmp_path: Path, sink: FakeSink, tables: tuple[str, ...] = PROJECTIONS) -> Projector:
    return Projector(SelectedSink(sink, tables), ArtifactStore(tmp_path), RefusingPublisher(), TOPICS,
                     sleep=lambda s: None, effects=False)


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
    done = subprocess.run([sys.executable, "-c", SWAP_STORY, f"chdb://{tmp_path / 'ch'}"], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "missing" in out["failed"]
    assert out["after_failure"] == [[1], [1]], "a failed swap leaves the live tables as they were"
    assert out["how"] == "exchange" and out["after_swap"] == [[2, 3], [2, 3]]
    assert out["databases"] == ["live"]
    assert "own database" in out["refused"]
