"""ClickHouse DDL of the projections. Migrations apply these in order; ``{db}`` is the database.

Every table fed from Kafka is idempotent twice over: inserts carry a deduplication token derived
from the topic-partition-offset range (``non_replicated_deduplication_window``), and the engine is a
``ReplacingMergeTree`` keyed on a deterministic id, so a replayed event replaces itself. Read with
``FINAL`` where exact counts matter.
"""

from __future__ import annotations

from dataclasses import dataclass

DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"


@dataclass(frozen=True)
class Migration:
    id: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_preference_pairs",
        """
CREATE TABLE IF NOT EXISTS {db}.preference_pairs (
    pair_id UUID,
    user_id String,
    prompt String,
    chosen_response String,
    rejected_response String,
    confidence_score Float64,
    quality_score Float64,
    feedback_type LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    is_active Bool,
    training_weight Float64,
    metadata String COMMENT 'JSON object',
    feedback_event_id UUID,
    correlation_id UUID,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    version UInt64 COMMENT 'pairs-topic offset of the last event that changed this row',
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, pair_id)
""" + DEDUP,
    ),
    Migration(
        "0002_rejected_feedback",
        """
CREATE TABLE IF NOT EXISTS {db}.rejected_feedback (
    feedback_event_id UUID,
    user_id String,
    feedback_type LowCardinality(String),
    reason_codes Array(LowCardinality(String)),
    reason_details Array(String),
    quality_score Nullable(Float64),
    prompt String,
    chosen_response String,
    rejected_response String,
    created_at DateTime64(3, 'UTC'),
    correlation_id UUID,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (user_id, feedback_event_id)
""" + DEDUP,
    ),
    # Dead letters are keyed by their content: the same bad bytes replayed are one dead letter.
    Migration(
        "0003_dead_letters",
        """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    stage LowCardinality(String),
    reason LowCardinality(String),
    error String,
    key String,
    payload_preview String,
    payload_bytes UInt64,
    payload_sha256 FixedString(64),
    failed_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (source_topic, payload_sha256)
""" + DEDUP,
    ),
    Migration(
        "0004_training_requests",
        """
CREATE TABLE IF NOT EXISTS {db}.training_requests (
    request_id UUID,
    user_id String,
    generation UInt32,
    trigger LowCardinality(String),
    triggered_at DateTime64(3, 'UTC'),
    dataset_uri String,
    dataset_sha256 FixedString(64),
    dataset_rows UInt32,
    requested_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (user_id, generation)
""" + DEDUP,
    ),
    Migration(
        "0005_training_jobs",
        """
CREATE TABLE IF NOT EXISTS {db}.training_jobs (
    request_id UUID,
    user_id String,
    status LowCardinality(String),
    attempt UInt32,
    step UInt32,
    total_steps UInt32,
    loss Nullable(Float64),
    adapter_version Nullable(UInt32),
    cause String,
    metrics String COMMENT 'JSON object',
    updated_at DateTime64(3, 'UTC'),
    version UInt64 COMMENT 'training-topic offset of the event that set this state'
) ENGINE = ReplacingMergeTree(version)
ORDER BY (request_id)
""" + DEDUP,
    ),
    Migration(
        "0006_adapters",
        """
CREATE TABLE IF NOT EXISTS {db}.adapters (
    user_id String,
    version UInt32,
    request_id UUID,
    uri String,
    files String COMMENT 'JSON object: file name -> sha256',
    base_model String,
    base_model_sha256 String,
    dataset_sha256 String,
    metrics String COMMENT 'JSON object',
    published_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (user_id, version)
""" + DEDUP,
    ),
    # -- stream processing (issue 3): 01xx ------------------------------------------------------
    Migration(
        "0101_labelled_examples",
        """
CREATE TABLE IF NOT EXISTS {db}.labelled_examples (
    example_id UUID,
    user_id String,
    prompt String,
    response String,
    desirable Bool COMMENT 'thumbs up = true (KTO label)',
    confidence_score Float64,
    created_at DateTime64(3, 'UTC'),
    metadata String COMMENT 'JSON object',
    feedback_event_id UUID,
    correlation_id UUID,
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (user_id, example_id)
""" + DEDUP,
    ),
    Migration(
        "0102_pairs_projected_at",
        "ALTER TABLE {db}.preference_pairs ADD COLUMN IF NOT EXISTS projected_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3) COMMENT 'when the row became visible (ingestion lag = projected_at - created_at)'",
    ),
    Migration(
        "0103_adapters_revoked",
        "ALTER TABLE {db}.adapters ADD COLUMN IF NOT EXISTS revoked Bool DEFAULT false",
    ),
    Migration(
        "0104_view_rejections_by_reason",
        """
CREATE VIEW IF NOT EXISTS {db}.rejections_by_reason AS
SELECT user_id, toDate(created_at) AS day, reason, count() AS rejections
FROM {db}.rejected_feedback FINAL ARRAY JOIN reason_codes AS reason
GROUP BY user_id, day, reason
""",
    ),
    Migration(
        "0105_view_user_pairs",
        """
CREATE VIEW IF NOT EXISTS {db}.user_pairs AS
SELECT user_id, countIf(is_active) AS active_pairs, count() AS pairs, avg(quality_score) AS mean_quality,
       countIf(JSONExtractBool(metadata, 'near_identical')) AS near_identical, max(created_at) AS last_pair_at
FROM {db}.preference_pairs FINAL
GROUP BY user_id
""",
    ),
    # Inference (nodes publish AnswerServed to sam.inference.v1; the projector writes it here).
    Migration(
        "0301_inference_log",
        """
CREATE TABLE IF NOT EXISTS {db}.inference_log (
    answer_id UUID,
    user_id String,
    node_id LowCardinality(String),
    arm LowCardinality(String) COMMENT 'new | previous | base: the side of the A/B split that answered',
    adapter_version Nullable(UInt32) COMMENT 'NULL when the base model answered',
    fallback_reason LowCardinality(Nullable(String)),
    latency_ms Float64,
    completion_tokens UInt32,
    served_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(served_at)
ORDER BY (user_id, answer_id)
""" + DEDUP,
    ),
    # Feedback that names the answer it is about (SAM echoes FeedbackReceived.context["answer_id"]).
    Migration(
        "0302_answer_feedback",
        """
CREATE TABLE IF NOT EXISTS {db}.answer_feedback (
    answer_id UUID,
    feedback_event_id UUID,
    user_id String,
    feedback_type LowCardinality(String),
    received_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (answer_id, feedback_event_id)
""" + DEDUP,
    ),
    # The trainer's lineage: what an adapter was trained on, how, and against what it was gated.
    Migration(
        "0201_adapters_lineage",
        """
ALTER TABLE {db}.adapters
    ADD COLUMN IF NOT EXISTS config_sha256 String DEFAULT '',
    ADD COLUMN IF NOT EXISTS train_pair_ids Array(UUID),
    ADD COLUMN IF NOT EXISTS heldout_pair_ids Array(UUID),
    ADD COLUMN IF NOT EXISTS parent_version Nullable(UInt32) COMMENT 'incremental training: the adapter trained on',
    ADD COLUMN IF NOT EXISTS baseline_metrics String DEFAULT '{{}}' COMMENT 'JSON: what the user had, same held-out',
    ADD COLUMN IF NOT EXISTS libraries String DEFAULT '{{}}' COMMENT 'JSON: library versions'
""",
    ),
    Migration(
        "0202_training_jobs_progress",
        """
ALTER TABLE {db}.training_jobs
    ADD COLUMN IF NOT EXISTS worker String DEFAULT '',
    ADD COLUMN IF NOT EXISTS epoch Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS eta_s Nullable(Float64)
""",
    ),
    # -- the console (issue 8): 04xx -------------------------------------------------------------
    # Every TrainingProgressed point, so past jobs keep their curves (training_jobs keeps the latest only).
    Migration(
        "0401_training_progress",
        """
CREATE TABLE IF NOT EXISTS {db}.training_progress (
    request_id UUID,
    user_id String,
    attempt UInt32,
    step UInt32,
    total_steps UInt32,
    epoch Float64,
    loss Nullable(Float64),
    eval_loss Nullable(Float64) COMMENT 'held-out evaluation points',
    reward_accuracy Nullable(Float64),
    reward_margin Nullable(Float64),
    metrics String COMMENT 'JSON object: every metric of the point',
    eta_s Nullable(Float64),
    occurred_at DateTime64(3, 'UTC'),
    source_partition UInt32,
    source_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (request_id, source_partition, source_offset)
""" + DEDUP,
    ),
    # The pairs a request trains on (the trace view finds a pair's generation), and its overrides.
    Migration(
        "0402_training_requests_pairs",
        """
ALTER TABLE {db}.training_requests
    ADD COLUMN IF NOT EXISTS pair_ids Array(UUID),
    ADD COLUMN IF NOT EXISTS dpo_overrides String DEFAULT '{{}}' COMMENT 'JSON: RequestTraining overrides'
""",
    ),
)
