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


def default_cache_dir() -> Path:
    """Where downloaded jars and locally built models live (outside the repo)."""
    return Path(os.environ.get("SAMTUNER_CACHE", Path.home() / ".cache" / "samtuner")).expanduser()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field("", description="Prefix for every topic name (tests use a unique one).")
    partitions: int = Field(6, ge=1, description="Partitions of the co-partitioned, user-keyed topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor for created topics.")


class ClickHouseSettings(Section):
    dsn: str | None = Field(
        None,
        description="clickhouse-connect DSN. 'chdb:///abs/path' = embedded engine (default: "
        "<state_dir>/clickhouse); 'http://user:pass@host:8123' = a ClickHouse server.",
    )
    database: str = Field("sam", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database of the projections.")


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
    # 'auto' values are resolved per job from the data size and the machine (trainer/auto.py, README).
    return {
        "beta": 0.1,
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": [1.0, 3.0],
        "learning_rate": "auto",
        "num_train_epochs": "auto",
        "per_device_train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "max_length": 256,
        "bf16": "auto",
        "gradient_checkpointing": "auto",
        "logging_steps": 1,
    }


# training.dpo keys that accept 'auto' (resolved in trainer/auto.py).
AUTO_DPO_KEYS = (
    "num_train_epochs", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "bf16",
    "gradient_checkpointing",
)


class TrainingSettings(Section):
    dpo: dict[str, Any] = Field(
        default_factory=_default_dpo,
        description="Passed to TRL's DPOConfig; every key is checked against the pinned TRL version.",
    )
    holdout_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of a user's pairs held out to measure preference accuracy."
    )
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

    @field_validator("checkpoint_steps")
    @classmethod
    def _non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto', 0 (never) or a positive number of steps")
        return v


class TriggerSettings(Section):
    min_new_pairs: int = Field(64, ge=1, description="New accepted pairs of a user that trigger training.")


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
        0.9, ge=0.0, le=1.0,
        description="Word-level similarity of chosen vs rejected at or above which a pair is flagged near-identical.",
    )
    near_duplicate_jaccard: float = Field(
        0.85, gt=0.0, le=1.0,
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


# Generic questions whose answers must keep their meaning after personalization (the gate's control set).
# The demo model answers them from its corpus; any chat model can.
DEFAULT_CONTROL_PROMPTS = (
    "What is 7 plus 5?", "What is 3 plus 9?", "What is 12 plus 12?", "What is 0 plus 8?", "What is 6 plus 6?",
    "What is 11 plus 4?", "What is the capital of France?", "What is the capital of Japan?",
    "What is the capital of Kenya?", "What is the capital of Canada?", "What color is grass?",
    "What color is snow?", "What color is a banana?", "What is the opposite of hot?",
    "What is the opposite of early?", "What is the opposite of full?", "What sound does a dog make?",
    "What sound does a cow make?", "What sound does an owl make?", "What sound does a frog make?",
)


class EvaluationSettings(Section):
    """The evaluation gate: an adapter is published only when it is better than what the user has now."""

    enabled: bool = Field(True, description="Run the gate; when off, every trained adapter is published.")
    min_heldout_pairs: int = Field(
        4, ge=1, description="Fewer held-out pairs than this cannot judge an adapter: the job is rejected."
    )
    min_accuracy: float = Field(
        0.6, ge=0.0, le=1.0, description="Held-out preference accuracy the new adapter must reach."
    )
    min_accuracy_gain: float = Field(
        0.0, ge=-1.0, le=1.0,
        description="How much the new adapter's held-out accuracy must exceed what the user has now "
        "(0 = at least as good).",
    )
    control_prompts: tuple[str, ...] = Field(
        DEFAULT_CONTROL_PROMPTS, description="Generic prompts whose answers must keep their meaning (empty = no check)."
    )
    control_min_recall: float = Field(
        0.8, gt=0.0, le=1.0,
        description="A control answer keeps its meaning when it still holds this share of the content words of "
        "the answer the user gets now.",
    )
    control_min_share: float = Field(
        0.9, ge=0.0, le=1.0, description="Share of control prompts that must keep their meaning."
    )
    control_max_new_tokens: int = Field(48, ge=1, le=1024, description="Tokens generated per control answer.")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop training when the held-out loss has not improved for this many evaluations "
        "(0 = off). The best checkpoint is kept.",
    )


