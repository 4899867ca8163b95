"""A threshold's snapshot holds the log before it, whether its batch is written before or after the cut.

The projector reads the store once for a batch's thresholds, before it writes the batch's rows, and adds
each user's rows that come before the threshold. These stories check that against the other way, one
message per batch (each threshold reads back what was written before it), on a real chDB store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.kafka import RawMessage
from schemas.codec import encode_value
from schemas.commands import DeactivatePair
from schemas.events import Event, PairAccepted, TrainingRequested
from schemas.snapshot import read_snapshot
from schemas.topics import Topics
from streams.projector import rows as R
from streams.projector import snapshots as S
from streams.projector.projection import ClickHouseSink, Projector
from tests.fakes import FakePublisher
from tests.unit.test_decide import Decider, fb

TOPICS = Topics()


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield f"chdb://{tmp_path_factory.mktemp('snapshots') / 'ch'}"


def store_of(dsn: str, database: str) -> ClickHouseStore:
    store = ClickHouseStore(dsn, database=database)
    store.migrate()
    return store


def messages(events: list[Event]) -> list[RawMessage]:
    return [RawMessage(TOPICS.pairs, 0, i, e.user_id.encode(), encode_value(e), (), 0) for i, e in enumerate(events)]


def requests(dsn: str, database: str, root: Path, batches: list[list[RawMessage]]) -> list[TrainingRequested]:
    store = store_of(dsn, database)
    try:
        p = Projector(ClickHouseSink(store), ArtifactStore(root), FakePublisher(), TOPICS, sleep=lambda s: None)
        return [r for batch in batches for r in p.project(batch).training_requests]
    finally:
        store.close()


def story() -> list[Event]:
    """Two users; alice crosses her threshold twice (pairs, thumbs, a redelivered pair, a deactivation)."""
    d = Decider(min_new_pairs=3)
    events = d.feed(fb(0), fb(1), fb(2, kind="thumbs_up"), fb(3, user="bob"), fb(4), fb(5, user="bob"))
    events += d.feed(fb(6), fb(7, user="bob"), fb(8, kind="thumbs_down"), fb(9), fb(10))
    first_pair = next(e for e in events if isinstance(e, PairAccepted) and e.user_id == "alice")
    events.append(first_pair)  # the decider's at-least-once output: the same pair again, later in the log
    events += d.feed(DeactivatePair(user_id="alice", pair_id=first_pair.pair_id), fb(11), fb(12), fb(13))
    return events


def test_a_batch_cut_gives_the_snapshots_of_a_cut_after_each_message(dsn: str, tmp_path: Path) -> None:
    log = messages(story())
    together = requests(dsn, "sam_batch", tmp_path / "a", [log])
    alone = requests(dsn, "sam_alone", tmp_path / "b", [[m] for m in log])
    assert len(together) == len(alone) >= 3
    assert [(r.request_id, r.dataset.sha256, r.dataset.rows) for r in together] == [
        (r.request_id, r.dataset.sha256, r.dataset.rows) for r in alone
    ]
    assert [sorted(r.dataset.pair_ids) for r in together] == [sorted(r.dataset.pair_ids) for r in alone]
    assert [r.dataset.example_ids for r in together] == [r.dataset.example_ids for r in alone]


def test_a_pair_after_the_threshold_in_the_same_batch_is_not_in_its_snapshot(dsn: str, tmp_path: Path) -> None:
    d = Decider(min_new_pairs=2)
    events = d.feed(fb(0, user="carol"), fb(1, user="carol"), fb(2, user="carol"))  # pair, pair, threshold, pair
    (request,) = requests(dsn, "sam_after", tmp_path, [messages(events)])
    before = {e.pair_id for e in events[:3] if isinstance(e, PairAccepted)}
    assert set(request.dataset.pair_ids) == before and len(before) == 2
    rows = read_snapshot(ArtifactStore(tmp_path).read_verified(request.dataset.uri, request.dataset.sha256))
    assert sorted(r["pair_id"] for r in rows) == sorted(str(p) for p in before)


def test_a_later_row_of_a_pair_replaces_the_stored_one() -> None:
    pid = uuid.uuid4()
    stored = [{"pair_id": pid, "prompt": "p", "training_weight": 0.5}]
    pair = PairAccepted.model_validate_json(
        encode_value(next(e for e in Decider().feed(fb(0)) if isinstance(e, PairAccepted)))
    )
    row = R.pair_row(pair.model_copy(update={"pair_id": pid}), version=9)
    (merged,) = S.active_pairs_at(stored, [row])
    assert (merged["training_weight"], merged["prompt"]) == (pair.training_weight, pair.prompt)


def test_times_are_kept_as_the_store_keeps_them() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    assert S.stored_ms(at) == datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
