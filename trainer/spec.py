"""What the worker hands the training subprocess, and what it hands back (JSON files)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    user_id: str
    version: int
    dataset_path: str
    dataset_sha256: str
    output_dir: str = Field(description="Where the subprocess writes the adapter files.")
    config: dict[str, Any] = Field(description="The full Config, dumped.")
    dpo_overrides: dict[str, Any] = Field(default_factory=dict)


class JobResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["succeeded", "failed"]
    metrics: dict[str, float] = Field(default_factory=dict)
    cause: str = ""
    error_type: str = ""
    train_pairs: list[str] = Field(default_factory=list)
    heldout_pairs: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
