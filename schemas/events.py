"""The events of the loop: frozen pydantic models sharing one envelope, named as past facts.

Every event carries ``event_id`` (deterministic wherever a retry must map to the same id),
``event_type``, ``schema_version``, ``occurred_at``, ``user_id`` and ``correlation_id`` (the id of
the feedback or request that started the chain, so one loop can be traced end to end).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1

UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"),
    Field(description="The user's id as SAM knows it. Data only: never a path, never SQL text."),
]
FeedbackType = Literal["correction", "thumbs_up", "thumbs_down"]
MetadataValue = str | int | float | bool


def utc_now() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Frozen):
    """The envelope every event shares."""

    event_id: uuid.UUID = Field(description="Unique id; deterministic where de-duplication depends on it.")
    schema_version: int = Field(SCHEMA_VERSION, description="Version of this event's schema.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="When the fact happened (UTC).")
    user_id: UserId
    correlation_id: uuid.UUID = Field(description="Id of the feedback or request that started this chain.")


class SourceRef(Frozen):
    """Where an event was read from: the position that makes its effects idempotent."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


# --- feedback -------------------------------------------------------------------------------------


class FeedbackReceived(Event):
    """SAM answered a user and the user reacted: a correction, or a thumbs up/down."""

    event_type: Literal["FeedbackReceived"] = "FeedbackReceived"
    feedback_id: str = Field(min_length=1, max_length=256, description="SAM's id of this feedback.")
    feedback_type: FeedbackType = Field("correction", description="What the user did.")
    prompt: str = Field(description="What the user asked.")
    original_response: str = Field(description="SAM's answer: the rejected side of a pair.")
    corrected_response: str | None = Field(
        None, description="The user's correction: the chosen side. Required for corrections."
    )
    confidence_score: float = Field(1.0, ge=0.0, le=1.0, description="How sure SAM is that this is feedback.")
    context: dict[str, str] = Field(default_factory=dict, description="Free-form context, e.g. session id.")


# --- pairs ----------------------------------------------------------------------------------------


class RejectionReason(Frozen):
    code: str = Field(description="Stable reason code, e.g. 'chosen_equals_rejected'.")
    detail: str = Field("", description="Human-readable detail (values, thresholds).")


class PairAccepted(Event):
    """A correction became a preference pair worth training on."""

    event_type: Literal["PairAccepted"] = "PairAccepted"
    pair_id: uuid.UUID
    feedback_event_id: uuid.UUID
    prompt: str
    chosen_response: str
    rejected_response: str
    confidence_score: float
    quality_score: float = Field(ge=0.0, le=1.0)
    feedback_type: FeedbackType
    created_at: AwareDatetime = Field(description="When the feedback happened.")
    training_weight: float = Field(1.0, ge=0.0)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    source: SourceRef


class PairRejected(Event):
    """A feedback event did not become a pair; ``reasons`` lists every failing check."""

    event_type: Literal["PairRejected"] = "PairRejected"
    feedback_event_id: uuid.UUID
    feedback_type: FeedbackType
    reasons: tuple[RejectionReason, ...] = Field(min_length=1)
    quality_score: float | None = None
    prompt: str = Field(description="Possibly truncated copy, for analytics.")
    chosen_response: str = Field(description="Possibly truncated copy, for analytics.")
    rejected_response: str = Field(description="Possibly truncated copy, for analytics.")
    created_at: AwareDatetime
    source: SourceRef


class LabelledExampleAccepted(Event):
    """Thumbs up/down without a correction: an unpaired labelled example (KTO-style), not dropped."""

    event_type: Literal["LabelledExampleAccepted"] = "LabelledExampleAccepted"
    example_id: uuid.UUID
    feedback_event_id: uuid.UUID
    prompt: str
    response: str
    desirable: bool = Field(description="True for thumbs up, False for thumbs down.")
    confidence_score: float
    created_at: AwareDatetime
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    source: SourceRef


class PairDeactivated(Event):
    """A pair is no longer trained on (it stays stored with ``is_active = false``)."""

    event_type: Literal["PairDeactivated"] = "PairDeactivated"
    pair_id: uuid.UUID
    command_id: uuid.UUID


