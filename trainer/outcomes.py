"""The events a job publishes, built from its request and results (pure; deterministic ids).

Every id derives from the request id (and the attempt, or the step), so a job resumed by another
worker, or an outcome published twice, maps to the same events.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from schemas.events import (
    AdapterPublished,
    BaseModelRef,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from schemas.ids import adapter_event_id, derived_event_id


def _common(request: TrainingRequested) -> dict[str, Any]:
    return {"user_id": request.user_id, "correlation_id": request.correlation_id, "request_id": request.request_id}


def _rid(request: TrainingRequested) -> str:
    return str(request.request_id)


def queued(request: TrainingRequested, attempt: int, worker: str, position: int) -> TrainingQueued:
    return TrainingQueued(
        event_id=derived_event_id("training-queued", _rid(request), str(attempt)),
        worker=worker,
        position=position,
        **_common(request),
    )


def started(
    request: TrainingRequested, attempt: int, worker: str, resumed_from_step: int, overrides: Mapping[str, Any]
) -> TrainingStarted:
    return TrainingStarted(
        event_id=derived_event_id("training-started", _rid(request), str(attempt)),
        attempt=attempt,
        worker=worker,
        resumed_from_step=resumed_from_step,
        overrides=dict(overrides),
        **_common(request),
    )


def progressed(request: TrainingRequested, attempt: int, line: Mapping[str, Any]) -> TrainingProgressed:
    kind = "eval" if line.get("loss") is None else "train"
    step = int(line.get("step", 0))
    return TrainingProgressed(
        event_id=derived_event_id("training-progress", _rid(request), str(attempt), kind, str(step)),
        step=step,
        total_steps=int(line.get("total", 0)),
        epoch=float(line.get("epoch", 0.0)),
        loss=line.get("loss"),
        metrics={k: float(v) for k, v in (line.get("metrics") or {}).items()},
        eta_s=line.get("eta_s"),
        attempt=attempt,
        **_common(request),
    )


def failed(
    request: TrainingRequested, attempt: int, cause: str, error_type: str, retry_in_s: float | None = None
) -> TrainingFailed:
    return TrainingFailed(
        event_id=derived_event_id("training-failed", _rid(request), str(attempt)),
        cause=cause,
        error_type=error_type,
        attempt=attempt,
        will_retry=retry_in_s is not None,
        retry_in_s=retry_in_s,
        **_common(request),
    )


def cancelled(request: TrainingRequested, reason: str, command_id: uuid.UUID | None) -> TrainingCancelled:
    return TrainingCancelled(
        event_id=derived_event_id("training-cancelled", _rid(request)),
        reason=reason,
        command_id=command_id,
        **_common(request),
    )


def rejected(
    request: TrainingRequested, reason: str, metrics: Mapping[str, float], baseline: Mapping[str, float]
) -> TrainingRejected:
    return TrainingRejected(
        event_id=derived_event_id("training-rejected", _rid(request)),
        reason=reason,
        metrics=dict(metrics),
        baseline_metrics=dict(baseline),
        **_common(request),
    )


def adapter_published(request: TrainingRequested, manifest: Mapping[str, Any], uri: str) -> AdapterPublished:
    """The registry event of a published adapter, from its manifest (the one source of its lineage)."""
    pairs = manifest.get("pair_ids", {})
    return AdapterPublished(
        event_id=adapter_event_id(request.user_id, request.generation),
        user_id=request.user_id,
        correlation_id=request.correlation_id,
        version=request.generation,
        request_id=request.request_id,
        uri=uri,
        files=dict(manifest["files"]),
        base_model=BaseModelRef(**manifest["base_model"]),
        dataset_sha256=request.dataset.sha256,
        metrics=dict(manifest.get("metrics", {})),
        triggered_at=request.triggered_at,
        config_sha256=manifest.get("config_sha256", ""),
        train_pair_ids=tuple(uuid.UUID(p) for p in pairs.get("train", [])),
        heldout_pair_ids=tuple(uuid.UUID(p) for p in pairs.get("heldout", [])),
        parent_version=manifest.get("parent_version"),
        baseline_metrics=dict(manifest.get("baseline", {}).get("metrics", {})),
        libraries=dict(manifest.get("libraries", {})),
    )


def succeeded(
    request: TrainingRequested, uri: str, metrics: Mapping[str, float], duration_s: float
) -> TrainingSucceeded:
    return TrainingSucceeded(
        event_id=derived_event_id("training-succeeded", _rid(request)),
        adapter_version=request.generation,
        adapter_uri=uri,
        metrics=dict(metrics),
        duration_s=round(max(duration_s, 0.0), 3),
        **_common(request),
    )
