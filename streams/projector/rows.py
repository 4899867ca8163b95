"""Events -> ClickHouse rows, one pure function per table. Column lists live next to their builders."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from schemas import dead_letters as DLQ
from schemas.events import (
    AdapterPublished,
    AnswerServed,
    Event,
    FeedbackReceived,
    LabelledExampleAccepted,
    PairAccepted,
    PairRejected,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)

PAIR_COLUMNS = (
    "pair_id",
    "user_id",
    "prompt",
    "chosen_response",
    "rejected_response",
    "confidence_score",
    "quality_score",
    "feedback_type",
    "created_at",
    "is_active",
    "training_weight",
    "metadata",
    "feedback_event_id",
    "correlation_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "version",
    "updated_at",
)


def pair_row(e: PairAccepted, version: int) -> list[Any]:
    return [
        e.pair_id,
        e.user_id,
        e.prompt,
        e.chosen_response,
        e.rejected_response,
        e.confidence_score,
        e.quality_score,
        e.feedback_type,
        e.created_at,
        True,
        e.training_weight,
        json.dumps(e.metadata, sort_keys=True),
        e.feedback_event_id,
        e.correlation_id,
        e.source.topic,
        e.source.partition,
        e.source.offset,
        version,
        e.occurred_at,
    ]


REJECTED_COLUMNS = (
    "feedback_event_id",
    "user_id",
    "feedback_type",
    "reason_codes",
    "reason_details",
    "quality_score",
    "prompt",
    "chosen_response",
    "rejected_response",
    "created_at",
    "correlation_id",
    "source_topic",
    "source_partition",
    "source_offset",
)


def rejected_row(e: PairRejected) -> list[Any]:
    return [
        e.feedback_event_id,
        e.user_id,
        e.feedback_type,
        [r.code for r in e.reasons],
        [r.detail for r in e.reasons],
        e.quality_score,
        e.prompt,
        e.chosen_response,
        e.rejected_response,
        e.created_at,
        e.correlation_id,
        e.source.topic,
        e.source.partition,
        e.source.offset,
    ]


DEAD_LETTER_COLUMNS = (
    "source_topic",
    "source_partition",
    "source_offset",
    "stage",
    "reason",
    "error",
    "key",
    "payload_preview",
    "payload_bytes",
    "payload_sha256",
    "failed_at",
    "user_id",
)


def dead_letter_user(key: bytes | None, value: bytes | None) -> str:
    """Whose dead letter this is: the payload's ``user_id`` where the payload parsed, else the message
    key (topics are keyed by user id); '' when neither says. Erasure matches on it."""
    try:
        raw = json.loads(value) if value else None
    except (ValueError, RecursionError):
        raw = None
    user = raw.get("user_id") if isinstance(raw, dict) else None
    if isinstance(user, str) and user:
        return user[:256]
    return (key or b"").decode("utf-8", errors="replace")[:256]


def dead_letter_row(headers: dict[str, str], key: bytes | None, value: bytes | None) -> list[Any]:
    payload = value or b""
    failed_at = headers.get(DLQ.FAILED_AT)
    return [
        headers.get(DLQ.SOURCE_TOPIC, ""),
        int(headers.get(DLQ.SOURCE_PARTITION, "0") or 0),
        int(headers.get(DLQ.SOURCE_OFFSET, "0") or 0),
        headers.get(DLQ.STAGE, ""),
        headers.get(DLQ.REASON, "unknown"),
        headers.get(DLQ.ERROR, ""),
        (key or b"").decode("utf-8", errors="replace")[:256],
        payload[:2000].decode("utf-8", errors="replace"),
        len(payload),
        hashlib.sha256((key or b"") + b"\0" + payload).hexdigest(),
        datetime.fromisoformat(failed_at) if failed_at else datetime.now(UTC),
        dead_letter_user(key, value),
    ]


TRAINING_REQUEST_COLUMNS = (
    "request_id",
    "user_id",
    "generation",
    "trigger",
    "triggered_at",
    "dataset_uri",
    "dataset_sha256",
    "dataset_rows",
    "requested_at",
    "pair_ids",
    "dpo_overrides",
)


def training_request_row(e: TrainingRequested) -> list[Any]:
    return [
        e.request_id,
        e.user_id,
        e.generation,
        e.trigger,
        e.triggered_at,
        e.dataset.uri,
        e.dataset.sha256,
        e.dataset.rows,
        e.occurred_at,
        list(e.dataset.pair_ids),
        json.dumps(e.dpo_overrides, sort_keys=True),
    ]


PROGRESS_COLUMNS = (
    "request_id",
    "user_id",
    "attempt",
    "step",
    "total_steps",
    "epoch",
    "loss",
    "eval_loss",
    "reward_accuracy",
    "reward_margin",
    "metrics",
    "eta_s",
    "occurred_at",
    "source_partition",
    "source_offset",
)


def progress_row(e: TrainingProgressed, partition: int, offset: int) -> list[Any]:
    """One point of a job's curve; a held-out evaluation has no loss and an ``eval_loss``."""
    m = e.metrics
    return [
        e.request_id,
        e.user_id,
        e.attempt,
        e.step,
        e.total_steps,
        e.epoch,
        e.loss,
        m.get("eval_loss"),
        m.get("rewards/accuracies", m.get("eval_rewards/accuracies")),
        m.get("rewards/margins", m.get("eval_rewards/margins")),
        json.dumps(m, sort_keys=True),
        e.eta_s,
        e.occurred_at,
        partition,
        offset,
    ]


