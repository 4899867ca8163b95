"""Commands: intents from operators and users, named in the imperative. They travel on the control
topic (keyed by user id) and their outcomes come back as events.

| command             | handled by                    | outcome events                                 |
| ------------------- | ----------------------------- | ---------------------------------------------- |
| RequestTraining     | decider (allocates generation) | TrainingThresholdReached(trigger=manual) ...   |
| CancelTraining      | trainer workers               | TrainingCancelled                              |
| ActivateAdapter     | registrar (inference)         | AdapterActivated (with the user's full state)  |
| DeactivateAdapter   | registrar (inference)         | AdapterDeactivated (with the full state)       |
| DeactivatePair      | decider                       | PairDeactivated                                |
| ReweightPair        | decider                       | PairReweighted                                 |
| DeactivatePairs     | decider                       | PairsDeactivated (+ CommandRejected: unknown)  |
| ReweightPairs       | decider                       | PairsReweighted (+ CommandRejected: unknown)   |
| EraseUser           | decider                       | UserErased, AdapterRevoked                     |
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, field_validator

from schemas.events import Frozen, UserId, utc_now


class Command(Frozen):
    command_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; a repeated id is a no-op.")
    issued_at: AwareDatetime = Field(default_factory=utc_now)
    issued_by: str = Field("cli", max_length=256, description="Who asked (operator, user, service).")
    user_id: UserId


# A bulk command lists at most this many pairs (about 80 KB of JSON): a larger selection is sent as
# several commands, so no message comes near the broker's size limit.
MAX_BULK_PAIRS = 2000

DpoOverrides = dict[str, int | float]


def check_dpo_overrides(value: Any) -> Any:
    """Numbers only (a bool is not a number here): the trainer merges them into ``training.dpo``."""
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, bool):
                raise ValueError(f"training.dpo.{key}: a number is expected, got {v!r}")
    return value


class RequestTraining(Command):
    """Train this user's adapter now, on their active pairs, whatever the threshold says."""

    command_type: Literal["RequestTraining"] = "RequestTraining"
    dpo_overrides: DpoOverrides = Field(
        default_factory=dict,
        max_length=32,
        description="training.dpo values for this job only (e.g. learning_rate, num_train_epochs), checked by "
        "the same validation as the config before the command is sent.",
    )

    @field_validator("dpo_overrides", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return check_dpo_overrides(value)


class CancelTraining(Command):
    """Stop this training job (queued or running); a finished job is not affected."""

    command_type: Literal["CancelTraining"] = "CancelTraining"
    request_id: uuid.UUID


class ActivateAdapter(Command):
    """Serve this user's adapter again (``version`` None = the latest published)."""

    command_type: Literal["ActivateAdapter"] = "ActivateAdapter"
    version: int | None = Field(None, ge=1, description="The latest or the previous version; None = the latest.")
    new_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="A/B split: share of requests answered by the latest version, the rest by the previous one "
        "(or the base model). None keeps the user's current share.",
    )


class DeactivateAdapter(Command):
    """Serve this user from the base model until activated again (the response says so)."""

    command_type: Literal["DeactivateAdapter"] = "DeactivateAdapter"


class DeactivatePair(Command):
    """Stop training on this pair (it stays stored, ``is_active = false``)."""

    command_type: Literal["DeactivatePair"] = "DeactivatePair"
    pair_id: uuid.UUID


class ReweightPair(Command):
    command_type: Literal["ReweightPair"] = "ReweightPair"
    pair_id: uuid.UUID
    training_weight: float = Field(ge=0.0, le=100.0)


class DeactivatePairs(Command):
    """Stop training on every listed pair of this user: a bulk action, resolved from a filter by its sender.

    The ids are listed rather than the filter itself so that the command's effect is a pure function
    of the command: replaying the log gives the same result whatever the store held at the time."""

    command_type: Literal["DeactivatePairs"] = "DeactivatePairs"
    pair_ids: tuple[uuid.UUID, ...] = Field(min_length=1, max_length=MAX_BULK_PAIRS)
    filter: str = Field("", max_length=4000, description="The filter the ids were resolved from (for the record).")


class ReweightPairs(Command):
    """Set the training weight of every listed pair of this user (see DeactivatePairs)."""

    command_type: Literal["ReweightPairs"] = "ReweightPairs"
    pair_ids: tuple[uuid.UUID, ...] = Field(min_length=1, max_length=MAX_BULK_PAIRS)
    training_weight: float = Field(ge=0.0, le=100.0)
    filter: str = Field("", max_length=4000, description="The filter the ids were resolved from (for the record).")


class EraseUser(Command):
    """Erase all of a user's data: pairs, rejected feedback, labelled examples; adapters revoked."""

    command_type: Literal["EraseUser"] = "EraseUser"


AnyCommand = Annotated[
    RequestTraining
    | CancelTraining
    | ActivateAdapter
    | DeactivateAdapter
    | DeactivatePair
    | ReweightPair
    | DeactivatePairs
    | ReweightPairs
    | EraseUser,
    Field(discriminator="command_type"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(AnyCommand)