class StreamsSettings(Section):
    app_id: str = Field("samtuner-streams", description="Faust app id (consumer group and changelog prefix).")
    batch_size: int = Field(1000, ge=1, description="Max events per processing batch.")
    batch_timeout_s: float = Field(0.2, gt=0.0, description="Max wait to fill a batch.")
    preview_chars: int = Field(2000, ge=16, description="Text kept from rejected feedback for analytics.")
    session_timeout_s: float = Field(
        30.0, ge=3.0, le=300.0,
        description="Consumer-group session timeout: how soon a crashed worker's partitions move on.",
    )
    stall_timeout_s: float = Field(
        20.0, ge=2.0, le=3600.0,
        description="A decider that handled nothing for this long while its sources hold events seeks them "
        "back to the committed offsets (Faust can drop fetched messages around a rebalance); after three "
        "fruitless seeks the worker stops so that it is restarted.",
    )


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
        3, ge=1, description="Attempts per job for failures that can pass (out of memory: each retry halves the "
        "batch and doubles gradient accumulation)."
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
        512, ge=1, le=32768, description="Largest max_tokens / max_completion_tokens a request may ask for (more is "
        "refused with a 400 naming this limit).",
    )
    max_prompt_tokens: int = Field(
        2048, ge=1, description="Longest prompt, in tokens after the chat template (conversation included).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest HTTP request body (413 beyond).")
    request_timeout_s: float = Field(
        120.0, gt=0.0, description="Time a request may take, queue wait included: an answer still generating then "
        "ends (finish_reason 'length', samtuner.stopped_by says why); one still queued is refused (503).",
    )
    max_queue: int = Field(
        64, ge=0, description="Requests waiting for a batch row at most; beyond, a 429 with Retry-After.",
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
        128.0, ge=0.0, description="Scratch memory of merged serving; target layers past it stay unmerged.",
    )
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Requests decoded together, one row each (a new request joins between steps).",
    )
    limits: ServingLimits = Field(default_factory=ServingLimits)
    max_rank: int = Field(256, ge=1, description="Adapters with a larger LoRA rank are refused.")
    ab_new_share: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Default A/B split: share of a user's requests answered by the newest version, the rest by "
        "the previous one (or the base model). ActivateAdapter(new_share=...) sets it per user.",
    )
    prefetch_window_s: float = Field(
        600.0, ge=0.0, description="A newly published adapter is loaded at once when its user asked within this window."
    )
    torch_threads: int | None = Field(
        None, ge=1,
        description="torch intra-op threads of the node (None = torch's default). Small models on shared CPUs "
        "answer much faster with 1.",
    )
    registrar_group_id: str = Field(
        "samtuner-registrar", description="Consumer group of the registrar (turns Activate/Deactivate into events)."
    )


class ConsoleSettings(Section):
    """The web console, served by the process that owns the store (README: 'The console')."""

    enabled: bool = Field(True, description="Serve the console (and its JSON API) where the store is owned.")
    host: str = Field("127.0.0.1", description="Bind address of the console's own server (samtuner streams).")
    port: int = Field(8100, ge=0, le=65535, description="Port of the console's own server (samtuner streams); "
                      "samtuner run serves it on inference.port instead.")
    admin_token_file: str | None = Field(
        None, description="File holding the admin token; actions that change anything need it. Never the token "
        "itself in this file.")
    admin_token_env: str = Field(
        "SAMTUNER_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the admin token (used when admin_token_file is not set).")
    open_reads_on_loopback: bool = Field(
        True, description="Read-only pages need no token from loopback clients; any other client needs it.")
    node_urls: tuple[str, ...] = Field(
        (), description="Inference nodes the console asks which adapters they hold, and for compare answers when "
        "no node runs in its process (e.g. http://127.0.0.1:8000).")
    page_size_max: int = Field(500, ge=1, le=10_000, description="Largest page of the pairs table.")
    bulk_max_pairs: int = Field(
        200_000, ge=1, description="A bulk action over more matching pairs than this is refused (narrow the filter).")


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
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _check(self) -> Config:
        dpo = self.training.dpo
        lt = dpo.get("loss_type")
        lw = dpo.get("loss_weights")
        if isinstance(lt, list) and isinstance(lw, list) and len(lt) != len(lw):
            raise ValueError(
                f"training.dpo.loss_weights has {len(lw)} entries but training.dpo.loss_type has {len(lt)}"
            )
        if self.model.max_new_tokens > self.inference.limits.max_tokens:
            raise ValueError(f"model.max_new_tokens ({self.model.max_new_tokens}) is above "
                             f"inference.limits.max_tokens ({self.inference.limits.max_tokens})")
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

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections replaced (validated again)."""
        data = self.model_dump()
        for name, values in sections.items():
            if isinstance(data.get(name), dict):
                data[name] = {**data[name], **values}
            else:
                data[name] = values
        return Config.model_validate(data)


def load_config(path: str | Path | None = None) -> Config:
    """Load ``samtuner.yaml``; no path and no file -> defaults. Errors name every bad key."""
    if path is None:
        env = os.environ.get("SAMTUNER_CONFIG")
        candidate = Path(env) if env else Path("samtuner.yaml")
        if not candidate.exists():
            if env:
                raise ConfigError(f"{candidate}: no such file (from SAMTUNER_CONFIG)")
            return Config()
        path = candidate
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw or {}, source=str(path))


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
            lines.append(f"unknown key '{loc}' (valid here: {', '.join(valid)})")
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
        problems.append("evaluation.enabled needs held-out pairs but training.holdout_fraction is 0: hold out a "
                        "share of the pairs, or turn the gate off")
    if ev.early_stopping_patience > 0 and cfg.training.holdout_fraction == 0.0:
        problems.append("evaluation.early_stopping_patience needs held-out pairs but training.holdout_fraction is 0")
    if ev.early_stopping_patience > 0 and cfg.training.checkpoint_steps == 0:
        problems.append("evaluation.early_stopping_patience keeps the best checkpoint, but training.checkpoint_steps "
                        "is 0 (no checkpoints): set checkpoint_steps or patience 0")
    for key in ("eval_strategy", "eval_steps", "load_best_model_at_end", "metric_for_best_model"):
        if key in dpo and ev.early_stopping_patience > 0:
            problems.append(f"training.dpo.{key} conflicts with evaluation.early_stopping_patience, which sets the "
                            "held-out evaluation itself: remove the key or set the patience to 0")
    return problems
