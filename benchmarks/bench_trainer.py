"""``make bench-trainer``: the trainer's figures on CPU, with the demo model (and the tiny one).

A user with a distinct style (every answer signs off with "Hope this helps!") has 80 pairs: the
job trains on 64 and holds 16 out (unseen prompts). Jobs run through the real trainer (worker, job
subprocess, gate, publication) with an in-memory publisher instead of Kafka. Progress goes to
stderr; the last stdout line is one JSON object:

* ``step_time_ratio``: median time per optimizer step of our job / of a plain TRL ``DPOTrainer``
  script (benchmarks/plain_dpo.py) on the same model, records and resolved settings, measured in
  this run: the median over rounds of the ratio of a job and a plain run made back to back (their
  order alternating); ``step_time_ratio_tiny`` for the tiny model.
* ``heldout_pref_accuracy``: on the 16 held-out pairs, DPO's implicit reward (vs the base model)
  prefers the chosen answer; ``heldout_policy_accuracy``: the adapter itself finds the chosen answer
  more likely (what the gate compares; see trainer/evaluate.py).
* ``style_rate_before`` / ``style_rate_after``: share of greedy answers to prompts the user never
  trained on (the held-out ones and more) that end with the sign-off, without / with the adapter;
  ``content_kept_after``: share of those answers that still start with the fact's answer.
* ``control_unchanged``: share of the gate's control prompts whose answer keeps its meaning (see
  trainer/gate.py: the new answer holds >= 80% of the content words of the base model's answer).
* ``gate_blocks_worse``: an adapter trained on shuffled labels (chosen/rejected swapped on a random
  half of the training pairs, by ``trainer.fault_injection``) is rejected against the user's good
  adapter; ``gate_blocks_worse_vs_base``: the same for a user who has no adapter yet.
* ``peak_rss_mb``: peak resident memory of the training subprocess of the good job.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.artifacts import ArtifactStore  # noqa: E402
from infra.demo_model import build_model  # noqa: E402
from infra.demo_model.corpus import SIGN_OFF, Fact, facts  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.events import Event, TrainingFailed, TrainingRejected, TrainingSucceeded  # noqa: E402
from trainer.dataset import is_held_out, to_preference_records  # noqa: E402
from trainer.local import local_request, pair_rows  # noqa: E402
from trainer.manifest import read_manifest  # noqa: E402
from trainer.worker import TrainerWorker  # noqa: E402

TRAIN_PAIRS, HELD_PAIRS = 64, 16


def say(message: str) -> None:
    print(f"[bench-trainer] {message}", file=sys.stderr, flush=True)


class Recorder:
    """An in-memory EventPublisher: the bench reads the job's events from it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, topic: str, event: Event) -> None:
        self.events.append(event)

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        pass

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def style_data(user: str, fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[Fact]]:
    """80 pairs (64 on the training side of the split, 16 held out) and the facts never trained on."""
    pool = [f for f in facts() if f.family != "sum"]  # sums are the gate's control prompts
    random.Random(11).shuffle(pool)
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    unseen: list[Fact] = []
    for fact in pool:
        (row,) = pair_rows(user, [(fact.question, f"{fact.answer} {SIGN_OFF}", fact.answer)])
        side = held if is_held_out(row["pair_id"], fraction, seed) else train
        if len(side) < (HELD_PAIRS if side is held else TRAIN_PAIRS):
            side.append(row)
            if side is held:
                unseen.append(fact)
        else:
            unseen.append(fact)
    if len(train) < TRAIN_PAIRS or len(held) < HELD_PAIRS:
        raise RuntimeError(f"the corpus gave {len(train)} training and {len(held)} held-out pairs")
    return train + held, unseen