JOB_COLUMNS = (
    "request_id",
    "user_id",
    "status",
    "attempt",
    "step",
    "total_steps",
    "loss",
    "adapter_version",
    "cause",
    "metrics",
    "updated_at",
    "version",
    "worker",
    "epoch",
    "eta_s",
)


def job_row(e: Event, version: int) -> list[Any] | None:
    """The job-ledger row an event sets, or None for events that are not about a job."""
    attempt, step, total, loss, adapter_version, cause = 1, 0, 0, None, None, ""
    worker, epoch, eta_s = "", 0.0, None
    metrics: dict[str, float] = {}
    if isinstance(e, TrainingRequested):
        status, request_id = "requested", e.request_id
    elif isinstance(e, TrainingQueued):
        status, request_id, worker = "queued", e.request_id, e.worker
    elif isinstance(e, TrainingStarted):
        status, request_id, attempt, worker, step = "running", e.request_id, e.attempt, e.worker, e.resumed_from_step
    elif isinstance(e, TrainingProgressed):
        status, request_id, attempt = "running", e.request_id, e.attempt
        step, total, loss, metrics, epoch, eta_s = e.step, e.total_steps, e.loss, e.metrics, e.epoch, e.eta_s
    elif isinstance(e, TrainingSucceeded):
        status, request_id = "succeeded", e.request_id
        adapter_version, metrics = e.adapter_version, e.metrics
    elif isinstance(e, TrainingFailed):
        status, request_id = ("retrying" if e.will_retry else "failed"), e.request_id
        attempt, cause = e.attempt, e.cause
    elif isinstance(e, TrainingCancelled):
        status, request_id, cause = "cancelled", e.request_id, e.reason
    elif isinstance(e, TrainingRejected):
        status, request_id, cause = "rejected", e.request_id, e.reason
        metrics = {**e.metrics, **{f"baseline/{k}": v for k, v in e.baseline_metrics.items()}}
    else:
        return None
    return [
        request_id,
        e.user_id,
        status,
        attempt,
        step,
        total,
        loss,
        adapter_version,
        cause,
        json.dumps(metrics, sort_keys=True),
        e.occurred_at,
        version,
        worker,
        epoch,
        eta_s,
    ]


ATTEMPT_COLUMNS = ("request_id", "attempt", "user_id", "worker", "resumed_from_step", "started_at")


def attempt_row(e: TrainingStarted) -> list[Any]:
    """When an attempt at a job started: the job ledger's row keeps only the job's last state."""
    return [e.request_id, e.attempt, e.user_id, e.worker, e.resumed_from_step, e.occurred_at]


ADAPTER_COLUMNS = (
    "user_id",
    "version",
    "request_id",
    "uri",
    "files",
    "base_model",
    "base_model_sha256",
    "dataset_sha256",
    "metrics",
    "published_at",
    "config_sha256",
    "train_pair_ids",
    "heldout_pair_ids",
    "parent_version",
    "baseline_metrics",
    "libraries",
)


def adapter_row(e: AdapterPublished) -> list[Any]:
    return [
        e.user_id,
        e.version,
        e.request_id,
        e.uri,
        json.dumps(e.files, sort_keys=True),
        e.base_model.name_or_path,
        e.base_model.weights_sha256,
        e.dataset_sha256,
        json.dumps(e.metrics, sort_keys=True),
        e.occurred_at,
        e.config_sha256,
        list(e.train_pair_ids),
        list(e.heldout_pair_ids),
        e.parent_version,
        json.dumps(e.baseline_metrics, sort_keys=True),
        json.dumps(e.libraries, sort_keys=True),
    ]


EXAMPLE_COLUMNS = (
    "example_id",
    "user_id",
    "prompt",
    "response",
    "desirable",
    "confidence_score",
    "created_at",
    "metadata",
    "feedback_event_id",
    "correlation_id",
    "source_topic",
    "source_partition",
    "source_offset",
)


def example_row(e: LabelledExampleAccepted) -> list[Any]:
    return [
        e.example_id,
        e.user_id,
        e.prompt,
        e.response,
        e.desirable,
        e.confidence_score,
        e.created_at,
        json.dumps(e.metadata, sort_keys=True),
        e.feedback_event_id,
        e.correlation_id,
        e.source.topic,
        e.source.partition,
        e.source.offset,
    ]


# -- inference ---------------------------------------------------------------------------------

INFERENCE_LOG_COLUMNS = (
    "answer_id",
    "user_id",
    "node_id",
    "arm",
    "adapter_version",
    "fallback_reason",
    "latency_ms",
    "completion_tokens",
    "served_at",
)


def inference_log_row(e: AnswerServed) -> list[Any]:
    return [
        e.answer_id,
        e.user_id,
        e.node_id,
        e.arm,
        e.adapter_version,
        e.fallback_reason,
        e.latency_ms,
        e.completion_tokens,
        e.occurred_at,
    ]


ANSWER_FEEDBACK_COLUMNS = ("answer_id", "feedback_event_id", "user_id", "feedback_type", "received_at")


def mentions_answer(value: bytes | None) -> bool:
    """Cheap pre-check: only feedback that names an answer is decoded by the projector."""
    return value is not None and b'"answer_id"' in value


def answer_id_of(context: dict[str, str]) -> uuid.UUID | None:
    """The answer a feedback event is about: a uuid, or an OpenAI-style ``chatcmpl-<hex>`` id."""
    raw = context.get("answer_id", "").strip().removeprefix("chatcmpl-")
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def answer_feedback_row(e: FeedbackReceived) -> list[Any] | None:
    answer_id = answer_id_of(e.context)
    if answer_id is None:
        return None
    return [answer_id, e.event_id, e.user_id, e.feedback_type, e.occurred_at]
