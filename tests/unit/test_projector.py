"""The projector writes batches idempotently and acts on the log in order: snapshots at thresholds,
pair updates, erasure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from infra.artifacts import ArtifactStore
from infra.kafka import RawMessage
from schemas.codec import decode, encode_value
from schemas.commands import DeactivatePair, EraseUser, ReweightPair
from schemas.events import AdapterRevoked, Event, PairAccepted, TrainingRequested, UserErased
from schemas.ids import user_key
from schemas.snapshot import read_snapshot
from schemas.topics import Topics
from streams.projector.projection import Projector
from tests.fakes import FakePublisher, FakeSink
from tests.unit.test_decide import Decider, fb

TOPICS = Topics()


def as_messages(events: Sequence[Event], topic: str = TOPICS.pairs, start: int = 0) -> list[RawMessage]:
    return [RawMessage(topic, 0, start + i, e.user_id.encode(), encode_value(e), (), 0) for i, e in enumerate(events)]


def projector(tmp_path: Path, sink: FakeSink, publisher: FakePublisher) -> Projector:
    return Projector(sink, ArtifactStore(tmp_path), publisher, TOPICS, sleep=lambda s: None)


def test_the_snapshot_holds_the_pairs_before_the_threshold_and_the_batch_is_one_insert(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    events = Decider(min_new_pairs=3).feed(*[fb(n) for n in range(4)])  # 3 pairs, threshold, 1 pair
    result = projector(tmp_path, sink, publisher).project(as_messages(events))
    assert [(t, n) for t, n, _ in sink.inserts] == [("preference_pairs", 4)]
    (request,) = result.training_requests
    assert request.dataset.rows == 3
    before = sorted(str(e.pair_id) for e in events[:3] if isinstance(e, PairAccepted))
    assert [str(p) for p in request.dataset.pair_ids] == before
    data = ArtifactStore(tmp_path).read_verified(request.dataset.uri, request.dataset.sha256)
    assert len(read_snapshot(data)) == 3
    (sent,) = publisher.on(TOPICS.training)
    assert isinstance(decode(sent[2]), TrainingRequested)


def test_the_snapshot_holds_the_users_labelled_examples_too(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    events = Decider(min_new_pairs=2).feed(fb(0, kind="thumbs_up"), fb(1, kind="thumbs_down"), fb(2), fb(3))
    (request,) = projector(tmp_path, sink, publisher).project(as_messages(events)).training_requests
    assert (request.dataset.rows, len(request.dataset.pair_ids), len(request.dataset.example_ids)) == (4, 2, 2)
    rows = read_snapshot(ArtifactStore(tmp_path).read_verified(request.dataset.uri, request.dataset.sha256))
    assert sorted((r["kind"], r["desirable"]) for r in rows) == [
        ("example", False),
        ("example", True),
        ("pair", None),
        ("pair", None),
    ]


def test_a_threshold_projected_again_does_not_request_training_twice(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    messages = as_messages(Decider(min_new_pairs=3).feed(*[fb(n) for n in range(3)]))
    p = projector(tmp_path, sink, publisher)
    p.project(messages)
    p.project(messages)
    assert len(publisher.on(TOPICS.training)) == 1


def test_the_same_batch_twice_is_written_once(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    messages = as_messages(Decider().feed(fb(0), fb(1)))
    p = projector(tmp_path, sink, publisher)
    p.project(messages)
    p.project(messages)
    assert len(sink.inserts) == 1
    assert len(sink.tables["preference_pairs"]) == 2


def test_a_transient_store_failure_is_retried(tmp_path: Path) -> None:
    sink, publisher = FakeSink(fail_times=2), FakePublisher()
    projector(tmp_path, sink, publisher).project(as_messages(Decider().feed(fb(0), fb(1))))
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


def test_deactivation_and_reweighting_change_the_stored_pair(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    d = Decider()
    (pair,) = d.feed(fb(0))
    assert isinstance(pair, PairAccepted)
    commands = d.feed(
        DeactivatePair(user_id="alice", pair_id=pair.pair_id),
        ReweightPair(user_id="alice", pair_id=pair.pair_id, training_weight=0.25),
    )
    projector(tmp_path, sink, publisher).project(as_messages([pair, *commands]))
    row = sink.tables["preference_pairs"][pair.pair_id]
    assert row["is_active"] is False and row["training_weight"] == 0.25


def test_erasure_deletes_rows_and_files_and_revokes_adapters(tmp_path: Path) -> None:
    sink, publisher = FakeSink(), FakePublisher()
    d = Decider(min_new_pairs=2)
    events = d.feed(fb(0), fb(1))
    p = projector(tmp_path, sink, publisher)
    (request,) = p.project(as_messages(events)).training_requests
    adapter_dir = tmp_path / "adapters" / user_key("alice") / "1"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"w")
    sink.insert(
        "training_requests",
        [[request.request_id, "alice", request.dataset.uri]],
        ["request_id", "user_id", "dataset_uri"],
        "t",
    )
    p.project(as_messages(d.feed(EraseUser(user_id="alice")), start=10))
    assert sink.erased == ["alice"] and not sink.tables["preference_pairs"]
    assert not (tmp_path / request.dataset.uri).exists() and not adapter_dir.exists()
    (revoked,) = publisher.on(TOPICS.adapters)
    assert isinstance(decode(revoked[2]), AdapterRevoked)
    (erased,) = [e for e in (decode(m[2]) for m in publisher.on(TOPICS.pairs)) if isinstance(e, UserErased)]
    assert erased.report.rows["preference_pairs"] == 2 and erased.report.rows["training_requests"] == 1
    assert erased.report.files == {"datasets": 1, "adapters": 1, "checkpoints": 0}
    assert erased.report.decider["pair_fingerprints"] == 2 and erased.report.kept
