"""Logs for machines: `logging.format: json` writes one object per line, lines about an event carry
its correlation_id, and secrets never reach a line."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.logcontext import correlation
from samtuner.logs import setup_logging
from schemas.commands import EraseUser
from tests.fakes import FakePublisher, FakeSink
from tests.unit.test_decide import Decider, fb
from tests.unit.test_projector import as_messages, projector

SECRET = "pa55-w0rd-that-must-not-leak"


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys  # the test calls setup_logging itself: pytest's own log capture replaces handlers per phase
    setup_logging("WARNING")


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    err = capsys.readouterr().err
    assert "Logging error" not in err, err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_a_line_about_an_event_carries_its_correlation_id_and_secrets_are_masked(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO", "json", secrets=[SECRET])
    log = logging.getLogger("samtuner.test")
    cid = uuid.uuid4()
    with correlation(cid):
        log.warning("handling it with %s", SECRET)
    log.warning("connecting to http://default:%s@db:8123", SECRET)
    about, other = lines(json_logs)
    assert about["correlation_id"] == str(cid) and about["level"] == "WARNING" and about["logger"] == "samtuner.test"
    assert about["message"] == "handling it with ***"
    assert "correlation_id" not in other and other["message"] == "connecting to http://default:***@db:8123"


def test_the_projector_logs_an_erasure_with_the_erasure_s_correlation_id(
    json_logs: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = Decider()
    d.feed(fb(0))
    (forgotten,) = d.feed(EraseUser(user_id="alice"))
    setup_logging("INFO", "json", secrets=[SECRET])
    projector(tmp_path, FakeSink(), FakePublisher()).project(as_messages([forgotten]))
    (line,) = [x for x in lines(json_logs) if "erased" in x["message"]]
    assert line["correlation_id"] == str(forgotten.correlation_id)


def test_text_logs_name_the_correlation_id_too(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "text", secrets=[SECRET])
    try:
        with correlation("abc"):
            logging.getLogger("samtuner.test").warning("x %s", SECRET)
        err = capsys.readouterr().err
        assert "x *** [correlation_id=abc]" in err and SECRET not in err
    finally:
        setup_logging("WARNING")
