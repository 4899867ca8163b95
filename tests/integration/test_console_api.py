"""The console's JSON API over the embedded ClickHouse, fed by the real projector (events decided by
the real decider, no broker: commands are captured at the console's send seam)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from console.app import ASSETS, STATIC, console_app
from console.auth import TokenAuthorizer
from console.deps import ConsoleDeps
from console.filters import PairFilter
from console.queries import ConsoleQueries
from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.kafka import RawMessage
from schemas.commands import Command, DeactivatePairs, ReweightPairs
from schemas.config import Config
from schemas.events import (
    AdapterPublished,
    AnswerServed,
    BaseModelRef,
    Event,
    FeedbackReceived,
    PairRejected,
    TrainingSucceeded,
)
from streams.projector.projection import ClickHouseSink, Projector
from tests.fakes import FakePublisher
from tests.unit.test_decide import Decider, fb
from tests.unit.test_projector import TOPICS, as_messages

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-secret"}
LONG = "The answer to question twenty is a long sentence with many words that hardly change at all here."


class Kit:
    def __init__(self, tmp_path: Path) -> None:
        self.store = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "sam")
        self.store.migrate()
        self.publisher = FakePublisher()
        self.projector = Projector(
            ClickHouseSink(self.store),
            ArtifactStore(tmp_path / "artifacts"),
            self.publisher,
            TOPICS,
            sleep=lambda s: None,
        )
        topics = (TOPICS.pairs, TOPICS.training, TOPICS.inference, TOPICS.feedback, TOPICS.adapters)
        self.offsets = dict.fromkeys(topics, 0)
        self.sent: list[Command] = []
        cfg = Config.model_validate({"state_dir": str(tmp_path / "state"), "trigger": {"min_new_pairs": 4}})
        self.deps = ConsoleDeps(
            cfg=cfg,
            authorizer=TokenAuthorizer("admin-secret"),
            queries=ConsoleQueries(self.store),
            send_command=self.sent.append,
            artifacts=ArtifactStore(tmp_path / "artifacts"),
        )
        self.client = TestClient(console_app(self.deps))

    def project(self, events: list[Event], topic: str = TOPICS.pairs) -> Any:
        result = self.projector.project(as_messages(events, topic=topic, start=self.offsets[topic]))
        self.offsets[topic] += len(events)
        return result

    def get(self, path: str, **kw: Any) -> Any:
        r = self.client.get(path, **kw)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    try:
        yield k
    finally:
        k.store.close()


def test_pairs_are_paged_filtered_and_exported_in_trls_format(kit: Kit) -> None:
    d = Decider(min_new_pairs=100)
    kit.project(
        d.feed(
            *[fb(n) for n in range(7)],
            *[fb(n, user="bob") for n in range(3)],
            fb(20, original=LONG, corrected=LONG + " Thanks"),
        )
    )  # a near-identical edit
    page = kit.get("/api/v1/pairs?size=4")
    assert page["total"] == 11 and len(page["rows"]) == 4
    first = page["rows"][0]
    assert {"quality_score", "confidence_score", "diff", "near_identical"} <= set(first)
    assert "".join(t for op, t in first["diff"] if op != "removed") == first["chosen_response"]
    pages = [kit.get(f"/api/v1/pairs?size=4&page={p}")["rows"] for p in range(3)]
    assert len({r["pair_id"] for rows in pages for r in rows}) == 11  # the pages cover every pair once
    assert kit.get("/api/v1/pairs?user=bob")["total"] == 3
    assert kit.get("/api/v1/pairs?near_identical=true")["total"] == 1
    assert kit.get("/api/v1/pairs?quality_min=0.99")["total"] == 0

    lines = kit.client.get("/api/v1/pairs/export?user=bob&format=jsonl").text.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(r)[:3] for r in rows] == [["prompt", "chosen", "rejected"]] * 3
    assert {r["user_id"] for r in rows} == {"bob"}
    parquet = pq.read_table(io.BytesIO(kit.client.get("/api/v1/pairs/export?format=parquet").content))
    assert parquet.num_rows == 11 and parquet.column_names[:3] == ["prompt", "chosen", "rejected"]
    batches = list(kit.deps.need_queries().export(PairFilter(), "jsonl", batch=3))  # keyset paging
    exported = [json.loads(line) for chunk in batches for line in chunk.splitlines()]
    assert len(batches) == 4 and len(exported) == 11 and len({r["pair_id"] for r in exported}) == 11


def test_a_bad_filter_names_the_parameter(kit: Kit) -> None:
    r = kit.client.get("/api/v1/pairs?quality_min=0.9&quality_max=0.1")
    assert r.status_code == 400 and r.json()["field"] == "quality_min"
    r = kit.client.get("/api/v1/pairs?feedback_type=shrug")
    assert r.status_code == 400 and r.json()["field"] == "feedback_type"
    assert kit.client.get("/api/v1/pairs?size=100000").json()["field"] == "size"


def test_a_bulk_action_needs_the_token_and_sends_the_matching_ids_per_user(kit: Kit) -> None:
    d = Decider(min_new_pairs=100)
    kit.project(d.feed(*[fb(n) for n in range(5)], *[fb(n, user="bob") for n in range(2)]))
    body = {"filter": {"user": "alice"}, "action": "deactivate"}
    assert kit.client.post("/api/v1/pairs/bulk", json=body).status_code == 401
    assert kit.client.post("/api/v1/pairs/bulk", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    stale = kit.client.post("/api/v1/pairs/bulk", json={**body, "expect": 3}, headers=ADMIN)
    assert stale.status_code == 400 and "matches 5" in stale.json()["detail"]
    r = kit.client.post("/api/v1/pairs/bulk", json=body, headers=ADMIN)
    assert r.status_code == 202 and r.json()["changing"] == 5
    (command,) = kit.sent
    assert isinstance(command, DeactivatePairs) and len(command.pair_ids) == 5 and command.user_id == "alice"

    # The command goes the real way: decided, projected; then the table shows it.
    kit.project(d.feed(command))
    assert kit.get("/api/v1/pairs?user=alice&active=true")["total"] == 0
    assert kit.get("/api/v1/pairs?active=true")["total"] == 2
    again = kit.client.post("/api/v1/pairs/bulk", json=body, headers=ADMIN).json()
    assert again["changing"] == 0 and again["commands"] == []  # nothing left to change

    reweight = kit.client.post(
        "/api/v1/pairs/bulk", json={"filter": {}, "action": "reweight", "weight": 0.5}, headers=ADMIN
    )
    assert reweight.json()["users"] == 2
    commands = kit.sent[1:]
    assert all(isinstance(c, ReweightPairs) for c in commands)
    kit.project(d.feed(*commands))
    weights = {r["training_weight"] for r in kit.get("/api/v1/pairs?size=50")["rows"]}
    assert weights == {0.5}


def test_rejections_and_dead_letters_by_reason(kit: Kit) -> None:
    d = Decider(min_new_pairs=100)
    kit.project(d.feed(fb(0), fb(0, fid="again"), fb(1, confidence=0.1), b"not json"))
    dlq = [(TOPICS.dlq, key, value, headers) for topic, key, value, headers in d.last.outgoing if topic == TOPICS.dlq]
    kit.projector.project([RawMessage(t, 0, i, k, v, tuple(h), 0) for i, (t, k, v, h) in enumerate(dlq)])
    rejected = kit.get("/api/v1/rejected")
    assert {r["reason"] for r in rejected["reasons"]} == {"duplicate_pair", "low_confidence", "low_quality"}
    only = kit.get("/api/v1/rejected?reason=low_confidence")
    assert only["total"] == 1 and "low_confidence" in only["rows"][0]["reason_codes"]
    assert kit.get("/api/v1/rejected?reason=duplicate_pair")["rows"][0]["reason_codes"] == ["duplicate_pair"]
    dead = kit.get("/api/v1/dead-letters?reason=invalid_json")
    assert dead["total"] == 1 and dead["reasons"] == [{"reason": "invalid_json", "count": 1}]


def test_training_requests_check_overrides_and_users_show_their_threshold(kit: Kit) -> None:
    d = Decider(min_new_pairs=100)
    kit.project(d.feed(*[fb(n) for n in range(3)]))
    (user,) = kit.get("/api/v1/users")["rows"]
    assert (user["user_id"], user["new_pairs"], user["progress"]) == ("alice", 3, "3 / 4")
    bad = kit.client.post("/api/v1/training", json={"user": "alice", "overrides": {"betta": 0.1}}, headers=ADMIN)
    assert bad.status_code == 400 and "did you mean beta" in bad.json()["fields"]["betta"]
    assert kit.sent == []
    ok = kit.client.post(
        "/api/v1/training", json={"user": "alice", "overrides": {"num_train_epochs": 2}}, headers=ADMIN
    )
    assert ok.status_code == 202 and kit.sent[0].dpo_overrides == {"num_train_epochs": 2}  # type: ignore[attr-defined]


def test_the_trace_follows_a_correction_to_the_answers_served_and_an_answer_back(kit: Kit) -> None:
    d = Decider(min_new_pairs=3)
    events = d.feed(*[fb(n) for n in range(3)], fb(9, confidence=0.1))
    (request,) = kit.project(events).training_requests
    kit.project([request], TOPICS.training)
    pair = events[0]
    assert pair.pair_id in request.dataset.pair_ids  # type: ignore[attr-defined]
    # The traced pair trains; the others are held out (the dataset's order is not a contract).
    trained = (pair.pair_id,)  # type: ignore[attr-defined]
    rid = request.request_id
    common = {"user_id": "alice", "correlation_id": request.correlation_id}
    adapter = AdapterPublished(
        event_id=uuid.uuid4(),
        version=1,
        request_id=rid,
        uri="adapters/x/1",
        files={},
        base_model=BaseModelRef(name_or_path="m", weights_sha256="0" * 64),
        dataset_sha256=request.dataset.sha256,
        triggered_at=request.triggered_at,
        train_pair_ids=trained,
        heldout_pair_ids=tuple(p for p in request.dataset.pair_ids if p not in trained),
        **common,
    )
    done = TrainingSucceeded(
        event_id=uuid.uuid4(), request_id=rid, adapter_version=1, adapter_uri="adapters/x/1", duration_s=3.0, **common
    )
    kit.project([done], TOPICS.training)
    kit.project([adapter], TOPICS.adapters)
    answer_id = uuid.uuid4()
    kit.project(
        [
            AnswerServed(
                event_id=answer_id,
                answer_id=answer_id,
                node_id="n1",
                arm="new",
                adapter_version=1,
                latency_ms=5.0,
                user_id="alice",
                correlation_id=answer_id,
            )
        ],
        TOPICS.inference,
    )
    correction = FeedbackReceived(
        event_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        user_id="alice",
        feedback_id="x",
        prompt="p?",
        original_response="a",
        corrected_response="b",
        context={"answer_id": str(answer_id)},
    )
    kit.project([correction], TOPICS.feedback)

    trace = kit.get(f"/api/v1/trace/{pair.feedback_event_id}")  # type: ignore[attr-defined]
    steps = [s["step"] for s in trace["steps"]]
    assert steps == ["feedback", "pair", "threshold", "job", "adapter", "answers"], steps
    job = trace["steps"][3]
    assert job["status"] == "succeeded" and job["adapter_version"] == 1
    assert trace["steps"][4]["trained_on"] is True
    assert trace["steps"][5]["total"] == 1 and trace["steps"][5]["rows"][0]["answer_id"] == str(answer_id)

    by_sams_id = kit.get("/api/v1/trace/f0?user=alice")
    assert by_sams_id["kind"] == "pair"

    back = kit.get(f"/api/v1/trace/chatcmpl-{answer_id.hex}")
    assert [s["step"] for s in back["steps"]] == ["answer", "adapter", "job", "answer_feedback"]
    assert back["steps"][3]["outcome"] == "pending"  # that feedback was never decided in this test

    rejected = next(e for e in events if isinstance(e, PairRejected))
    trace = kit.get(f"/api/v1/trace/{rejected.feedback_event_id}")
    assert trace["kind"] == "rejected" and trace["steps"][1]["reasons"][0]["code"] == "low_confidence"
    missing = kit.client.get(f"/api/v1/trace/{uuid.uuid4()}")
    assert missing.status_code == 404 and "nothing found" in missing.json()["detail"]

    jobs = kit.get("/api/v1/jobs")["rows"]
    assert [(j["request_id"], j["status"], j["generation"]) for j in jobs] == [(str(rid), "succeeded", 1)]
    detail = kit.get("/api/v1/models/alice/detail")
    assert [v["version"] for v in detail["versions"]] == [1] and detail["correction_rates"][0]["answers"] == 1


def test_the_page_and_its_assets_are_served_locally_and_nothing_else(kit: Kit) -> None:
    page = kit.client.get("/console/")
    assert page.status_code == 200 and "/console/static/app.js" in page.text
    assert kit.client.get("/console/static/app.js").status_code == 200
    assert kit.client.get("/console/static/..%2Fapp.py").status_code == 404
    assert kit.client.get("/docs").status_code == 200
    for path in ASSETS.values():  # nothing is fetched from another host at run time
        text = path.read_text()
        assert "//cdn" not in text and 'src="http' not in text and 'href="http' not in text, path
    assert (STATIC / "index.html").exists()
    me = kit.get("/api/v1/whoami")
    assert me["admin"] is False and me["store"] is True and me["node"] is False
    assert kit.get("/api/v1/whoami", headers=ADMIN)["admin"] is True
    assert kit.client.get("/api/v1/nodes").status_code == 503

    remote = TestClient(kit.client.app, client=("10.0.0.5", 40000))  # not loopback: reads need the token
    assert remote.get("/console/").status_code == 200  # the page holds no data; it asks for the token
    assert remote.get("/api/v1/pairs").status_code == 401
    assert remote.get("/api/v1/pairs", headers=ADMIN).status_code == 200