def run_job(
    cfg: Config, user: str, generation: int, rows: list[dict[str, Any]], history: Sequence[Event] = ()
) -> tuple[Event, list[Event]]:
    recorder = Recorder()
    worker = TrainerWorker(cfg, recorder, worker_id="bench")
    worker.fold(history)
    request = local_request(ArtifactStore(cfg.artifact_root), user, generation, rows)
    started = time.monotonic()
    worker.run_one(request)
    outcome = next(
        e for e in reversed(recorder.events) if isinstance(e, TrainingSucceeded | TrainingRejected | TrainingFailed)
    )
    say(
        f"{user} v{generation}: {type(outcome).__name__} in {time.monotonic() - started:.0f}s "
        f"{getattr(outcome, 'reason', '') or getattr(outcome, 'cause', '')}"
    )
    if isinstance(outcome, TrainingFailed):
        raise RuntimeError(f"the job failed: {outcome.cause}")
    return outcome, [request, *recorder.events]


def plain_step_time(cfg: Config, manifest: dict[str, Any], rows: list[dict[str, Any]], workdir: Path) -> float:
    train_ids = set(manifest["pair_ids"]["train"])
    settings = {
        "model": cfg.model.base,
        "seed": cfg.training.seed,
        "lora": cfg.lora.model_dump(mode="json"),
        "dpo": manifest["resolved_training"],
        "records": to_preference_records([r for r in rows if str(r["pair_id"]) in train_ids]),
    }
    path = workdir / f"plain-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(settings))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plain_dpo.py"), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the plain TRL script failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"plain TRL: {result['steps']} steps, median {result['median_step_s'] * 1000:.1f} ms/step")
    return float(result["median_step_s"])


def step_time_ratio(
    cfg: Config, first: Event, rows: list[dict[str, Any]], rounds: int, workdir: Path, label: str
) -> tuple[float, list[float], list[float]]:
    """Median over rounds of (ours / plain), each round a fresh job and a plain run back to back, the order
    alternating (ours first, then plain first, ...) so that a machine getting busier or quieter evens out."""
    assert isinstance(first, TrainingSucceeded)
    manifest = read_manifest(ArtifactStore(cfg.artifact_root), first.adapter_uri)
    ours: list[float] = []
    plain: list[float] = []

    def run_ours(n: int) -> None:
        outcome, _ = run_job(cfg, f"{label}-timing-{n}", 1, rows)
        assert isinstance(outcome, TrainingSucceeded)
        ours.append(outcome.metrics["median_step_s"])

    for n in range(rounds):
        if n % 2 == 0:
            run_ours(n)
            plain.append(plain_step_time(cfg, manifest, rows, workdir))
        else:
            plain.append(plain_step_time(cfg, manifest, rows, workdir))
            run_ours(n)
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    say(
        f"{label}: ours {[round(x * 1000, 1) for x in ours]} ms/step, plain {[round(x * 1000, 1) for x in plain]}, "
        f"ratios {[round(r, 3) for r in ratios]}"
    )
    return statistics.median(ratios), ours, plain


