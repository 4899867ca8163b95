"""The pairs table's filter: one documented type, turned into a parameterized ClickHouse WHERE (pure).

User input never becomes SQL text: every value is a bound parameter (``{name:Type}``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

FeedbackType = Literal["correction", "thumbs_up", "thumbs_down"]


class PairFilter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str | None = Field(None, min_length=1, max_length=256, description="Exactly this user.")
    feedback_type: FeedbackType | None = Field(None, description="correction, thumbs_up or thumbs_down.")
    quality_min: float | None = Field(None, ge=0.0, le=1.0, description="Quality score at least this.")
    quality_max: float | None = Field(None, ge=0.0, le=1.0, description="Quality score at most this.")
    since: AwareDatetime | None = Field(None, description="Created at or after (ISO 8601 with a zone).")
    until: AwareDatetime | None = Field(None, description="Created before (ISO 8601 with a zone).")
    active: bool | None = Field(None, description="Only active (true) or inactive (false) pairs.")
    near_identical: bool | None = Field(None, description="Only pairs flagged near-identical (true) or not (false).")

    @model_validator(mode="after")
    def _ranges(self) -> PairFilter:
        if self.quality_min is not None and self.quality_max is not None and self.quality_min > self.quality_max:
            raise ValueError(f"quality_min {self.quality_min} is above quality_max {self.quality_max}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"since {self.since.isoformat()} is not before until {self.until.isoformat()}")
        return self

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause (``1`` when nothing is filtered) and its parameters."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.user is not None:
            parts.append("user_id = {f_user:String}")
            params["f_user"] = self.user
        if self.feedback_type is not None:
            parts.append("feedback_type = {f_type:String}")
            params["f_type"] = self.feedback_type
        if self.quality_min is not None:
            parts.append("quality_score >= {f_qmin:Float64}")
            params["f_qmin"] = self.quality_min
        if self.quality_max is not None:
            parts.append("quality_score <= {f_qmax:Float64}")
            params["f_qmax"] = self.quality_max
        if self.since is not None:
            parts.append("created_at >= {f_since:DateTime64(3, 'UTC')}")
            params["f_since"] = _naive_utc(self.since)
        if self.until is not None:
            parts.append("created_at < {f_until:DateTime64(3, 'UTC')}")
            params["f_until"] = _naive_utc(self.until)
        if self.active is not None:
            parts.append("is_active = {f_active:Bool}")
            params["f_active"] = self.active
        if self.near_identical is not None:
            parts.append("JSONExtractBool(metadata, 'near_identical') = {f_near:Bool}")
            params["f_near"] = self.near_identical
        return (" AND ".join(parts) or "1"), params

    def canonical(self) -> str:
        """A stable text of the filter (set fields only, sorted): recorded on bulk commands."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))


def _naive_utc(at: datetime) -> str:
    from datetime import UTC

    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
