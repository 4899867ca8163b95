"""The configuration: one YAML file (``samtuner.yaml``), one documented type.

Every field has a description and a default; unknown keys are an error that names them and the
valid keys. Cross-field rules live in validators that name the bad values.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import ConfigError
from schemas.keys import ApiKey

# Keys that would put a secret inline in the file: each says where the secret goes instead.
_INLINE_SECRETS = {
    "password": "passwords are never written in the config: use password_env (the name of an environment "
    "variable) or password_file",
    "sasl_password": "use kafka.security.password_env or password_file",
    "api_key": "API keys are stored hashed: `samtuner keys create` prints a token and the entry to add",
    "token": "API keys are stored hashed: `samtuner keys create` prints a token and the entry to add",
}


def default_cache_dir() -> Path:
    """Where downloaded jars and locally built models live (outside the repo)."""
    return Path(os.environ.get("SAMTUNER_CACHE", Path.home() / ".cache" / "samtuner")).expanduser()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSecurity(Section):
    """How every Kafka client of this process authenticates (README: 'Kafka security').

    The password is never written in the config: it comes from an environment variable or a file.
    """

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols only)."
    )
    username: str | None = Field(None, min_length=1, description="SASL username (the principal is User:<username>).")
    password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the environment variable holding the password."
    )
    password_file: str | None = Field(None, description="A file holding the password (trailing newline ignored).")
    ssl_ca: str | None = Field(None, description="CA certificate (PEM) that signed the brokers' certificates.")
    ssl_cert: str | None = Field(None, description="Client certificate (PEM), for TLS client authentication.")
    ssl_key: str | None = Field(None, description="Client private key (PEM), with ssl_cert.")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        problems = []
        if self.sasl:
            if not self.username:
                problems.append(f"kafka.security.protocol {self.protocol} needs kafka.security.username")
            if (self.password_env is None) == (self.password_file is None):
                problems.append(
                    f"kafka.security.protocol {self.protocol} needs exactly one of "
                    "kafka.security.password_env and kafka.security.password_file"
                )
        elif self.username or self.password_env or self.password_file:
            problems.append(
                f"kafka.security.username/password_* are set but kafka.security.protocol is "
                f"{self.protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        if not self.tls and (self.ssl_ca or self.ssl_cert or self.ssl_key):
            problems.append(
                f"kafka.security.ssl_* are set but kafka.security.protocol is {self.protocol}: use SSL or SASL_SSL"
            )
        if (self.ssl_cert is None) != (self.ssl_key is None):
            problems.append("kafka.security.ssl_cert and kafka.security.ssl_key go together")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class KafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field("", description="Prefix for every topic name (tests use a unique one).")
    partitions: int = Field(6, ge=1, description="Partitions of the co-partitioned, user-keyed topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor for created topics.")
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    connect_timeout_s: float = Field(
        4.0,
        gt=0.0,
        le=60.0,
        description="How long a command tries to connect to the broker before it says it cannot be reached.",
    )


class ClickHouseSettings(Section):
    dsn: str | None = Field(
        None,
        description="clickhouse-connect DSN. 'chdb:///abs/path' = embedded engine (default: "
        "<state_dir>/clickhouse); 'http://user:pass@host:8123' = a ClickHouse server.",
    )
    database: str = Field("sam", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database of the projections.")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the server password (instead of one in the DSN).",
    )
    password_file: str | None = Field(None, description="A file holding the server password.")
    connect_timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="Connect timeout to a ClickHouse server.")

    @model_validator(mode="after")
    def _one_password(self) -> ClickHouseSettings:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("clickhouse.password_env and clickhouse.password_file: set one of them")
        return self


class ArtifactSettings(Section):
    root: str | None = Field(None, description="Artifact store root (default: <state_dir>/artifacts).")


class ModelSettings(Section):
    base: str = Field(
        str(default_cache_dir() / "models" / "demo-chat"),
        description="Base model: a local path or a model id, passed to from_pretrained as is.",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Weights dtype when loading the base model."
    )
    max_new_tokens: int = Field(48, ge=1, le=4096, description="Tokens generated per answer.")


class LoraSettings(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), min_length=1, description="Modules that get adapters."
    )


class QuantizationSettings(Section):
    mode: Literal["auto", "none", "4bit", "8bit"] = Field(
        "auto", description="bitsandbytes quantization of the base model; 'auto' = 4bit when CUDA is present."
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit quantization type.")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Compute dtype of 4-bit layers."
    )
    bnb_4bit_use_double_quant: bool = Field(True, description="Nested quantization of the 4-bit constants.")


def _default_dpo() -> dict[str, Any]:
    # Measured here (see README, 'Training defaults'): plain sigmoid DPO never shows a style in
    # generations on small models; a weighted SFT term on the chosen answers does.
    # 'auto' values are resolved per job from the data size, the model and the machine (trainer/auto.py,
    # README): loss_weights auto = [1, 3] on small models, [1, 1] on pretrained ones.
    return {
        "beta": 0.1,
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": "auto",
        "learning_rate": "auto",
        "num_train_epochs": "auto",
        "per_device_train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "max_length": 256,
        "bf16": "auto",
        "gradient_checkpointing": "auto",
        "logging_steps": 1,
    }


def merged_dpo(given: dict[str, Any]) -> dict[str, Any]:
    """A (partial) ``training.dpo`` over the defaults above: the file adds to the recipe, it does not replace it.

    A key set to null falls back to TRL's own default. The default ``loss_weights`` belong to the default
    ``loss_type``: a file that sets another ``loss_type`` without weights gets TRL's equal weights.
    Merging a merged dict again changes nothing (jobs re-validate the config they are sent).
    """
    defaults = _default_dpo()
    if "loss_type" in given and "loss_weights" not in given and given["loss_type"] != defaults["loss_type"]:
        del defaults["loss_weights"]
    return {**defaults, **given}


def dpo_for_trl(dpo: dict[str, Any]) -> dict[str, Any]:
    """The keys to pass to DPOConfig: those set to null are left out, so TRL's defaults apply."""
    return {k: v for k, v in dpo.items() if v is not None}


