"""The topics: one declared list (names, partitions, retention, compaction) that infra applies."""

from __future__ import annotations

from dataclasses import dataclass

INFINITE = -1
MIB = 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    base_name: str
    purpose: str
    compacted: bool = False
    retention_ms: int = INFINITE
    max_message_bytes: int = 1 * MIB
    # Co-partitioned topics share the configured partition count; the rest use their own.
    partitions: int | None = None

    def name(self, prefix: str = "") -> str:
        return f"{prefix}{self.base_name}"


FEEDBACK = TopicSpec(
    "sam.feedback.v1",
    "FeedbackReceived from SAM's producers, keyed by user_id. The source of truth.",
    # Hostile payloads (10 MB strings) must reach the decider to be dead-lettered with a reason.
    max_message_bytes=16 * MIB,
)
PAIRS = TopicSpec(
    "sam.pairs.v1",
    "PairAccepted / PairRejected / TrainingThresholdReached, keyed by user_id.",
    max_message_bytes=16 * MIB,
)
TRAINING = TopicSpec("sam.training.v1", "The job ledger: TrainingRequested ... TrainingSucceeded|Failed.")
ADAPTERS = TopicSpec(
    "sam.adapters.v1",
    "Adapter registry: AdapterPublished, compacted by user_id (the value is the user's current state).",
    compacted=True,
)
CONTROL = TopicSpec("sam.control.v1", "Commands from operators and users, keyed by user_id.")
INFERENCE = TopicSpec("sam.inference.v1", "AnswerServed / AdapterLoadFailed from inference nodes, keyed by user_id.")
DLQ = TopicSpec(
    "sam.dlq.v1",
    "Dead letters: the original bytes, with error/source headers.",
    max_message_bytes=16 * MIB,
)

ALL: tuple[TopicSpec, ...] = (FEEDBACK, PAIRS, TRAINING, ADAPTERS, CONTROL, INFERENCE, DLQ)

# The largest message any topic accepts; brokers, producers and consumers allow that plus a MiB for a
# record batch's overhead and the headers (a dead letter carries the original's and its own).
MAX_MESSAGE_BYTES = max(spec.max_message_bytes for spec in ALL)
CLIENT_MAX_BYTES = MAX_MESSAGE_BYTES + MIB


@dataclass(frozen=True)
class Topics:
    """Concrete topic names under a prefix (tests use a unique prefix per run)."""

    prefix: str = ""

    @property
    def feedback(self) -> str:
        return FEEDBACK.name(self.prefix)

    @property
    def pairs(self) -> str:
        return PAIRS.name(self.prefix)

    @property
    def training(self) -> str:
        return TRAINING.name(self.prefix)

    @property
    def adapters(self) -> str:
        return ADAPTERS.name(self.prefix)

    @property
    def control(self) -> str:
        return CONTROL.name(self.prefix)

    @property
    def inference(self) -> str:
        return INFERENCE.name(self.prefix)

    @property
    def dlq(self) -> str:
        return DLQ.name(self.prefix)