class PairReweighted(Event):
    event_type: Literal["PairReweighted"] = "PairReweighted"
    pair_id: uuid.UUID
    training_weight: float = Field(ge=0.0)
    command_id: uuid.UUID


class PairsDeactivated(Event):
    """Every listed pair is no longer trained on (a bulk DeactivatePairs; unknown ids are left out)."""

    event_type: Literal["PairsDeactivated"] = "PairsDeactivated"
    pair_ids: tuple[uuid.UUID, ...] = Field(min_length=1)
    command_id: uuid.UUID
    filter: str = ""


class PairsReweighted(Event):
    """Every listed pair now has this training weight (a bulk ReweightPairs; unknown ids are left out)."""

    event_type: Literal["PairsReweighted"] = "PairsReweighted"
    pair_ids: tuple[uuid.UUID, ...] = Field(min_length=1)
    training_weight: float = Field(ge=0.0)
    command_id: uuid.UUID
    filter: str = ""


class UserForgotten(Event):
    """The decider forgot a user (``EraseUser``): its state keeps no text, fingerprint or signature of
    theirs, only one-way hashes of the event and command ids it had handled (so a replay of the log
    does not bring the data back) and the counters that keep ids from repeating. The projector then
    erases every store and publishes ``UserErased`` with the full report."""

    event_type: Literal["UserForgotten"] = "UserForgotten"
    command_id: uuid.UUID
    decider: dict[str, int] = Field(
        default_factory=dict,
        description="What the decider's state dropped, by kind (pair_fingerprints, "
        "example_fingerprints, minhash_signatures, feedback_ids_hashed, command_ids_hashed).",
    )


class ErasureReport(Frozen):
    """What an erasure removed, store by store."""

    decider: dict[str, int] = Field(default_factory=dict, description="From UserForgotten: the decider's state.")
    rows: dict[str, int] = Field(
        default_factory=dict,
        description="ClickHouse table -> rows deleted (adapters: revoked and detached from the user id).",
    )
    files: dict[str, int] = Field(
        default_factory=dict, description="Artifact kind (datasets, adapters, checkpoints) -> files removed."
    )
    kept: tuple[str, ...] = Field((), description="What stays, and where (e.g. the Kafka history until retention).")


class UserErased(Event):
    """All of a user's data was erased from every store the project writes; ``report`` says what went.

    Published by the projector once the rows and files are gone (after the decider's UserForgotten)."""

    event_type: Literal["UserErased"] = "UserErased"
    command_id: uuid.UUID
    report: ErasureReport = Field(default_factory=ErasureReport)


class CommandRejected(Event):
    """A command could not be carried out (e.g. an unknown pair); ``reason`` says why."""

    event_type: Literal["CommandRejected"] = "CommandRejected"
    command_id: uuid.UUID
    command_type: str
    reason: str


class TrainingThresholdReached(Event):
    """A user has enough new accepted pairs (or asked for training): cut a dataset for ``generation``.

    It travels on the pairs topic with the user's key, so the projector has written every earlier
    pair of that user before it cuts the snapshot.
    """

    event_type: Literal["TrainingThresholdReached"] = "TrainingThresholdReached"
    generation: int = Field(ge=1, description="1 for the user's first training, then 2, ...")
    new_pairs: int = Field(ge=0, description="Accepted pairs since the previous generation.")
    new_examples: int = Field(0, ge=0, description="Accepted labelled examples since the previous generation.")
    trigger: Literal["threshold", "manual"] = "threshold"
    triggered_at: AwareDatetime = Field(description="When the triggering feedback (or command) happened.")
    through: SourceRef = Field(description="The feedback event that crossed the threshold.")
    dpo_overrides: dict[str, int | float] = Field(
        default_factory=dict, description="RequestTraining's training.dpo values for this job only."
    )


# --- training -------------------------------------------------------------------------------------