# training.dpo keys that accept 'auto' (resolved in trainer/auto.py).
AUTO_DPO_KEYS = (
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "bf16",
    "gradient_checkpointing",
    "loss_weights",
)


class KtoSettings(Section):
    """KTO's own settings (method kto); the rest (learning rate, epochs, batch, lengths) comes from training.dpo."""

    beta: float = Field(0.1, gt=0.0, description="KTO's beta: how far the adapter may move from the base model.")
    desirable_weight: float = Field(1.0, gt=0.0, description="Weight of the losses of desirable (thumbs-up) examples.")
    undesirable_weight: float = Field(
        1.0, gt=0.0, description="Weight of the losses of undesirable (thumbs-down) examples."
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL's KTO loss type.")


class TrainingSettings(Section):
    dpo: dict[str, Any] = Field(
        default_factory=_default_dpo,
        description="Passed to TRL's DPOConfig; every key is checked against the pinned TRL version. A partial "
        "section merges over the defaults defined in code; a key set to null uses TRL's default.",
    )
    holdout_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Share of a user's pairs held out for the gate only (stable per pair; trainer/dataset.py).",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of a user's pairs used for early stopping and the choice of the checkpoint (stable per "
        "pair, never the held-out ones).",
    )
    method: Literal["auto", "dpo", "kto"] = Field(
        "auto",
        description="'dpo' on preference pairs; 'kto' (TRL's KTOTrainer) on labelled examples (thumbs up/down) "
        "plus every pair as one desirable and one undesirable example; 'auto' = dpo when the dataset holds pairs, "
        "kto when it holds only labelled examples.",
    )
    near_identical_weight: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="Multiplies the training weight of pairs flagged near-identical (0 = leave them out). 1.0 was "
        "measured best: corrections that add a short sign-off or caveat to a long answer are flagged, and they "
        "are the style (README, 'Curated data').",
    )
    kto: KtoSettings = Field(default_factory=KtoSettings)
    seed: int = Field(0, description="Seed for splits and training.")
    python: str | None = Field(None, description="Python for the training subprocess (default: this one).")
    incremental: bool = Field(
        False, description="Train on top of the user's current adapter (same LoRA settings) instead of a fresh one."
    )
    checkpoint_steps: int | Literal["auto"] = Field(
        "auto",
        description="Save a resumable checkpoint every N optimizer steps ('auto' = once per epoch; 0 = never, "
        "so a killed job restarts from scratch). Held-out evaluation runs at the same steps.",
    )

    @field_validator("dpo", mode="before")
    @classmethod
    def _merge_over_defaults(cls, value: Any) -> Any:
        return merged_dpo(value) if isinstance(value, dict) else value

    @field_validator("checkpoint_steps")
    @classmethod
    def _non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto', 0 (never) or a positive number of steps")
        return v


