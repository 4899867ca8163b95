"""ClickHouse DDL of the projections. Migrations apply these in order; ``{db}`` is the database.

Every table fed from Kafka is idempotent twice over: inserts carry a deduplication token derived
from the topic-partition-offset range (``non_replicated_deduplication_window``), and the engine is a
``ReplacingMergeTree`` keyed on a deterministic id, so a replayed event replaces itself. Read with
``FINAL`` where exact counts matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"


@dataclass(frozen=True)
class Migration:
    id: str
    sql: str


@dataclass(frozen=True)
class UserData:
    """How a table holds users' data, so that erasure reaches it (README: 'Erasure').

    Every table with storage is declared here, by whoever adds it: a test fails for a table of the
    store that is not. ``columns``: where the user's id is (a row is the user's when any of them
    equals it); ``on_erase``: ``delete`` the rows, ``revoke`` them (kept as revoked, with the user id
    replaced by the user's key and their pair ids cleared), or ``none`` for tables with no user data.
    Materialized views must write ``TO`` a declared table (their inner tables would not be).
    """

    table: str
    columns: tuple[str, ...] = ("user_id",)
    on_erase: Literal["delete", "revoke", "none"] = "delete"


USER_DATA: tuple[UserData, ...] = (
    UserData("preference_pairs"),
    UserData("rejected_feedback"),
    UserData("labelled_examples"),
    # The user is the payload's user_id where the payload parsed, else the message key (topics are keyed
    # by user id); rows written before migration 1001 have only the key.
    UserData("dead_letters", ("user_id", "key")),
    UserData("training_requests"),
    UserData("training_jobs"),
    UserData("adapters", on_erase="revoke"),
    UserData("inference_log"),
    UserData("answer_feedback"),
    UserData("training_progress"),  # the console's curves (migration 0401)
    UserData("training_attempts"),  # the analytics' job starts (migration 0860)
    UserData("schema_migrations", (), on_erase="none"),
)


# Columns that say when a row was written, not what the log holds: a rebuild from the topics
# (``samtuner projections rebuild``) sets them anew, and its check compares every other column.
# ``projected_at`` is the insert's now64(3); ``updated_at`` is the event's time until a deactivation
# or a reweight rewrites the row, and that statement's now64(3) after.
INSERT_TIME_COLUMNS: dict[str, frozenset[str]] = {
    "preference_pairs": frozenset({"projected_at", "updated_at"}),
}


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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
"""
        + DEDUP,
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
    # -- security and erasure (issue 10): 10xx -----------------------------------------------------
    Migration(
        "1001_dead_letters_user",
        "ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS user_id String DEFAULT '' "
        "COMMENT 'the payload''s user_id where it parsed, else the message key: what erasure matches'",
    ),
    # -- streaming analytics (issue 8): 086x. Plain views over FINAL, no materialized views: an MV sees
    # each inserted block, so a pair's superseded versions (deactivate, reweight), a replay past the
    # dedup window and an erasure (ALTER ... DELETE, which no MV sees) would all be counted wrong; and a
    # feedback that arrives after its answer would miss an insert-time join. The views read the
    # projections' current state at query time instead. Catalogue and parameters: schemas/analytics.py.
    # The job ledger keeps a job's last state only; its attempts' starts are kept here (TrainingStarted).
    Migration(
        "0860_training_attempts",
        """
CREATE TABLE IF NOT EXISTS {db}.training_attempts (
    request_id UUID,
    attempt UInt32,
    user_id String,
    worker String,
    resumed_from_step UInt32,
    started_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (request_id, attempt)
"""
        + DEDUP,
    ),
    Migration(
        "0861_view_pairs_daily",
        """
CREATE VIEW IF NOT EXISTS {db}.pairs_daily AS
SELECT user_id, toDate(created_at) AS day, count() AS pairs, countIf(is_active) AS active_pairs,
       countIf(JSONExtractBool(metadata, 'near_identical')) AS near_identical, avg(quality_score) AS mean_quality
FROM {db}.preference_pairs FINAL
GROUP BY user_id, day
""",
    ),
    # Every decided feedback is one row in one of the three tables (a pair, a labelled example or a rejection).
    Migration(
        "0862_view_feedback_outcomes_daily",
        """
CREATE VIEW IF NOT EXISTS {db}.feedback_outcomes_daily AS
SELECT user_id, day, sum(pairs) AS accepted_pairs, sum(examples) AS accepted_examples, sum(rejections) AS rejected
FROM (
    SELECT user_id, toDate(created_at) AS day, count() AS pairs, toUInt64(0) AS examples, toUInt64(0) AS rejections
    FROM {db}.preference_pairs FINAL GROUP BY user_id, day
    UNION ALL
    SELECT user_id, toDate(created_at) AS day, toUInt64(0) AS pairs, count() AS examples, toUInt64(0) AS rejections
    FROM {db}.labelled_examples FINAL GROUP BY user_id, day
    UNION ALL
    SELECT user_id, toDate(created_at) AS day, toUInt64(0) AS pairs, toUInt64(0) AS examples, count() AS rejections
    FROM {db}.rejected_feedback FINAL GROUP BY user_id, day
)
GROUP BY user_id, day
""",
    ),
    # bucket b holds quality scores in [b/10, (b+1)/10); 1.0 falls in the last one. Rejections scored
    # before they failed are counted too (checks that fail before scoring leave no score).
    Migration(
        "0863_view_quality_daily",
        """
CREATE VIEW IF NOT EXISTS {db}.quality_daily AS
SELECT user_id, day, bucket, sum(pairs) AS accepted, sum(rejections) AS rejected
FROM (
    SELECT user_id, toDate(created_at) AS day, toUInt8(least(floor(quality_score * 10), 9)) AS bucket,
           count() AS pairs, toUInt64(0) AS rejections
    FROM {db}.preference_pairs FINAL GROUP BY user_id, day, bucket
    UNION ALL
    SELECT user_id, toDate(created_at) AS day, toUInt8(least(floor(assumeNotNull(quality_score) * 10), 9)) AS bucket,
           toUInt64(0) AS pairs, count() AS rejections
    FROM {db}.rejected_feedback FINAL WHERE quality_score IS NOT NULL GROUP BY user_id, day, bucket
)
GROUP BY user_id, day, bucket
""",
    ),
    # A job's duration runs from its first attempt's start to its outcome (retries included, queueing
    # not): both are the trainer's wall-clock times, so replaying old feedback does not stretch them.
    Migration(
        "0864_view_training_job_outcomes",
        """
CREATE VIEW IF NOT EXISTS {db}.training_job_outcomes AS
SELECT j.request_id AS request_id, j.user_id AS user_id, j.status AS status, j.attempt AS attempt,
       j.adapter_version AS adapter_version, j.cause AS cause,
       if(a.request_id = j.request_id, a.first_started_at, NULL) AS started_at,
       toDate(ifNull(started_at, j.updated_at)) AS day,
       if(j.status IN ('succeeded', 'failed', 'cancelled', 'rejected'), j.updated_at, NULL) AS ended_at,
       dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s
FROM {db}.training_jobs AS j FINAL
LEFT JOIN (SELECT request_id, min(started_at) AS first_started_at FROM {db}.training_attempts FINAL
           GROUP BY request_id) AS a ON a.request_id = j.request_id
""",
    ),
    Migration(
        "0865_view_adapters_daily",
        """
CREATE VIEW IF NOT EXISTS {db}.adapters_daily AS
SELECT user_id, toDate(published_at) AS day, count() AS published, countIf(revoked) AS revoked
FROM {db}.adapters FINAL
GROUP BY user_id, day
""",
    ),
    # An answer counts once per kind of feedback its own user gave on it, on the day it was served.
    Migration(
        "0866_view_answer_outcomes_daily",
        """
CREATE VIEW IF NOT EXISTS {db}.answer_outcomes_daily AS
SELECT l.user_id AS user_id, toDate(l.served_at) AS day, l.arm AS arm, l.adapter_version AS adapter_version,
       uniqExact(l.answer_id) AS answers,
       uniqExactIf(l.answer_id, f.feedback_type = 'correction') AS corrected,
       uniqExactIf(l.answer_id, f.feedback_type = 'thumbs_down') AS thumbs_down,
       uniqExactIf(l.answer_id, f.feedback_type = 'thumbs_up') AS thumbs_up
FROM {db}.inference_log AS l FINAL
LEFT JOIN (SELECT answer_id, user_id, feedback_type FROM {db}.answer_feedback FINAL) AS f
    ON f.answer_id = l.answer_id AND f.user_id = l.user_id
GROUP BY user_id, day, arm, adapter_version
""",
    ),
    # projected_at is kept when a pair is deactivated or reweighted (the update copies the row), so
    # the lag is to the pair's first visibility; a replay past the dedup window sets it again.
    Migration(
        "0867_view_pair_ingestion_lag",
        """
CREATE VIEW IF NOT EXISTS {db}.pair_ingestion_lag AS
SELECT user_id, pair_id, created_at, projected_at, dateDiff('millisecond', created_at, projected_at) AS lag_ms
FROM {db}.preference_pairs FINAL
""",
    ),
)
