"""Errors at the edges: Kafka, ClickHouse, the artifact store, the broker process and base models.

InfraError
├── BrokerError           fetching jars, formatting storage, starting/stopping the broker
├── CredentialsError      a password could not be read from its environment variable or file
├── KafkaCallError        a Kafka call failed (translated from confluent-kafka / aiokafka)
│   ├── PublishError      a message was not acknowledged by the broker
│   │   └── NotEnoughReplicas  acks=all cannot be met: too few in-sync (or reachable) replicas
│   └── KafkaUnreachable  no broker answered, or it refused our credentials (one line, names the cause)
├── StoreError            a ClickHouse call failed (translated from clickhouse-connect / chDB)
│   ├── StoreUnreachable  the ClickHouse server cannot be reached
│   ├── StoreLocked       the embedded store's data directory is open in another process
│   ├── SwapIncomplete    a table swap failed and swapping back failed too (says where each table is)
│   └── QueryFailed       ClickHouse rejected an analyst's query (syntax, unknown table, ...): its message
│       └── QueryRefused  the query writes, and ClickHouse refused it under readonly=1 (READONLY, code 164)
├── AuthError             the HTTP API keys cannot be loaded, or a server would be open to anyone
├── ArtifactError         the artifact store refused or failed
│   ├── PathEscapeError   a path would leave the artifact root
│   ├── ChecksumMismatch  a file's sha256 differs from the one recorded
│   └── ArtifactMissing   a referenced file does not exist
└── ModelError            getting a base model into the model cache failed
    ├── ModelFetchError        the model's source could not be downloaded (no network, not on the index)
    ├── ModelIntegrityError    a download or a converted file lacks its pinned/recorded sha256
    └── UnsupportedModelError  the file is not a GGUF, or not a model family we can convert
"""

from __future__ import annotations


class InfraError(Exception):
    """Base of every error raised by :mod:`infra`."""


class BrokerError(InfraError):
    pass


class CredentialsError(InfraError):
    pass


class KafkaCallError(InfraError):
    pass


class PublishError(KafkaCallError):
    pass


class NotEnoughReplicas(PublishError):
    """Kafka's NOT_ENOUGH_REPLICAS, or its cause seen in the metadata: a partition has fewer in-sync
    (or reachable) replicas than ``min.insync.replicas``, so no acks=all write to it can be acknowledged.
    The unacknowledged messages stay queued in the producer and go out if the brokers come back."""


class KafkaUnreachable(KafkaCallError):
    pass


class StoreError(InfraError):
    pass


class StoreUnreachable(StoreError):
    pass


class AuthError(InfraError):
    pass


class StoreLocked(StoreError):
    """Another process holds the embedded chDB store (``samtuner run`` does); go through its HTTP API."""


class SwapIncomplete(StoreError):
    """A swap of rebuilt tables failed half way and could not be undone: the message says which tables
    are where; the database holding the old ones must not be dropped."""


class QueryFailed(StoreError):
    """ClickHouse rejected a query; ``clickhouse_message`` is its own text, for the person who wrote the query."""

    def __init__(self, clickhouse_message: str) -> None:
        super().__init__(clickhouse_message)
        self.clickhouse_message = clickhouse_message


class QueryRefused(QueryFailed):
    """A read-only query tried to write (or to change a setting): ClickHouse refused it under ``readonly=1``."""


class ArtifactError(InfraError):
    pass


class PathEscapeError(ArtifactError):
    pass


class ChecksumMismatch(ArtifactError):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 {actual} != expected {expected}")
        self.path = path
        self.expected = expected
        self.actual = actual


class ArtifactMissing(ArtifactError):
    pass


class ModelError(InfraError):
    pass


class ModelFetchError(ModelError):
    pass


class ModelIntegrityError(ModelError):
    pass


class UnsupportedModelError(ModelError):
    pass