class TriggerSettings(Section):
    min_new_pairs: int = Field(64, ge=1, description="New accepted pairs of a user that trigger training.")
    min_new_examples: int = Field(
        128,
        ge=0,
        description="New labelled examples (thumbs up/down without a correction) that trigger training on their own "
        "(KTO for a thumbs-only user, training.method auto); 0 = they never trigger it.",
    )


class QualitySettings(Section):
    """Thresholds of the preference-data quality checks (README: 'Quality checks')."""

    tokenizer: str | None = Field(
        None, description="Tokenizer for token-length checks (a from_pretrained path or id; default: model.base)."
    )
    prompt_chars: tuple[int, int] = Field((1, 4000), description="Allowed prompt length in characters [min, max].")
    response_chars: tuple[int, int] = Field(
        (1, 8000), description="Allowed chosen/rejected length in characters [min, max]."
    )
    prompt_tokens: tuple[int, int] = Field((1, 1024), description="Allowed prompt length in tokens [min, max].")
    response_tokens: tuple[int, int] = Field(
        (1, 2048), description="Allowed chosen/rejected length in tokens [min, max]."
    )
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="Feedback below this confidence is rejected.")
    near_identical_similarity: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Word-level similarity of chosen vs rejected at or above which a pair is flagged near-identical.",
    )
    near_duplicate_jaccard: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="Estimated Jaccard similarity (MinHash) to an earlier pair of the user that rejects a pair.",
    )
    minhash_num_perm: int = Field(64, ge=16, le=256, description="MinHash permutations.")
    shingle_words: int = Field(3, ge=1, le=8, description="Word shingle size for MinHash.")
    min_quality: float = Field(0.5, ge=0.0, le=1.0, description="Pairs scoring below this are rejected.")

    @model_validator(mode="after")
    def _ranges(self) -> QualitySettings:
        for name in ("prompt_chars", "response_chars", "prompt_tokens", "response_tokens"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"quality.{name} must be [min, max] with 0 <= min <= max, got [{low}, {high}]")
        return self


class ControlCase(Section):
    """A generic prompt of the gate's control set and the answers that count as correct."""

    prompt: str = Field(min_length=1, description="A generic question, unrelated to any user's style.")
    references: tuple[str, ...] = Field(
        min_length=1,
        description="Correct answers: an answer is correct when it mentions one of them as a whole word or phrase "
        "(case aside).",
    )


# The gate's control set: generic questions with their reference answers. A control counts as broken
# only where the base model answered it correctly and the adapter no longer does (trainer/gate.py).
# No reference occurs in its own question, so an answer that only repeats the question is not correct.
DEFAULT_CONTROLS = tuple(
    ControlCase(prompt=p, references=r)
    for p, r in (
        ("What is 7 plus 5?", ("12", "twelve")),
        ("What is 3 plus 9?", ("12", "twelve")),
        ("What is 12 plus 12?", ("24", "twenty-four", "twenty four")),
        ("What is 2 plus 6?", ("8", "eight")),
        ("What is 6 plus 6?", ("12", "twelve")),
        ("What is 11 plus 4?", ("15", "fifteen")),
        ("What is the capital of France?", ("Paris",)),
        ("What is the capital of Japan?", ("Tokyo",)),
        ("What is the capital of Kenya?", ("Nairobi",)),
        ("What is the capital of Canada?", ("Ottawa",)),
        ("What color is grass?", ("green",)),
        ("What color is snow?", ("white",)),
        ("What color is a banana?", ("yellow",)),
        ("What is the opposite of hot?", ("cold",)),
        ("What is the opposite of early?", ("late",)),
        ("What is the opposite of full?", ("empty",)),
        ("What sound does a dog make?", ("bark", "barks", "barking", "woof")),
        ("What sound does a cow make?", ("moo", "moos", "mooing")),
        ("What sound does an owl make?", ("hoot", "hoots", "hooting")),
        ("What sound does a frog make?", ("croak", "croaks", "croaking", "ribbit")),
        ("What is the capital of Iceland?", ("Reykjavik", "Reykjavík")),
        ("What is the capital of Croatia?", ("Zagreb",)),
        ("What is the capital of Serbia?", ("Belgrade",)),
        ("What is the capital of Bulgaria?", ("Sofia",)),
        ("What is the capital of Malaysia?", ("Kuala Lumpur",)),
        ("What is the capital of Afghanistan?", ("Kabul",)),
        ("How many sides does a triangle have?", ("three", "3")),
        ("What is 10 times 10?", ("100", "one hundred", "a hundred")),
        ("Which animal is known as the king of the jungle?", ("lion", "lions")),
        ("What color is the sky on a clear day?", ("blue",)),
    )
)


