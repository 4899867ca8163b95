"""What the worker hands the training subprocess, and what it hands back (JSON files)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class VerifiedAdapter(BaseModel):
    """An adapter on disk whose checksums the worker verified."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    path: str


class JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    user_id: str
    version: int
    attempt: int = 1
    dataset_path: str
    dataset_sha256: str
    output_dir: str = Field(description="Where the subprocess writes the adapter files.")
    config: dict[str, Any] = Field(description="The full Config, dumped.")
    dpo_overrides: dict[str, Any] = Field(default_factory=dict, description="Set by retries (smaller batch).")
    checkpoint_dir: str | None = Field(None, description="Where resumable checkpoints go (None = no checkpoints).")
    resume_from: str | None = Field(None, description="A checkpoint of this run to resume from.")
    baseline: VerifiedAdapter | None = Field(None, description="What the user has now (None = the base model).")
    parent: VerifiedAdapter | None = Field(None, description="Train on top of this adapter (incremental training).")


class ControlRecord(BaseModel):
    """A control prompt's answers by the base model and by the new adapter, scored against its references."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    before: str
    after: str
    base_correct: bool
    adapter_correct: bool
    kept: bool = Field(description="Not broken: the base model answered wrongly, or the adapter still answers right.")


class JobResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["succeeded", "failed", "stopped"]
    metrics: dict[str, float] = Field(default_factory=dict, description="The new adapter's metrics.")
    baseline_metrics: dict[str, float] = Field(default_factory=dict, description="What the user has now.")
    control: list[ControlRecord] = Field(default_factory=list)
    resolved: dict[str, Any] = Field(default_factory=dict, description="The DPO settings used ('auto' resolved).")
    cause: str = ""
    error_type: str = ""
    method: Literal["dpo", "kto"] = Field("dpo", description="How the adapter was trained (training.method resolved).")
    train_pairs: list[str] = Field(default_factory=list)
    validation_pairs: list[str] = Field(default_factory=list, description="Early stopping and checkpoint choice.")
    heldout_pairs: list[str] = Field(default_factory=list, description="The gate's, and nothing else's.")
    train_examples: list[str] = Field(default_factory=list, description="Labelled examples trained on (KTO).")
    validation_examples: list[str] = Field(default_factory=list)
    heldout_examples: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
