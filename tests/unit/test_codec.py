"""Bytes on a topic either decode to a known event or fail with a stable reason."""

from __future__ import annotations

import json
import uuid

import pytest

from schemas.codec import decode, decode_as, encode_value
from schemas.errors import EventDecodeError
from schemas.events import FeedbackReceived, PairAccepted
from tests.unit.test_decide import fb


def test_an_event_round_trips() -> None:
    event = fb(1)
    assert decode(encode_value(event)) == event


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty_message"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"not json {", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"user_id": "a"}', "missing_event_type"),
        (b'{"event_type": "FeedbackReceived"}', "invalid_event"),
        (b'{"event_type": "NoSuchEvent"}', "invalid_event"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    ],
)
def test_bad_bytes_fail_with_a_reason(payload: bytes | None, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode(payload)
    assert info.value.reason == reason


def test_wrong_types_name_the_field() -> None:
    raw = json.loads(encode_value(fb(1)))
    raw["confidence_score"] = "very high"
    with pytest.raises(EventDecodeError) as info:
        decode(json.dumps(raw).encode())
    assert "confidence_score" in info.value.detail


def test_decode_as_refuses_another_event_type() -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_as(encode_value(fb(1)), PairAccepted)
    assert info.value.reason == "unexpected_event_type"
    assert isinstance(decode_as(encode_value(fb(1)), FeedbackReceived), FeedbackReceived)


def test_the_wire_bytes_are_pydantics_json_of_every_decided_event() -> None:
    """encode_value skips a str round trip; the bytes must stay model_dump_json's (the JSON Schemas' form)."""
    from schemas.codec import encode_command, encode_headers
    from schemas.commands import EraseUser, RequestTraining
    from tests.unit.test_decide import Decider

    decider = Decider(min_new_pairs=2)
    events = decider.feed(
        fb(1),
        fb(2),
        fb(3, user="zoë", prompt="Qu'est-ce que c'est ? 東京 😀"),
        fb(1, fid="again"),
        fb(4, kind="thumbs_up"),
        fb(5, corrected="short"),
    )
    erase = EraseUser(command_id=uuid.uuid4(), user_id="alice")
    events += decider.feed(RequestTraining(command_id=uuid.uuid4(), user_id="zoë"), erase)
    assert {type(e).__name__ for e in events} >= {
        "PairAccepted",
        "PairRejected",
        "TrainingThresholdReached",
        "LabelledExampleAccepted",
        "UserForgotten",
    }
    for event in events:
        assert encode_value(event) == event.model_dump_json().encode("utf-8")
        assert decode(encode_value(event)) == event
        headers = dict(encode_headers(event))
        assert headers["event_id"] == str(event.event_id).encode()
        assert headers["correlation_id"] == str(event.correlation_id).encode()
    key, value, _ = encode_command(erase)
    assert key == b"alice" and value == erase.model_dump_json().encode("utf-8")