class EvaluationSettings(Section):
    """The evaluation gate: an adapter is published only when it is better than what the user has now."""

    enabled: bool = Field(True, description="Run the gate; when off, every trained adapter is published.")
    min_heldout_pairs: int = Field(
        4, ge=1, description="Fewer held-out pairs than this cannot judge an adapter: the job is rejected."
    )
    min_accuracy: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Held-out preference accuracy (per token: mean log-probability of chosen vs rejected) the new "
        "adapter must reach.",
    )
    min_accuracy_gain: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="How much the new adapter's held-out accuracy must exceed what the user has now "
        "(0 = at least as good).",
    )
    min_margin: float = Field(
        0.0,
        ge=-10.0,
        le=10.0,
        description="The new adapter's mean held-out preference margin (nats per token, chosen minus rejected) "
        "must be above this.",
    )
    controls: tuple[ControlCase, ...] = Field(
        DEFAULT_CONTROLS,
        description="Generic prompts with reference answers; the adapter must not break what the base model answers "
        "correctly (empty = no check).",
    )
    control_min_share: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Share of the controls the base model answers correctly that the adapter must still answer "
        "correctly.",
    )
    control_max_new_tokens: int = Field(
        32,
        ge=1,
        le=1024,
        description="Tokens generated per control answer: enough for a direct answer; a rambling one is cut "
        "before it mentions the reference by chance.",
    )
    early_stopping_patience: int = Field(
        3,
        ge=0,
        description="Stop training when the validation loss has not improved for this many evaluations "
        "(0 = off). The best checkpoint (on the validation pairs, never the held-out ones) is kept.",
    )


class StateSettings(Section):
    """How much the decider remembers per user (``streams/decider/journal.py``): the changelog of its state
    keeps one value per key, so its size, and a restart's restore time, follow the number of users times these bounds.

    Counts, not a time window: the state must be a function of the log alone (a batch decided again
    after a crash must decide as the first time), and a clock would make it depend on when it ran.
    """

    max_sightings_per_user: int = Field(
        128,
        ge=1,
        le=100_000,
        description="Ids and fingerprints remembered per user: each feedback event leaves its event id and, when "
        "accepted, its pair or example fingerprint; each command its id. At least the last N are kept (the "
        "oldest go 16 at a time). Within them, the same event (or command) delivered again at a new offset is "
        "a counted redelivery and "
        "the same pair or example is a duplicate; beyond them, it is decided as new (its ids are deterministic, "
        "so an accepted pair comes back with the same pair id and the projection keeps one row). An event "
        "delivered again at an offset the decider already handled is skipped whatever its age.",
    )
    max_signatures_per_user: int = Field(
        32,
        ge=1,
        le=10_000,
        description="MinHash signatures kept per user for near-duplicate search: the last N accepted pairs "
        "(at least; the oldest go 4 at a time). An older pair is no longer anyone's near duplicate.",
    )


class StreamsSettings(Section):
    app_id: str = Field("samtuner-streams", description="Faust app id (consumer group and changelog prefix).")
    batch_size: int = Field(1000, ge=1, description="Max events per processing batch.")
    batch_timeout_s: float = Field(0.2, gt=0.0, description="Max wait to fill a batch.")
    preview_chars: int = Field(2000, ge=16, description="Text kept from rejected feedback for analytics.")
    session_timeout_s: float = Field(
        30.0,
        ge=3.0,
        le=300.0,
        description="Consumer-group session timeout: how soon a crashed worker's partitions move on.",
    )
    stall_timeout_s: float = Field(
        20.0,
        ge=2.0,
        le=3600.0,
        description="A decider that handled nothing for this long while its sources hold events seeks them "
        "back to the committed offsets (Faust can drop fetched messages around a rebalance); after three "
        "fruitless seeks the worker stops so that it is restarted.",
    )
    state: StateSettings = Field(default_factory=StateSettings)


