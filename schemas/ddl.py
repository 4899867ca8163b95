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
)
