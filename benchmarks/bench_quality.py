"""``make bench-quality``: personalization measured on a real instruct model (SmolLM2-135M-Instruct, CPU).

For each style (benchmarks/quality_data.py: a closing line, a caveat) and seed, a user corrects the
base model's own greedy answers (on-policy) to ``--pairs`` factual prompts. The real trainer
(worker, training subprocess, held-out measurements, control answers) trains that user's adapter
with the shipped recipe (``auto`` settings; ``--set`` overrides any config key), and the gate's
decision is computed on the job's own figures. Then, on prompts the user never trained on (the
held-out pairs' prompts first, then prompts outside the user's pairs), greedy answers without and
with the adapter give:

* ``style_rate_before`` / ``style_rate_after``: the share of answers in the user's style;
* ``content_kept``: of the prompts the base model answers correctly (an answer mentions one of the
  prompt's reference answers; the references are fixed, so the check does not depend on the trained
  model), the share the adapter still answers correctly;
* from the job: ``control_unchanged`` (the gate's control set, scored against references),
  ``heldout_accuracy`` (per-token preference accuracy on held-out pairs that neither training nor
  the checkpoint choice saw; ``heldout_accuracy_summed`` beside it), ``train_s``, ``job_s`` (the
  whole job, as the worker sees it), ``eval_s``, ``gate_s`` and ``peak_rss_mb``.

``job_wall_ratio``: the whole job (load, train, validation evaluations, held-out and control
measurements, write, publish) of the first style and seed / a plain TRL script that loads, trains
and saves the same adapter on the same records with the same resolved settings
(benchmarks/plain_dpo.py), run right after it. ``job_wall_ratio_net`` leaves out ``eval_s`` and
``gate_s``, reported beside it. With ``--kto`` a thumbs-only user of the first style is trained
with KTO on unpaired labelled examples and measured the same way.

The base model's answers are cached (``~/.cache/samtuner/bench-quality``, keyed by the weights'
sha256). Progress goes to stderr; the last stdout line is one JSON object with the figures per
style and seed and the worst cases across them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality_data import STYLES, Prompt, Style, prompts  # noqa: E402
from infra.artifacts import ArtifactStore  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.events import Event, TrainingFailed, TrainingProgressed, TrainingRejected, TrainingSucceeded  # noqa: E402
from streams.decider.quality import similarity  # noqa: E402
from trainer import gate  # noqa: E402
from trainer.local import example_rows, local_request, pair_rows  # noqa: E402
from trainer.manifest import read_manifest  # noqa: E402
from trainer.worker import TrainerWorker  # noqa: E402

MODEL_NAME = "smollm2-135m-instruct"
ANSWER_TOKENS = 64  # the base model's answers: prompts whose answer does not end within this are left out
STYLE_TOKENS = 24  # room for the style on top of the answer when the adapter answers


def say(message: str) -> None:
    print(f"[bench-quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Recorder:
    """An in-memory EventPublisher (the trainer's events, without Kafka)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, topic: str, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, TrainingProgressed) and event.loss is not None:  # a job is minutes long: show it
            eta = f", about {event.eta_s:.0f}s left" if event.eta_s is not None else ""
            say(f"  training step {event.step}/{event.total_steps}, loss {event.loss:.3f}{eta}")

    def publish_raw(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def ensure_model(path: Path) -> Path:
    if (path / "config.json").exists():
        return path
    say(f"no model at {path}: samtuner model fetch {MODEL_NAME}")
    done = subprocess.run([sys.executable, "-m", "samtuner.cli", "model", "fetch", MODEL_NAME], cwd=ROOT, check=False)
    if done.returncode != 0 or not (path / "config.json").exists():
        raise SystemExit(
            f"bench-quality needs {MODEL_NAME} at {path}: `samtuner model fetch {MODEL_NAME}` failed "
            "(or pass --model DIR)"
        )
    return path


# -- the base model's answers (on-policy rejected answers), cached -------------------------------------


def base_answers(model_path: Path, pool: list[Prompt], threads: int) -> dict[str, dict[str, Any]]:
    """{question: {"answer", "finished"}} for every prompt, generated once per model and cached as it goes."""
    from infra.models import weights_sha256

    cache = default_cache_dir() / "bench-quality" / f"base-answers-{weights_sha256(str(model_path))[:16]}.json"
    known: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [p.question for p in pool if p.question not in known]
    if missing:
        say(f"the base model answers {len(missing)} prompts once (cached in {cache})")
        answerer = Answerer(model_path, None, threads)
        started = time.monotonic()
        for start in range(0, len(missing), Answerer.BATCH):
            for question, answer, finished in answerer.answer(missing[start : start + Answerer.BATCH], ANSWER_TOKENS):
                known[question] = {"answer": answer, "finished": finished}
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, indent=1, sort_keys=True))
            say(
                f"  answered {min(start + Answerer.BATCH, len(missing))}/{len(missing)} "
                f"({time.monotonic() - started:.0f}s)"
            )
    return known