class FaultInjection(Section):
    """Deliberate faults, for tests and benchmarks only: never set them in production."""

    fail_attempts: int = Field(0, ge=0, description="The first N attempts of every job fail with `failure`.")
    failure: Literal["OutOfMemoryError", "RuntimeError"] = Field(
        "OutOfMemoryError", description="What the injected failure looks like (out of memory can be retried)."
    )
    step_delay_s: float = Field(0.0, ge=0.0, le=60.0, description="Sleep after every optimizer step (slow jobs).")
    shuffle_train_labels: bool = Field(
        False, description="Swap chosen/rejected on a random half of the training pairs (a deliberately bad adapter)."
    )


class TrainerSettings(Section):
    group_id: str = Field("samtuner-trainer", description="Consumer group shared by trainer workers.")
    max_poll_interval_ms: int = Field(300_000, ge=10_000, description="Kafka max.poll.interval.ms.")
    session_timeout_ms: int = Field(
        30_000, ge=6_000, description="Kafka session.timeout.ms: how soon a dead worker's jobs move to another one."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Attempts per job for failures that can pass (out of memory: each retry halves the "
        "batch and doubles gradient accumulation).",
    )
    retry_backoff_s: float = Field(5.0, ge=0.0, description="Wait before the first retry; doubled for each next one.")
    max_interrupted_attempts: int = Field(
        5, ge=1, description="A job whose worker died this many times while running it is failed, not run again."
    )
    cancel_grace_s: float = Field(
        5.0, gt=0.0, description="After SIGTERM, how long a cancelled training process gets before SIGKILL."
    )
    progress_interval_s: float = Field(0.5, ge=0.0, description="Least time between two TrainingProgressed events.")
    fault_injection: FaultInjection = Field(default_factory=FaultInjection)


class AdapterCacheSettings(Section):
    """The adapters a node keeps loaded: bounded by count and bytes, idle entries expire."""

    max_adapters: int = Field(64, ge=1, description="Adapters kept loaded at most.")
    max_bytes: int = Field(2 * 1024**3, ge=1, description="Bytes of adapter weights kept loaded at most.")
    ttl_s: float = Field(3600.0, gt=0.0, description="An adapter unused for this long is unloaded.")
    policy: Literal["wtinylfu", "lru"] = Field(
        "wtinylfu",
        description="Eviction policy. 'wtinylfu' (window TinyLFU, window sized by ghost hits) beat LRU on "
        "skewed traffic in `make bench-inference`; 'lru' is plain least-recently-used.",
    )
    pinned_users: tuple[str, ...] = Field((), description="Users whose current adapter is never evicted.")


class ServingLimits(Section):
    """What one request may ask of a node, so that no request can starve the others; each refusal names its limit."""

    max_tokens: int = Field(
        512,
        ge=1,
        le=32768,
        description="Largest max_tokens / max_completion_tokens a request may ask for (more is "
        "refused with a 400 naming this limit).",
    )
    max_prompt_tokens: int = Field(
        2048,
        ge=1,
        description="Longest prompt, in tokens after the chat template (conversation included).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest HTTP request body (413 beyond).")
    request_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="Time a request may take, queue wait included: an answer still generating then "
        "ends (finish_reason 'length', samtuner.stopped_by says why); one still queued is refused (503).",
    )
    max_queue: int = Field(
        64,
        ge=0,
        description="Requests waiting for a batch row at most; beyond, a 429 with Retry-After.",
    )