class DatasetRef(Frozen):
    """A content-addressed snapshot of a user's active pairs and labelled examples (Parquet in the artifact store)."""

    uri: str = Field(description="Path relative to the artifact root, e.g. 'datasets/<sha256>.parquet'.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0, description="Rows of the snapshot: pairs plus labelled examples.")
    pair_ids: tuple[uuid.UUID, ...]
    example_ids: tuple[uuid.UUID, ...] = Field((), description="The labelled examples (thumbs up/down, for KTO).")


class TrainingRequested(Event):
    """Train ``user_id``'s adapter on exactly this dataset. One job per ``request_id``."""

    event_type: Literal["TrainingRequested"] = "TrainingRequested"
    request_id: uuid.UUID
    generation: int = Field(ge=1)
    trigger: Literal["threshold", "manual"]
    triggered_at: AwareDatetime
    dataset: DatasetRef
    dpo_overrides: dict[str, int | float] = Field(
        default_factory=dict, description="training.dpo values for this job only (from RequestTraining)."
    )


class TrainingQueued(Event):
    event_type: Literal["TrainingQueued"] = "TrainingQueued"
    request_id: uuid.UUID
    worker: str = ""
    position: int = Field(0, ge=0, description="Jobs ahead of this one on the worker.")


class TrainingStarted(Event):
    event_type: Literal["TrainingStarted"] = "TrainingStarted"
    request_id: uuid.UUID
    attempt: int = Field(1, ge=1)
    worker: str = ""
    resumed_from_step: int = Field(0, ge=0, description="The checkpoint step this attempt resumes from (0 = fresh).")
    overrides: dict[str, int | float] = Field(
        default_factory=dict, description="Settings a retry changed (e.g. a smaller batch after running out of memory)."
    )


class TrainingProgressed(Event):
    event_type: Literal["TrainingProgressed"] = "TrainingProgressed"
    request_id: uuid.UUID
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0)
    epoch: float = 0.0
    loss: float | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="rewards/accuracies, rewards/margins, logps/chosen, ...; a held-out "
        "evaluation has loss None and eval_* metrics.",
    )
    eta_s: float | None = None
    attempt: int = Field(1, ge=1, description="The attempt this progress belongs to.")


class TrainingSucceeded(Event):
    event_type: Literal["TrainingSucceeded"] = "TrainingSucceeded"
    request_id: uuid.UUID
    adapter_version: int = Field(ge=1)
    adapter_uri: str
    metrics: dict[str, float] = Field(default_factory=dict)
    duration_s: float = Field(ge=0.0)


class TrainingFailed(Event):
    event_type: Literal["TrainingFailed"] = "TrainingFailed"
    request_id: uuid.UUID
    cause: str
    error_type: str
    attempt: int = Field(1, ge=1)
    will_retry: bool = False
    retry_in_s: float | None = Field(None, ge=0.0, description="When will_retry: the wait before the next attempt.")


class TrainingCancelled(Event):
    event_type: Literal["TrainingCancelled"] = "TrainingCancelled"
    request_id: uuid.UUID
    reason: str = ""
    command_id: uuid.UUID | None = None


class TrainingRejected(Event):
    """The evaluation gate kept the new adapter from being published; the metrics say why."""

    event_type: Literal["TrainingRejected"] = "TrainingRejected"
    request_id: uuid.UUID
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict, description="The new adapter's metrics.")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="What the user has now.")


# --- adapters -------------------------------------------------------------------------------------


class BaseModelRef(Frozen):
    name_or_path: str = Field(description="What was passed to from_pretrained.")
    weights_sha256: str = Field(description="sha256 over the base model's weight files.")


class AdapterPublished(Event):
    """A user's adapter version is ready. On the compacted registry topic: the user's full current state."""

    event_type: Literal["AdapterPublished"] = "AdapterPublished"
    version: int = Field(ge=1)
    request_id: uuid.UUID
    uri: str = Field(description="Adapter directory, relative to the artifact root.")
    files: dict[str, str] = Field(description="File name -> sha256.")
    base_model: BaseModelRef
    dataset_sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    triggered_at: AwareDatetime = Field(description="When the feedback that triggered training happened.")
    # Lineage (also in the adapter's manifest.json).
    config_sha256: str = Field("", description="Hash of the config sections that shape an adapter.")
    train_pair_ids: tuple[uuid.UUID, ...] = Field((), description="The pairs trained on.")
    heldout_pair_ids: tuple[uuid.UUID, ...] = Field((), description="The pairs held out for the gate.")
    parent_version: int | None = Field(None, description="Incremental training: the adapter trained on top of.")
    baseline_metrics: dict[str, float] = Field(
        default_factory=dict, description="What the user had before, measured on the same held-out pairs."
    )
    libraries: dict[str, str] = Field(default_factory=dict, description="torch, transformers, trl, peft ... versions.")