class Answerer:
    """Greedy answers of the base model, or of the base model with an adapter, in batches."""

    BATCH = 12

    def __init__(self, model_path: Path, adapter: Path | None, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.eval()

    def answer(self, questions: list[str], max_new_tokens: int) -> list[tuple[str, str, bool]]:
        """(question, answer, whether it ended before max_new_tokens) for each question."""
        import torch

        tok = self.tokenizer
        texts = [
            tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in questions
        ]
        inputs = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            generated = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        width = inputs["input_ids"].shape[1]
        out = []
        for q, row in zip(questions, generated, strict=True):
            tail = row[width:].tolist()
            out.append((q, str(tok.decode(tail, skip_special_tokens=True)).strip(), tok.eos_token_id in tail))
        return out

    def answer_all(self, questions: list[str], max_new_tokens: int, label: str) -> list[tuple[str, str, bool]]:
        out: list[tuple[str, str, bool]] = []
        started = time.monotonic()
        for start in range(0, len(questions), self.BATCH):
            out += self.answer(questions[start : start + self.BATCH], max_new_tokens)
            say(f"  {label}: answered {len(out)}/{len(questions)} ({time.monotonic() - started:.0f}s)")
        return out


# -- one user -----------------------------------------------------------------------------------------


def user_data(
    style: Style,
    seed: int,
    usable: list[Prompt],
    answers: dict[str, dict[str, Any]],
    n_pairs: int,
    near_identical_at: float,
) -> tuple[list[dict[str, Any]], list[Prompt]]:
    """The user's pairs (on-policy: rejected = the base model's answer) and the prompts outside them."""
    rng = random.Random(1000 + seed)
    chosen = rng.sample(usable, n_pairs)
    outside = [p for p in usable if p not in chosen]
    triples = [
        (p.question, style.correct(answers[p.question]["answer"]), answers[p.question]["answer"]) for p in chosen
    ]
    rows = pair_rows(f"bench-{style.name}-{seed}", triples)
    for (
        row
    ) in rows:  # the decider's near-identical flag (streams/decider/quality.py), so the trainer sees what it would
        sim = similarity(row["chosen_response"], row["rejected_response"])
        row["metadata"] = {"near_identical": sim >= near_identical_at, "similarity": round(sim, 4)}
    return rows, outside


def run_job(
    cfg: Config,
    user: str,
    rows: list[dict[str, Any]],
    examples: list[dict[str, Any]] | None = None,
) -> tuple[Event, float]:
    recorder = Recorder()
    worker = TrainerWorker(cfg, recorder, worker_id="bench-quality")
    request = local_request(ArtifactStore(cfg.artifact_root), user, 1, rows, examples=examples or ())
    started = time.monotonic()
    worker.run_one(request)
    wall = time.monotonic() - started
    outcome = next(
        e for e in reversed(recorder.events) if isinstance(e, TrainingSucceeded | TrainingRejected | TrainingFailed)
    )
    if isinstance(outcome, TrainingFailed):
        raise RuntimeError(f"the job of {user} failed: {outcome.cause}")
    return outcome, wall


def measure(
    cfg: Config,
    label: str,
    style: Style,
    rows: list[dict[str, Any]],
    outside: list[Prompt],
    answers: dict[str, dict[str, Any]],
    n_unseen: int,
    threads: int,
    examples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train one user's adapter and measure it on prompts the user never trained on."""
    user = f"bench-{label}"
    say(f"{label}: training on {len(rows)} pairs / {len(examples or [])} labelled examples")
    outcome, wall = run_job(cfg, user, rows, examples)
    assert isinstance(outcome, TrainingSucceeded)  # the gate is evaluated below, from the job's own figures
    store = ArtifactStore(cfg.artifact_root)
    manifest = read_manifest(store, outcome.adapter_uri)
    metrics = manifest["metrics"]
    control = [
        gate.ControlAnswer(c["prompt"], c["before"], c["after"], c["base_correct"], c["adapter_correct"])
        for c in manifest["control"]
    ]
    decision = gate.decide(GATE_SETTINGS, metrics, manifest["baseline"]["metrics"], "the base model", control)

    by_question = {p.question: p for p in prompts()}
    held = [r["prompt"] for r in rows if str(r["pair_id"]) in set(manifest["pair_ids"]["heldout"])]
    if examples:
        held += [e["prompt"] for e in examples if str(e["example_id"]) in set(manifest["example_ids"]["heldout"])]
    unseen = [by_question[q] for q in held] + [p for p in outside if p.question not in held]
    unseen = unseen[:n_unseen]
    say(
        f"{label}: job {wall:.0f}s ({'published' if decision.publish else 'REJECTED: ' + decision.reason}); "
        f"answering {len(unseen)} unseen prompts with the adapter"
    )
    answerer = Answerer(Path(cfg.model.base), store.resolve(outcome.adapter_uri), threads)
    after = answerer.answer_all([p.question for p in unseen], ANSWER_TOKENS + STYLE_TOKENS, label)
    before = [answers[p.question]["answer"] for p in unseen]
    after_text = [a for _, a, _ in after]
    base_right = [gate.is_correct(b, p.references) for b, p in zip(before, unseen, strict=True)]
    kept = [gate.is_correct(a, p.references) for a, p, ok in zip(after_text, unseen, base_right, strict=True) if ok]
    result = {
        "style_rate_before": round(sum(map(style.has_style, before)) / len(before), 3),
        "style_rate_after": round(sum(map(style.has_style, after_text)) / len(after_text), 3),
        "content_kept": round(sum(kept) / len(kept), 3) if kept else None,
        "content_judged": len(kept),
        "control_unchanged": metrics["control_unchanged"],
        "control_base_correct": int(metrics["control_base_correct"]),
        "heldout_accuracy": metrics.get("heldout_policy_accuracy")
        if metrics.get("heldout_pairs")
        else metrics.get("heldout_label_accuracy"),
        "heldout_margin": metrics.get("heldout_policy_margin")
        if metrics.get("heldout_pairs")
        else metrics.get("heldout_label_margin"),
        "heldout_accuracy_summed": metrics.get("heldout_policy_accuracy_summed"),
        "heldout_pairs": int(metrics.get("heldout_pairs", 0)) or int(metrics.get("heldout_examples", 0)),
        "base_heldout_accuracy": manifest["baseline"]["metrics"].get("heldout_policy_accuracy"),
        "base_heldout_accuracy_summed": manifest["baseline"]["metrics"].get("heldout_policy_accuracy_summed"),
        "train_pairs": int(metrics["train_pairs"]),
        "validation_pairs": int(metrics["validation_pairs"]),
        "near_identical_pairs": sum(bool(r["metadata"]["near_identical"]) for r in rows),
        "steps": int(metrics["steps"]),
        "stopped_early": bool(metrics["stopped_early"]),
        "median_step_s": metrics["median_step_s"],
        "best_step": int(metrics.get("best_step", metrics["steps"])),
        "train_s": metrics["train_s"],
        "job_s": round(wall, 1),
        "eval_s": metrics["eval_s"],
        "gate_s": metrics["gate_s"],
        "load_s": metrics["load_s"],
        "peak_rss_mb": metrics["peak_rss_mb"],
        "control_broken": [{"prompt": c.prompt, "before": c.before, "after": c.after} for c in control if c.broken],
        "gate_publish": decision.publish,
        "gate_reasons": list(decision.reasons),
        "resolved": manifest["resolved_training"],
        "method": manifest.get("method", "dpo"),
        "examples": [
            {"prompt": p.question, "before": b, "after": a}
            for p, b, a in list(zip(unseen, before, after_text, strict=True))[:3]
        ],
    }
    say(
        f"{label}: style {result['style_rate_before']} -> {result['style_rate_after']}, content kept "
        f"{result['content_kept']} ({len(kept)} judged), controls {result['control_unchanged']}, held-out accuracy "
        f"{result['heldout_accuracy']} (summed {result['heldout_accuracy_summed']}), train {result['train_s']}s"
    )
    say(f"{label}: e.g. {result['examples'][0]}")
    return {**result, "_records": _records_for_plain(manifest, rows)}


def _records_for_plain(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from trainer.dataset import to_preference_records

    train_ids = set(manifest["pair_ids"]["train"])
    records = to_preference_records([r for r in rows if str(r["pair_id"]) in train_ids])
    return {
        "records": [{k: v for k, v in r.items() if k != "training_weight"} for r in records],
        "dpo": manifest["resolved_training"],
    }


def plain_wall(cfg: Config, plain: dict[str, Any], workdir: Path) -> dict[str, Any]:
    settings = {
        "model": cfg.model.base,
        "seed": cfg.training.seed,
        "lora": cfg.lora.model_dump(mode="json"),
        "dpo": plain["dpo"],
        "records": plain["records"],
        "save_to": str(workdir / "plain-adapter"),
    }
    path = workdir / "plain.json"
    path.write_text(json.dumps(settings))
    say("plain TRL script: load, train, save the same adapter on the same records")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plain_dpo.py"), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"the plain TRL script failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"plain TRL: {result['steps']} steps in {wall:.0f}s (median {result['median_step_s']:.2f}s/step)")
    return {"wall_s": round(wall, 1), **result}


def kto_data(
    style: Style, seed: int, usable: list[Prompt], answers: dict[str, dict[str, Any]], n_examples: int
) -> tuple[list[dict[str, Any]], list[Prompt]]:
    """A thumbs-only user: thumbs up on answers in their style, thumbs down on plain ones, never on the same
    prompt (unpaired)."""
    rng = random.Random(2000 + seed)
    chosen = rng.sample(usable, n_examples)
    outside = [p for p in usable if p not in chosen]
    labelled = [
        (
            p.question,
            style.correct(answers[p.question]["answer"]) if i % 2 == 0 else answers[p.question]["answer"],
            i % 2 == 0,
        )
        for i, p in enumerate(chosen)
    ]
    return example_rows(f"bench-kto-{style.name}-{seed}", labelled), outside


def bench_config(model: Path, state: Path, sets: list[str]) -> Config:
    raw: dict[str, Any] = {
        "state_dir": str(state),
        "model": {"base": str(model)},
        "evaluation": {"enabled": False},  # the bench applies the gate itself (GATE_SETTINGS)
        "training": {"dpo": dict(Config().training.dpo)},
    }  # overrides go over the recipe
    for item in sets:
        key, _, value = item.partition("=")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(value)
    return Config.model_validate(raw)


GATE_SETTINGS = Config().evaluation  # the shipped gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_cache_dir() / "models" / MODEL_NAME)
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pairs", type=int, default=64, help="pairs per user (the default trigger)")
    parser.add_argument("--unseen", type=int, default=24, help="unseen prompts answered per user")
    parser.add_argument("--kto", action="store_true", help="also a thumbs-only user trained with KTO")
    parser.add_argument("--no-ratio", action="store_true", help="skip the plain TRL run (job_wall_ratio)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SAMTUNER_BENCH_THREADS", "2")))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a config override, e.g. training.dpo.learning_rate=0.001",
    )
    args = parser.parse_args()
    started = time.monotonic()
    model = ensure_model(args.model)
    pool = prompts()
    answers = base_answers(model, pool, args.threads)
    usable = [p for p in pool if answers[p.question]["finished"]]
    say(f"{len(usable)}/{len(pool)} prompts have a complete base answer within {ANSWER_TOKENS} tokens")
    styles = [STYLES[s] for s in args.styles.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, dict[str, Any]] = {}
    ratio: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = Path(tmp)
        for style in styles:
            for seed in seeds:
                label = f"{style.name}-{seed}"
                cfg = bench_config(model, work / label, [f"training.seed={seed}", *args.set])
                rows, outside = user_data(
                    style, seed, usable, answers, args.pairs, cfg.quality.near_identical_similarity
                )
                result = measure(cfg, label, style, rows, outside, answers, args.unseen, args.threads)
                plain = result.pop("_records")
                runs[label] = result
                if not ratio and not args.no_ratio:
                    p = plain_wall(cfg, plain, work)
                    ratio = {
                        "job_wall_ratio": round(result["job_s"] / p["wall_s"], 3),
                        "job_wall_ratio_net": round(
                            (result["job_s"] - result["eval_s"] - result["gate_s"]) / p["wall_s"], 3
                        ),
                        "job_wall_s": result["job_s"],
                        "plain_wall_s": p["wall_s"],
                        "eval_s": result["eval_s"],
                        "gate_s": result["gate_s"],
                        "step_time_ratio": round(result["median_step_s"] / p["median_step_s"], 3)
                        if p["median_step_s"]
                        else None,
                        "ratio_of": label,
                    }
                    say(
                        f"job_wall_ratio {ratio['job_wall_ratio']} (net of eval and gate {ratio['job_wall_ratio_net']})"
                    )
        kto: dict[str, Any] = {}
        if args.kto:
            style, seed = styles[0], seeds[0]
            cfg = bench_config(model, work / "kto", [f"training.seed={seed}", 'training.method="kto"', *args.set])
            examples, outside = kto_data(style, seed, usable, answers, args.pairs)
            result = measure(
                cfg,
                f"kto-{style.name}-{seed}",
                style,
                [],
                outside,
                answers,
                args.unseen,
                args.threads,
                examples=examples,
            )
            result.pop("_records")
            kto = {f"kto-{style.name}-{seed}": result}

    def worst(key: str, pick: Any) -> Any:
        values = [r[key] for r in runs.values() if r.get(key) is not None]
        return pick(values) if values else None

    summary = {
        "model": MODEL_NAME,
        "pairs_per_user": args.pairs,
        "overrides": args.set,
        "style_rate_before_max": worst("style_rate_before", max),
        "style_rate_after_min": worst("style_rate_after", min),
        "content_kept_min": worst("content_kept", min),
        "control_unchanged_min": worst("control_unchanged", min),
        "heldout_accuracy_min": worst("heldout_accuracy", min),
        "train_s_max": worst("train_s", max),
        "job_s_max": worst("job_s", max),
        "peak_rss_mb_max": worst("peak_rss_mb", max),
        "gate_published": sum(r["gate_publish"] for r in runs.values()),
        "runs": len(runs),
        **ratio,
        "train_s_median": round(statistics.median(r["train_s"] for r in runs.values()), 1) if runs else None,
        "per_run": runs,
        **({"kto": kto} if kto else {}),
        "bench_seconds": round(time.monotonic() - started, 1),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
