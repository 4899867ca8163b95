"""The console's compare view: a node answers with exactly the version asked for, whatever the
user's routing says, and such answers are not logged as served to the user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from console.errors import BadRequest
from console.nodes import LocalNode
from inference.errors import AdapterRejected
from schemas.events import AnswerServed
from tests.nodes import PROMPT, NodeKit


@pytest.fixture
def kit(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    k = NodeKit(tmp_path, tiny_model)
    yield k
    k.close()


def test_each_version_answers_as_it_would_for_the_user(kit: NodeKit) -> None:
    kit.publish("alice", 1)
    kit.publish("alice", 2)
    served = {v: kit.node.answer_with_version(PROMPT, "alice", v) for v in (None, 1, 2)}
    assert [served[v].source for v in (None, 1, 2)] == ["base", "adapter", "adapter"]
    assert [served[v].arm for v in (None, 1, 2)] == ["base", "previous", "new"]
    assert served[2].text == kit.ask("alice").text  # the routed answer is the latest version's
    assert served[None].text == kit.ask(None).text
    assert len(kit.events(AnswerServed)) == 2  # only the two routed answers were served


def test_a_version_the_node_does_not_know_is_refused_with_the_known_ones(kit: NodeKit) -> None:
    kit.publish("alice", 1)
    with pytest.raises(AdapterRejected, match=r"known: \[1\]"):
        kit.node.answer_with_version(PROMPT, "alice", 7)
    with pytest.raises(BadRequest, match="version 7 cannot answer"):
        LocalNode(kit.node).answer(PROMPT, "alice", 7)