class InferenceSettings(Section):
    node_id: str = Field(default_factory=socket.gethostname, description="This node's id (its consumer group).")
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 = any free port).")
    cache: AdapterCacheSettings = Field(default_factory=AdapterCacheSettings)
    lora_serving: Literal["merged", "unmerged"] = Field(
        "merged",
        description="Batches of several users always add each row's own B(A(x)) per layer (one forward pass for "
        "all). 'merged': once a batch whose rows all have one adapter ran 4 decode steps with 32 or more tokens "
        "still to go, that adapter is added into a scratch copy of the target weights (no per-token cost; bounded "
        "by merge_scratch_mb). 'unmerged': never merge. Quantized layers are always unmerged.",
    )
    merge_scratch_mb: float = Field(
        128.0,
        ge=0.0,
        description="Scratch memory of merged serving; target layers past it stay unmerged.",
    )
    max_batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Requests decoded together, one row each (a new request joins between steps).",
    )
    limits: ServingLimits = Field(default_factory=ServingLimits)
    max_rank: int = Field(256, ge=1, description="Adapters with a larger LoRA rank are refused.")
    ab_new_share: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Default A/B split: share of a user's requests answered by the newest version, the rest by "
        "the previous one (or the base model). ActivateAdapter(new_share=...) sets it per user.",
    )
    prefetch_window_s: float = Field(
        600.0, ge=0.0, description="A newly published adapter is loaded at once when its user asked within this window."
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads of the node (None = torch's default). Small models on shared CPUs "
        "answer much faster with 1.",
    )
    registrar_group_id: str = Field(
        "samtuner-registrar", description="Consumer group of the registrar (turns Activate/Deactivate into events)."
    )


class AuthSettings(Section):
    """API keys of every HTTP server (node, console, metrics). README: 'Keys and scopes'.

    Keys are stored hashed (sha256 of the token); with none configured, servers bind loopback only.
    """

    keys: tuple[ApiKey, ...] = Field((), description="Hashed keys (see `samtuner keys create`).")
    keys_file: str | None = Field(None, description="A YAML file of hashed keys ({keys: [...]}), read at start.")


class MetricsSettings(Section):
    """Prometheus /metrics of the roles that are not an inference node (one small server per role)."""

    host: str = Field("127.0.0.1", description="Bind address of the roles' metrics servers.")
    decider_port: int | None = Field(9401, ge=0, le=65535, description="Decider /metrics (None = off, 0 = any).")
    projector_port: int | None = Field(9402, ge=0, le=65535, description="Projector /metrics (None = off, 0 = any).")
    trainer_port: int | None = Field(9403, ge=0, le=65535, description="Trainer /metrics (None = off, 0 = any).")


class LoggingSettings(Section):
    format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per line, with correlation_id on lines about an event."
    )


class ConsoleSettings(Section):
    """The web console, served by the process that owns the store (README: 'The console')."""

    enabled: bool = Field(True, description="Serve the console (and its JSON API) where the store is owned.")
    host: str = Field("127.0.0.1", description="Bind address of the console's own server (samtuner streams).")
    port: int = Field(
        8100,
        ge=0,
        le=65535,
        description="Port of the console's own server (samtuner streams); "
        "samtuner run serves it on inference.port instead.",
    )
    admin_token_file: str | None = Field(
        None,
        description="File holding the admin token; actions that change anything need it. Never the token "
        "itself in this file.",
    )
    admin_token_env: str = Field(
        "SAMTUNER_ADMIN_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the admin token (used when admin_token_file is not set).",
    )
    open_reads_on_loopback: bool = Field(
        True, description="Read-only pages need no token from loopback clients; any other client needs it."
    )
    node_urls: tuple[str, ...] = Field(
        (),
        description="Inference nodes the console asks which adapters they hold, and for compare answers when "
        "no node runs in its process (e.g. http://127.0.0.1:8000).",
    )
    page_size_max: int = Field(500, ge=1, le=10_000, description="Largest page of the pairs table.")
    bulk_max_pairs: int = Field(
        200_000, ge=1, description="A bulk action over more matching pairs than this is refused (narrow the filter)."
    )


