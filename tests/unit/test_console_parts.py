"""The console's pure parts: the filter's SQL, the word diff, bulk command ids, training overrides
checked like the config, access, and the live feed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from console.auth import TokenAuthorizer
from console.commands import bulk_commands, check_overrides, request_training
from console.diff import word_diff
from console.errors import BadRequest, Unauthorized
from console.filters import PairFilter
from console.live import LiveFeed, feed_item
from schemas.commands import MAX_BULK_PAIRS, DeactivatePairs, ReweightPairs
from schemas.config import Config, ConsoleSettings
from schemas.events import TrainingProgressed, TrainingSucceeded

# -- the filter ------------------------------------------------------------------------------------


def test_no_filter_matches_everything() -> None:
    assert PairFilter().where() == ("1", {})


def test_every_filter_value_is_a_bound_parameter() -> None:
    f = PairFilter(
        user="alice'; DROP TABLE x",
        feedback_type="correction",
        quality_min=0.2,
        quality_max=0.8,
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=datetime(2026, 12, 1, tzinfo=UTC),
        active=False,
        near_identical=True,
    )
    where, params = f.where()
    assert "DROP" not in where and params["f_user"] == "alice'; DROP TABLE x"
    assert where.count(" AND ") == 7
    assert params["f_since"] == "2026-11-01 00:00:00.000" and params["f_active"] is False
    assert "JSONExtractBool(metadata, 'near_identical') = {f_near:Bool}" in where


def test_a_filter_that_cannot_match_is_refused_with_the_values() -> None:
    with pytest.raises(ValidationError, match=r"quality_min 0\.9 is above quality_max 0\.1"):
        PairFilter(quality_min=0.9, quality_max=0.1)
    with pytest.raises(ValidationError, match="not before"):
        PairFilter(since=datetime(2026, 12, 2, tzinfo=UTC), until=datetime(2026, 12, 1, tzinfo=UTC))
    with pytest.raises(ValidationError):
        PairFilter(feedback_type="shrug")


def test_the_canonical_text_of_a_filter_is_stable() -> None:
    assert PairFilter(user="a", active=True).canonical() == PairFilter(active=True, user="a").canonical()
    assert PairFilter(user="a").canonical() == '{"user":"a"}'


# -- the word diff ---------------------------------------------------------------------------------


def test_the_word_diff_marks_what_the_correction_added_and_removed() -> None:
    ops = word_diff("The capital of Peru is Quito.", "The capital of Peru is Lima. Hope this helps!")
    assert ops == [("same", "The capital of Peru is "), ("removed", "Quito."), ("added", "Lima. Hope this helps!")]


@pytest.mark.parametrize(("rejected", "chosen"), [("", "new text"), ("a  b\tc", "a b c d"), ("x y z", "")])
def test_the_diff_gives_both_texts_back(rejected: str, chosen: str) -> None:
    ops = word_diff(rejected, chosen)
    assert "".join(t for op, t in ops if op != "removed") == chosen
    assert "".join(t for op, t in ops if op != "added") == rejected


# -- bulk commands ---------------------------------------------------------------------------------


def rows(user: str, n: int, version: int = 1) -> list[tuple[str, uuid.UUID, int]]:
    return [(user, uuid.uuid5(uuid.NAMESPACE_OID, f"{user}{i}"), version) for i in range(n)]


def test_a_bulk_action_is_one_command_per_user_in_chunks() -> None:
    commands = bulk_commands("deactivate", rows("bob", 3) + rows("alice", MAX_BULK_PAIRS + 1), '{"f":1}')
    assert [(c.user_id, len(c.pair_ids)) for c in commands] == [("alice", MAX_BULK_PAIRS), ("alice", 1), ("bob", 3)]
    assert all(isinstance(c, DeactivatePairs) and c.filter == '{"f":1}' for c in commands)
    assert len({c.command_id for c in commands}) == 3


def test_the_same_selection_sends_the_same_command_ids_and_a_changed_one_new_ids() -> None:
    first = bulk_commands("reweight", rows("alice", 5), "", weight=0.5)
    again = bulk_commands("reweight", list(reversed(rows("alice", 5))), "", weight=0.5)
    assert [c.command_id for c in first] == [c.command_id for c in again]  # a retried request is a no-op
    later = bulk_commands("reweight", rows("alice", 5, version=9), "", weight=0.5)  # the rows changed since
    other_weight = bulk_commands("reweight", rows("alice", 5), "", weight=2.0)
    assert first[0].command_id not in {later[0].command_id, other_weight[0].command_id}
    assert isinstance(first[0], ReweightPairs) and first[0].training_weight == 0.5


def test_a_reweight_without_a_weight_is_refused() -> None:
    with pytest.raises(BadRequest, match="needs a weight"):
        bulk_commands("reweight", rows("alice", 1), "")


# -- training overrides ----------------------------------------------------------------------------


def test_overrides_are_checked_by_the_configs_own_validation_and_named_by_key() -> None:
    cfg = Config()
    assert check_overrides(cfg, {"learning_rate": 1e-3, "num_train_epochs": 2}) == {}
    problems = check_overrides(cfg, {"per_device_train_batch_size": 2.5, "betta": 0.2})
    assert set(problems) == {"per_device_train_batch_size", "betta"}
    assert "did you mean beta" in problems["betta"]
    assert "a number is expected" in check_overrides(cfg, {"beta": True})["beta"]


def test_a_training_request_with_bad_overrides_says_which_field() -> None:
    with pytest.raises(BadRequest) as err:
        request_training(Config(), "alice", {"per_device_train_batch_size": 2.5})
    assert set(err.value.fields) == {"per_device_train_batch_size"}
    command = request_training(Config(), "alice", {"num_train_epochs": 4})
    assert command.dpo_overrides == {"num_train_epochs": 4} and command.issued_by == "console"


# -- access ----------------------------------------------------------------------------------------


def request(host: str, token: str | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (host, 5000)})


def test_reads_are_open_on_loopback_and_need_the_token_from_elsewhere() -> None:
    auth = TokenAuthorizer("s3cret")
    auth.require_reader(request("127.0.0.1"))
    auth.require_reader(request("::1"))
    with pytest.raises(Unauthorized):
        auth.require_reader(request("10.1.2.3"))
    auth.require_reader(request("10.1.2.3", "s3cret"))


def test_changes_need_the_right_token_even_on_loopback() -> None:
    auth = TokenAuthorizer("s3cret")
    with pytest.raises(Unauthorized, match="needs the admin token"):
        auth.require_admin(request("127.0.0.1"))
    with pytest.raises(Unauthorized, match="wrong"):
        auth.require_admin(request("127.0.0.1", "guess"))
    auth.require_admin(request("127.0.0.1", "s3cret"))


def test_without_a_configured_token_every_change_is_refused_and_the_answer_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SAMTUNER_ADMIN_TOKEN", raising=False)
    auth = TokenAuthorizer.from_settings(ConsoleSettings())
    assert not auth.configured
    with pytest.raises(Unauthorized, match="SAMTUNER_ADMIN_TOKEN"):
        auth.require_admin(request("127.0.0.1", "anything"))
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    auth = TokenAuthorizer.from_settings(ConsoleSettings(admin_token_file=str(token_file)))
    auth.require_admin(request("127.0.0.1", "from-a-file"))
    with pytest.raises(Unauthorized, match="cannot read"):
        TokenAuthorizer.from_settings(ConsoleSettings(admin_token_file=str(tmp_path / "missing")))


def test_with_api_keys_the_console_asks_for_a_read_key_and_its_actions_for_an_admin_key() -> None:
    from fastapi import HTTPException

    from console.wiring import console_authorizer
    from schemas.keys import ApiKey, hash_token

    keys = (
        ApiKey(id="reader", sha256=hash_token("r-token"), scopes=("read",)),
        ApiKey(id="ops", sha256=hash_token("o-token"), scopes=("admin",)),
        ApiKey(id="alice-app", sha256=hash_token("a-token"), scopes=("read",), users=("alice",)),
    )
    auth = console_authorizer(Config.model_validate({"auth": {"keys": [k.model_dump() for k in keys]}}))
    assert auth.configured
    with pytest.raises(HTTPException) as refused:  # keys replace the loopback rule: no key, no page
        auth.require_reader(request("127.0.0.1"))
    assert refused.value.status_code == 401
    auth.require_reader(request("10.1.2.3", "r-token"))
    with pytest.raises(HTTPException) as refused:
        auth.require_admin(request("127.0.0.1", "r-token"))
    assert refused.value.status_code == 403
    auth.require_admin(request("127.0.0.1", "o-token"))
    with pytest.raises(HTTPException) as refused:  # the console shows every user: a per-user key may not read it
        auth.require_reader(request("127.0.0.1", "a-token"))
    assert refused.value.status_code == 403
    assert isinstance(console_authorizer(Config()), TokenAuthorizer)  # no keys: the admin token as before


# -- the live feed ---------------------------------------------------------------------------------


def progressed(rid: uuid.UUID, step: int) -> TrainingProgressed:
    return TrainingProgressed(
        event_id=uuid.uuid4(),
        user_id="alice",
        correlation_id=rid,
        request_id=rid,
        step=step,
        total_steps=10,
        loss=0.5,
        eta_s=3.0,
        metrics={"rewards/margins": 0.25},
    )


def test_a_progress_event_becomes_a_point_for_the_page() -> None:
    rid = uuid.uuid4()
    item = feed_item(progressed(rid, 4))
    assert item is not None
    assert (item["type"], item["request_id"], item["step"], item["loss"], item["reward_margin"], item["eta_s"]) == (
        "TrainingProgressed",
        str(rid),
        4,
        0.5,
        0.25,
        3.0,
    )
    done = feed_item(
        TrainingSucceeded(
            event_id=uuid.uuid4(),
            user_id="alice",
            correlation_id=rid,
            request_id=rid,
            adapter_version=2,
            adapter_uri="a",
            duration_s=1.0,
        )
    )
    assert done is not None and done["adapter_version"] == 2


def test_subscribers_get_the_events_of_their_job_in_order() -> None:
    feed = LiveFeed()
    mine, other = uuid.uuid4(), uuid.uuid4()

    async def run() -> tuple[list[int], list[int]]:
        _, one = feed.subscribe(str(mine))
        _, every = feed.subscribe()
        for step in (1, 2):
            feed.offer(progressed(mine, step))
        feed.offer(progressed(other, 9))
        await asyncio.sleep(0)
        return (
            [(await one.get())["step"] for _ in range(one.qsize())],
            [(await every.get())["step"] for _ in range(every.qsize())],
        )

    assert asyncio.run(run()) == ([1, 2], [1, 2, 9])
    assert feed.delivered == 5