class AdapterRef(Frozen):
    """One adapter version: where it lives and what it must match, enough for a node to load and validate it."""

    version: int = Field(ge=1)
    uri: str = Field(description="Adapter directory, relative to the artifact root.")
    files: dict[str, str] = Field(description="File name -> sha256.")
    base_model: BaseModelRef


class AdapterRegistryState(Frozen):
    """A user's full adapter state: what the last value of the compacted registry tells a node that starts."""

    latest: AdapterRef | None = Field(None, description="The newest published version.")
    previous: AdapterRef | None = Field(None, description="The version before it: the A/B split's control arm.")
    active: bool = Field(True, description="False after DeactivateAdapter: the base model answers, and says so.")
    pinned_version: int | None = Field(
        None, ge=1, description="Serve this version (the latest or the previous one) to every request, no split."
    )
    new_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Share of requests answered by the latest version; the rest by the previous one (or the "
        "base model). None = the node's default (inference.ab_new_share).",
    )
    revoked: bool = Field(False, description="AdapterRevoked: every adapter was dropped (e.g. the user was erased).")
    revoked_through: int = Field(0, ge=0, description="Versions up to this one were revoked and are never served.")
    through_command: SourceRef | None = Field(
        None, description="Control-topic position of the last command applied: a redelivered command is a no-op."
    )


class AdapterActivated(Event):
    """The user's adapter serves again (or a new version became the user's state). Written by the registrar."""

    event_type: Literal["AdapterActivated"] = "AdapterActivated"
    version: int = Field(ge=1)
    command_id: uuid.UUID | None = None
    state: AdapterRegistryState | None = Field(
        None, description="The user's full state after this event (the compacted topic's value for the user)."
    )


class AdapterDeactivated(Event):
    """The base model answers this user until activated again. Written by the registrar."""

    event_type: Literal["AdapterDeactivated"] = "AdapterDeactivated"
    command_id: uuid.UUID | None = None
    state: AdapterRegistryState | None = Field(
        None, description="The user's full state after this event (the compacted topic's value for the user)."
    )


class AdapterRevoked(Event):
    """Every adapter of the user is revoked (e.g. the user was erased): nodes drop them."""

    event_type: Literal["AdapterRevoked"] = "AdapterRevoked"
    reason: str = ""


# --- inference ------------------------------------------------------------------------------------


class AdapterLoadFailed(Event):
    """A node refused or failed to load an adapter version; it keeps the previous one (or the base)."""

    event_type: Literal["AdapterLoadFailed"] = "AdapterLoadFailed"
    version: int = Field(ge=1)
    node_id: str
    reason: str = Field(description="Stable code, e.g. checksum_mismatch, path_escape, base_mismatch.")
    detail: str = ""


class AnswerServed(Event):
    """A node answered a user; ``arm`` says which side of the A/B split answered.

    ``answer_id`` is returned to the caller; SAM echoes it back as ``FeedbackReceived.context["answer_id"]``
    so feedback can be joined to the arm that produced the answer.
    """

    event_type: Literal["AnswerServed"] = "AnswerServed"
    answer_id: uuid.UUID = Field(description="Id of this answer, as returned to the caller.")
    node_id: str
    arm: Literal["new", "previous", "base"]
    adapter_version: int | None = None
    fallback_reason: str | None = None
    latency_ms: float = Field(ge=0.0)
    completion_tokens: int = Field(0, ge=0, description="Tokens generated.")


AnyEvent = Annotated[
    FeedbackReceived
    | PairAccepted
    | PairRejected
    | LabelledExampleAccepted
    | PairDeactivated
    | PairReweighted
    | PairsDeactivated
    | PairsReweighted
    | UserErased
    | UserForgotten
    | CommandRejected
    | TrainingThresholdReached
    | TrainingRequested
    | TrainingQueued
    | TrainingStarted
    | TrainingProgressed
    | TrainingSucceeded
    | TrainingFailed
    | TrainingCancelled
    | TrainingRejected
    | AdapterPublished
    | AdapterActivated
    | AdapterDeactivated
    | AdapterRevoked
    | AdapterLoadFailed
    | AnswerServed,
    Field(discriminator="event_type"),
]