class Config(Section):
    """Everything sam-tuner reads from ``samtuner.yaml``."""

    state_dir: str = Field(".samtuner", description="Broker data, embedded ClickHouse, artifacts (default).")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: QuantizationSettings = Field(default_factory=QuantizationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    trigger: TriggerSettings = Field(default_factory=TriggerSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)

    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _check(self) -> Config:
        dpo = self.training.dpo
        lt = dpo.get("loss_type")
        lw = dpo.get("loss_weights")
        types = [lt] if isinstance(lt, str) else lt
        if isinstance(types, list) and isinstance(lw, list) and len(types) != len(lw):
            raise ValueError(
                f"training.dpo.loss_weights {lw} has {len(lw)} entries but training.dpo.loss_type {types} has "
                f"{len(types)}: give one weight per loss type (or set loss_weights to null for equal weights)"
            )
        if self.model.max_new_tokens > self.inference.limits.max_tokens:
            raise ValueError(
                f"model.max_new_tokens ({self.model.max_new_tokens}) is above "
                f"inference.limits.max_tokens ({self.inference.limits.max_tokens})"
            )
        problems = training_conflicts(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Derived locations -----------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{self.state_path / 'clickhouse'}"

    @property
    def artifact_root(self) -> Path:
        root = self.artifacts.root
        return Path(root).expanduser().resolve() if root else self.state_path / "artifacts"

    def redacted(self) -> dict[str, Any]:
        """The config as JSON with every secret masked: what `config show`, spec.json and manifests hold."""
        from schemas.secrets import redact

        return dict(redact(self.model_dump(mode="json")))

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections replaced (validated again)."""
        data = self.model_dump()
        for name, values in sections.items():
            data[name] = deep_merge(data[name], values) if isinstance(data.get(name), dict) else values
        return Config.model_validate(data)


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in; nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None) -> Config:
    """Load ``samtuner.yaml``; no path and no file -> defaults. Errors name every bad key."""
    raw, source = read_config_file(path)
    return parse_config(raw, source=source or "defaults")


def read_config_file(path: str | Path | None = None) -> tuple[Any, str | None]:
    """(the file's YAML as read, its path): ``path``, else $SAMTUNER_CONFIG, else ./samtuner.yaml if it exists.

    No file -> ({}, None): every value is a default.
    """
    if path is None:
        env = os.environ.get("SAMTUNER_CONFIG")
        candidate = Path(env) if env else Path("samtuner.yaml")
        if not candidate.exists():
            if env:
                raise ConfigError(f"{candidate}: no such file (from SAMTUNER_CONFIG)")
            return {}, None
        path = candidate
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return ({} if raw is None else raw), str(path)


def parse_config(raw: Any, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + describe_errors(exc, Config)) from exc


def describe_errors(exc: ValidationError, root: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(root, err["loc"][:-1])
            hint = _INLINE_SECRETS.get(str(err["loc"][-1]))
            lines.append(f"unknown key '{loc}' (valid here: {', '.join(valid)})" + (f": {hint}" if hint else ""))
        else:
            lines.append(f"'{loc}': {err['msg']}" if loc else err["msg"])
    return "; ".join(lines)


def _valid_keys(root: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in path:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def training_conflicts(cfg: Config) -> list[str]:
    """Options that contradict each other, each naming the fields involved (pure; no library imports)."""
    dpo = cfg.training.dpo
    problems = []
    for key, value in dpo.items():
        if value == "auto" and key not in AUTO_DPO_KEYS:
            problems.append(f"training.dpo.{key}: 'auto' is accepted only for {', '.join(AUTO_DPO_KEYS)}")
    if dpo.get("bf16") is True and dpo.get("fp16") is True:
        problems.append("training.dpo.bf16 and training.dpo.fp16 are both true: choose one")
    ev = cfg.evaluation
    if ev.enabled and cfg.training.holdout_fraction == 0.0:
        problems.append(
            "evaluation.enabled needs held-out pairs but training.holdout_fraction is 0: hold out a "
            "share of the pairs, or turn the gate off"
        )
    if cfg.training.holdout_fraction + cfg.training.validation_fraction >= 1.0:
        problems.append(
            f"training.holdout_fraction ({cfg.training.holdout_fraction}) + "
            f"training.validation_fraction ({cfg.training.validation_fraction}) leave nothing to train "
            "on: their sum must be below 1"
        )
    if ev.early_stopping_patience > 0 and cfg.training.validation_fraction == 0.0:
        problems.append(
            "evaluation.early_stopping_patience needs validation pairs but training.validation_fraction "
            "is 0: set a validation share, or patience 0"
        )
    if ev.early_stopping_patience > 0 and cfg.training.checkpoint_steps == 0:
        problems.append(
            "evaluation.early_stopping_patience keeps the best checkpoint, but training.checkpoint_steps "
            "is 0 (no checkpoints): set checkpoint_steps or patience 0"
        )
    for key in ("eval_strategy", "eval_steps", "load_best_model_at_end", "metric_for_best_model"):
        if key in dpo and ev.early_stopping_patience > 0:
            problems.append(
                f"training.dpo.{key} conflicts with evaluation.early_stopping_patience, which sets the "
                "held-out evaluation itself: remove the key or set the patience to 0"
            )
    return problems