def style_rates(cfg: Config, adapter_uri: str, unseen: list[Fact]) -> tuple[float, float, float, list[dict[str, str]]]:
    """(before, after, content kept after, examples): greedy answers with the adapter off and on."""
    from peft import PeftModel

    from infra.models import load_base_model, load_tokenizer
    from trainer.evaluate import generate_answers

    tokenizer = load_tokenizer(cfg.model.base)
    model = PeftModel.from_pretrained(
        load_base_model(cfg.model, cfg.quantization), str(ArtifactStore(cfg.artifact_root).resolve(adapter_uri))
    )
    model.eval()
    prompts = [f.question for f in unseen]
    after = generate_answers(model, tokenizer, prompts, cfg.model.max_new_tokens)
    with model.disable_adapter():
        before = generate_answers(model, tokenizer, prompts, cfg.model.max_new_tokens)
    styled = lambda text: text.strip().endswith(SIGN_OFF)  # noqa: E731
    kept = sum(a.strip().startswith(f.answer) for a, f in zip(after, unseen, strict=True))
    examples = [
        {"prompt": p, "before": b, "after": a} for p, b, a in list(zip(prompts, before, after, strict=True))[:4]
    ]
    return (sum(map(styled, before)) / len(before), sum(map(styled, after)) / len(after), kept / len(after), examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per model: (ours, plain) pairs")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    demo_path = default_cache_dir() / "models" / "demo-chat"
    say(f"demo model at {demo_path} (built once, then cached)")
    build_model(demo_path, "demo-chat")
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        work = Path(tmp)
        cfg = Config.model_validate({"state_dir": str(work / "demo"), "model": {"base": str(demo_path)}})
        rows, unseen = style_data("bench-user", cfg.training.holdout_fraction, cfg.training.seed)
        say(f"{len(rows)} pairs ({TRAIN_PAIRS} to train on, {HELD_PAIRS} held out); {len(unseen)} unseen prompts")

        good = run_job(cfg, "bench-user", 1, rows)
        outcome = good[0]
        if not isinstance(outcome, TrainingSucceeded):
            raise RuntimeError(f"the good adapter was not published: {getattr(outcome, 'reason', outcome)}")
        metrics = outcome.metrics
        before, after, content, examples = style_rates(cfg, outcome.adapter_uri, unseen)
        say(f"style before {before:.2f}, after {after:.2f}, content kept {content:.2f}; e.g. {examples[0]}")

        bad_cfg = cfg.with_overrides(trainer={"fault_injection": {"shuffle_train_labels": True}})
        worse, _ = run_job(bad_cfg, "bench-user", 2, rows, history=good[1])
        worse_vs_base, _ = run_job(bad_cfg, "bench-fresh-user", 1, rows)

        ratio, ours, plain = step_time_ratio(cfg, outcome, rows, args.rounds, work, "demo")
        tiny: dict[str, Any] = {}
        if not args.skip_tiny:
            tiny_path = build_model(default_cache_dir() / "models" / "tiny", "tiny")
            tiny_cfg = Config.model_validate(
                {"state_dir": str(work / "tiny"), "model": {"base": str(tiny_path)}, "evaluation": {"enabled": False}}
            )
            first, _ = run_job(tiny_cfg, "bench-user", 1, rows)
            tiny_ratio, tiny_ours, tiny_plain = step_time_ratio(tiny_cfg, first, rows, args.rounds, work, "tiny")
            tiny = {
                "step_time_ratio_tiny": round(tiny_ratio, 3),
                "step_ms_tiny": {
                    "ours": [round(x * 1000, 1) for x in tiny_ours],
                    "plain": [round(x * 1000, 1) for x in tiny_plain],
                },
            }

    result = {
        "step_time_ratio": round(ratio, 3),
        **{k: v for k, v in tiny.items() if k == "step_time_ratio_tiny"},
        "heldout_pref_accuracy": metrics["heldout_pref_accuracy"],
        "heldout_policy_accuracy": metrics["heldout_policy_accuracy"],
        "heldout_pairs": int(metrics["heldout_pairs"]),
        "train_pairs": int(metrics["train_pairs"]),
        "style_rate_before": round(before, 3),
        "style_rate_after": round(after, 3),
        "content_kept_after": round(content, 3),
        "unseen_prompts": len(unseen),
        "control_unchanged": metrics["control_unchanged"],
        "gate_blocks_worse": isinstance(worse, TrainingRejected),
        "gate_blocks_worse_vs_base": isinstance(worse_vs_base, TrainingRejected),
        "worse_heldout_policy_accuracy": _accuracy(worse),
        "worse_vs_base_heldout_policy_accuracy": _accuracy(worse_vs_base),
        "peak_rss_mb": metrics["peak_rss_mb"],
        "steps": int(metrics["steps"]),
        "stopped_early": bool(metrics["stopped_early"]),
        "step_ms": {"ours": [round(x * 1000, 1) for x in ours], "plain": [round(x * 1000, 1) for x in plain]},
        **{k: v for k, v in tiny.items() if k != "step_time_ratio_tiny"},
        "qlora_4bit": "not run: no GPU in this session",
        "examples": examples,
        "bench_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))


def _accuracy(event: Event) -> float | None:
    metrics = getattr(event, "metrics", {}) or {}
    value = metrics.get("heldout_policy_accuracy")
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
