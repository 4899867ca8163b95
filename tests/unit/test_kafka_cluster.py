"""A 3-broker cluster as configuration (no JVM): one quorum, replication defaults, ports from the
config; and the cause a failed acks=all publish is reported with."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.broker import Broker, Cluster, cluster_for, local_cluster
from infra.errors import BrokerError
from infra.kafka import PartitionReplicas, shortfall_lines


def props(broker: Broker) -> dict[str, str]:
    return dict(line.split("=", 1) for line in broker._properties().splitlines() if line)


def test_a_cluster_is_three_voters_that_replicate_every_topic_three_times(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path, ports=[19092, 19094, 19096], controller_ports=[19093, 19095, 19097])
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    for node_id, broker in enumerate(cluster.brokers, 1):
        p = props(broker)
        assert p["node.id"] == str(node_id) and p["controller.quorum.voters"] == voters
        assert {
            k: p[k]
            for k in (
                "default.replication.factor",
                "min.insync.replicas",
                "unclean.leader.election.enable",
                "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr",
            )
        } == {
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
        }
        assert broker.heap == "320m"
    # One cluster id for all nodes, kept across restarts of the test process.
    assert len({b.cluster_id for b in cluster.brokers}) == 1
    again = Cluster(home=tmp_path, ports=[19092, 19094, 19096], controller_ports=[19093, 19095, 19097])
    assert again.brokers[0].cluster_id == cluster.brokers[0].cluster_id


def test_a_single_broker_keeps_its_settings(tmp_path: Path) -> None:
    p = props(Broker(home=tmp_path, port=9092))
    assert p["node.id"] == "1" and p["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert p["offsets.topic.replication.factor"] == "1" and p["min.insync.replicas"] == "1"
    assert p["transaction.state.log.min.isr"] == "1"


def test_the_cluster_takes_its_ports_from_the_config_and_is_found_again(tmp_path: Path) -> None:
    one = cluster_for("127.0.0.1:29092", tmp_path, 3)
    assert [b.port for b in one.brokers] == [29092, 29094, 29096]
    assert [b.controller_port for b in one.brokers] == [29093, 29095, 29097]
    named = cluster_for("127.0.0.1:29092,localhost:29192,127.0.0.1:29292", tmp_path / "b", 3)
    assert [b.port for b in named.brokers] == [29092, 29192, 29292]
    with pytest.raises(BrokerError, match="names 2 brokers, not 3"):
        cluster_for("127.0.0.1:1,127.0.0.1:3", tmp_path, 3)
    with pytest.raises(BrokerError, match=r"not on 127\.0\.0\.1"):
        cluster_for("kafka.example:9092", tmp_path, 3)
    assert local_cluster(tmp_path) is None
    for b in one.brokers:  # what `kafka up --brokers 3` writes before it starts the JVMs
        b.home.mkdir(parents=True)
        (b.home / "server.properties").write_text(b._properties())
    found = local_cluster(tmp_path)
    assert found is not None and found.bootstrap == one.bootstrap
    assert [b.controller_port for b in found.brokers] == [29093, 29095, 29097]


def test_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="must differ"):
        Cluster(home=tmp_path, ports=[1, 2, 3], controller_ports=[3, 4, 5])


def test_two_brokers_down_is_named_as_the_isr_below_min_insync_replicas() -> None:
    stopped = [PartitionReplicas("sam.feedback", p, (1, 2, 3), (3,)) for p in range(3)]
    healthy = [PartitionReplicas("sam.pairs", 0, (1, 2, 3), (1, 2, 3))]
    lines = shortfall_lines(stopped + healthy, {"sam.feedback": 2, "sam.pairs": 2}, {})
    assert lines == [
        "sam.feedback partition(s) [0, 1, 2]: ISR [3], 1 in-sync replica(s) of 3, below min.insync.replicas=2"
    ]


def test_killed_brokers_still_in_the_isr_count_as_missing_when_they_do_not_answer() -> None:
    # Killed with -9 while the quorum is lost, nobody shrinks the ISR: the metadata still names them.
    frozen = [PartitionReplicas("sam.feedback", 0, (1, 2, 3), (1, 2, 3))]
    lines = shortfall_lines(frozen, {"sam.feedback": 2}, {1: "127.0.0.1:1", 2: "127.0.0.1:2"})
    assert lines == [
        "sam.feedback partition(s) [0]: ISR [1, 2, 3], of which broker(s) [1, 2] do not answer, "
        "1 in-sync replica(s) of 3, below min.insync.replicas=2"
    ]
    # One broker down leaves two in sync: writes are still acknowledged, nothing to report.
    assert shortfall_lines(frozen, {"sam.feedback": 2}, {1: "127.0.0.1:1"}) == []
