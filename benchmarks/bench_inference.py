"""``make bench-inference``: serving on the real model (SmolLM2-135M-Instruct, fetched once), merged and unmerged:
adapter switching, cold loads, publish-to-served through a real broker, LoRA overhead, throughput and time to
first token for 1 and 8 concurrent users on 8 adapters, memory with 10,000 users and 64 cached adapters,
cache policies against Belady's optimum, fallbacks on broken adapters.

``--model tiny`` is the quick run on the small locally built model. Progress goes to stderr; the last stdout
line is one JSON object. Timings come from a shared machine: ratios are taken within one run from interleaved
measurements (medians of the per-round ratios), and the load average at the start and the end is reported.
Percentiles are interpolated (numpy's default), with the max beside them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks.*

from benchmarks.stats import percentile
from inference.base import configure_torch, load_served_base
from inference.cache_sim import belady_hit_rate, independent_zipf, replay, session_zipf, static_top_hit_rate
from inference.follow import RegistryFollower
from inference.node import InferenceNode
from inference.policies import LRUPolicy, WTinyLFUPolicy
from inference.response import PersonalizedResponse
from infra.artifacts import ArtifactStore
from infra.broker import Broker, free_port
from infra.demo_model import build_model
from infra.demo_model.adapter import FAULTS, build_adapter, make_faulty
from infra.kafka import KafkaEventPublisher
from infra.topics import ensure_topics
from schemas.config import Config, InferenceSettings, default_cache_dir
from schemas.events import AdapterPublished
from schemas.topics import Topics

REAL_MODEL = "smollm2-135m-instruct"
PROMPT = "What is the capital of Peru?"
PROMPTS = [
    "What is the capital of Peru?",
    "Name three primary colours.",
    "What is 12 times 7?",
    "Why is the sky blue?",
    "Give me a synonym for happy.",
    "What is the boiling point of water?",
    "Who wrote Hamlet?",
    "How many legs does a spider have?",
]
MODES = ("merged", "unmerged")
DEFAULT_MODE = InferenceSettings.model_fields["lora_serving"].default


def say(message: str) -> None:
    print(f"[bench-inference] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spread(values: list[float], name: str, suffix: str = "", digits: int = 1) -> dict[str, float]:
    """``{name}_p50{suffix}``, ``_p99``, ``_max`` and ``_n`` (the number of samples)."""
    return {
        f"{name}_p50{suffix}": round(percentile(values, 50), digits),
        f"{name}_p99{suffix}": round(percentile(values, 99), digits),
        f"{name}_max{suffix}": round(max(values), digits),
        f"{name}_n{suffix}": len(values),
    }


class Bench:
    def __init__(self, workdir: Path, base: Path, real: bool, threads: int) -> None:
        self.workdir = workdir
        self.base = base
        self.real = real
        self.threads = threads
        # The trainer's adapters: r16, alpha 32, q/k/v/o. Weak enough to keep the real model's answers readable.
        self.rank, self.alpha, self.strength = (16, 32.0, 0.05) if real else (8, 16.0, 0.2)
        self.scale = 1 if real else 4  # the tiny model is fast: more rounds in the same time

    def config(self, name: str, **inference: Any) -> Config:
        return Config.model_validate(
            {
                "state_dir": str(self.workdir / "state"),
                "model": {"base": str(self.base), "max_new_tokens": 8},
                "inference": {"node_id": name, "torch_threads": self.threads, **inference},
            }
        )

    def node(self, name: str, publisher: Any = None, **inference: Any) -> InferenceNode:
        cfg = self.config(name, **inference)
        configure_torch(cfg)
        return InferenceNode(cfg, publisher, load_served_base(cfg))

    def adapter(self, node: InferenceNode, user: str, version: int, seed: int | None = None) -> AdapterPublished:
        store = ArtifactStore(node.cfg.artifact_root)
        return build_adapter(
            store,
            str(self.base),
            node.runtime.model,
            user,
            version,
            seed=seed if seed is not None else zlib.crc32(f"{user}/{version}".encode()),
            rank=self.rank,
            alpha=self.alpha,
            strength=self.strength,
            base_sha256=node.base_sha256,
        )


# -- switching, cold loads, overhead --------------------------------------------------------------


def measure_switch(bench: Bench, mode: str) -> dict[str, float]:
    """Two cached users alternating, one request at a time: arrival to the adapter bound, and the bind alone."""
    rounds = 40 * bench.scale
    node = bench.node(f"switch-{mode}", lora_serving=mode)
    try:
        for user in ("alice", "bob"):
            node.apply(bench.adapter(node, user, 1))
            node.generate_personalized_response(PROMPT, user, max_new_tokens=1)  # cached now
        switches = []
        for i in range(rounds):
            answer = node.generate_personalized_response(PROMPT, ("alice", "bob")[i % 2], max_new_tokens=1)
            assert answer.adapter_version == 1
            switches.append(answer.switch_ms)
        alice, bob = node.cache.lookup(("alice", 1)), node.cache.lookup(("bob", 1))
        assert alice is not None and bob is not None
        binds, joins = [], []
        runtime = node.runtime
        others = [alice.value] * 7
        for i in range(rounds * 5):
            started = time.perf_counter()
            runtime.bind((alice, bob)[i % 2].value)
            binds.append((time.perf_counter() - started) * 1000)
        for i in range(rounds * 5):  # a batch of 7 rows of alice; the 8th row's user changes
            started = time.perf_counter()
            runtime.bind_rows([*others, (bob.value, None)[i % 2]])
            joins.append((time.perf_counter() - started) * 1000)
        runtime.bind(None)
        alice.release()
        bob.release()
        return {
            "switch_ms": statistics.median(switches),
            "bind_ms": statistics.median(binds),
            "row_bind_ms": statistics.median(joins[1:]),
        }
    finally:
        node.close()


def measure_peft_set_adapter(bench: Bench, rounds: int = 200) -> float:
    """The reference: PEFT's set_adapter between two loaded adapters on the same base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    node = bench.node("peft-reference")
    try:
        a, b = bench.adapter(node, "peft-a", 1), bench.adapter(node, "peft-b", 1)
        store = ArtifactStore(node.cfg.artifact_root)
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(bench.base)), str(store.resolve(a.uri)), adapter_name="a"
        )
        model.load_adapter(str(store.resolve(b.uri)), adapter_name="b")
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            model.set_adapter(("a", "b")[i % 2])
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        node.close()


def measure_cold_load(bench: Bench, n: int = 20) -> float:
    node = bench.node("cold-load")
    try:
        events = [bench.adapter(node, f"cold-{i}", 1) for i in range(n)]
        times = []
        for event in events:
            ref = node.registry.apply(event).after.latest  # type: ignore[union-attr]
            started = time.perf_counter()
            node.loader.load(event.user_id, ref)  # type: ignore[arg-type]
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        node.close()


def measure_overhead(bench: Bench, mode: str, tokens: int = 64) -> dict[str, float]:
    """One request at a time, ``tokens`` tokens each: with an adapter / the base model, interleaved; the whole
    request (prefill, the bind or merge, decode) is timed."""
    rounds = 6 * bench.scale
    node = bench.node(f"overhead-{mode}", lora_serving=mode)
    try:
        node.apply(bench.adapter(node, "alice", 1))

        def generate(user: str | None) -> float:
            answer = node.generate_personalized_response(PROMPT, user, min_new_tokens=tokens, max_new_tokens=tokens)
            assert answer.completion_tokens == tokens and (answer.adapter_version == 1) == (user is not None)
            return answer.latency_ms

        for _ in range(2):
            generate(None)
            generate("alice")
        ratios, base_ms, adapter_ms = [], [], []
        for i in range(rounds):
            if i % 2:  # alternate which goes first, so a trend in the machine's load cancels out
                b, a = generate(None), generate("alice")
            else:
                a, b = generate("alice"), generate(None)
            ratios.append(a / b)
            base_ms.append(b)
            adapter_ms.append(a)
        return {
            "ratio": statistics.median(ratios),
            "base_ms": statistics.median(base_ms),
            "adapter_ms": statistics.median(adapter_ms),
        }
    finally:
        node.close()


# -- many users at once ---------------------------------------------------------------------------


def measure_throughput(bench: Bench, rounds: int = 3, tokens: int = 32) -> dict[str, Any]:
    """8 users on 8 different adapters, ``tokens`` tokens each: one at a time vs all 8 at once (8 threads), the
    same requests, rounds interleaved; and 8 base-model requests at once (the cost of per-row adapters)."""
    users = [f"user-{i}" for i in range(8)]
    node = bench.node("throughput", max_batch_size=8)
    try:
        for user in users:
            node.apply(bench.adapter(node, user, 1))
            node.generate_personalized_response(PROMPT, user, max_new_tokens=1)  # loaded and cached

        def ask(user: str | None, prompt: str) -> PersonalizedResponse:
            answer = node.generate_personalized_response(prompt, user, min_new_tokens=tokens, max_new_tokens=tokens)
            assert answer.completion_tokens == tokens
            return answer

        def at_once(who: list[str | None]) -> tuple[float, list[PersonalizedResponse]]:
            barrier = threading.Barrier(len(who) + 1)
            answers: list[PersonalizedResponse | None] = [None] * len(who)

            def client(i: int) -> None:
                barrier.wait()
                answers[i] = ask(who[i], PROMPTS[i])

            threads = [threading.Thread(target=client, args=(i,)) for i in range(len(who))]
            for t in threads:
                t.start()
            barrier.wait()
            started = time.perf_counter()
            for t in threads:
                t.join()
            return time.perf_counter() - started, [a for a in answers if a is not None]

        def one_at_a_time() -> tuple[float, list[PersonalizedResponse]]:
            started = time.perf_counter()
            answers = [ask(user, PROMPTS[i]) for i, user in enumerate(users)]
            return time.perf_counter() - started, answers

        steps_before = node.scheduler.stats()
        seq_s, batch_s, base_s, speedups, lora_costs = [], [], [], [], []
        ttft_1, ttft_8 = [], []
        for r in range(rounds):
            say(f"  round {r + 1}/{rounds}: 8 requests one at a time, 8 at once, 8 base-model requests at once")
            s, alone = one_at_a_time()
            b, together = at_once(list(users))
            z, _ = at_once([None] * 8)
            seq_s.append(s)
            batch_s.append(b)
            base_s.append(z)
            speedups.append(s / b)
            lora_costs.append(b / z)
            ttft_1 += [a.ttft_ms for a in alone]
            ttft_8 += [a.ttft_ms for a in together]
            assert [a.adapter_version for a in together] == [1] * 8
        after = node.scheduler.stats()
        total = tokens * len(users)
        return {
            "tokens_per_s_1_user": round(total / statistics.median(seq_s), 2),
            "tokens_per_s_8_users": round(total / statistics.median(batch_s), 2),
            "batch_speedup": round(statistics.median(speedups), 3),
            "batch_speedup_runs": [round(x, 3) for x in speedups],
            "batch_lora_overhead_ratio": round(statistics.median(lora_costs), 4),
            "batch_lora_overhead_runs": [round(x, 3) for x in lora_costs],
            "mean_rows_per_step": round(
                (after.rows_stepped - steps_before.rows_stepped) / max(after.steps - steps_before.steps, 1), 2
            ),
            **spread(ttft_1, "ttft_ms", "_1_user"),
            **spread(ttft_8, "ttft_ms", "_8_users"),
            "throughput_tokens_per_answer": tokens,
        }
    finally:
        node.close()


def measure_row_adapters(bench: Bench, rounds: int = 12) -> dict[str, float]:
    """One decode step of 8 rows on 8 different adapters: our gathered per-row slots vs PEFT's mixed batch
    (``adapter_names``, which groups the rows by adapter in every layer), against the base model; interleaved,
    the KV cache of a 48-token prompt per row. The design choice of :mod:`inference.lora` rests on this."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, DynamicCache

    node = bench.node("row-adapters", lora_serving="unmerged", max_batch_size=8)
    try:
        events = [bench.adapter(node, f"row-{i}", 1) for i in range(8)]
        weights = []
        for event in events:
            ref = node.registry.apply(event).after.latest  # type: ignore[union-attr]
            weights.append(node.loader.load(event.user_id, ref))  # type: ignore[arg-type]
        store = ArtifactStore(node.cfg.artifact_root)
        peft = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(bench.base)), str(store.resolve(events[0].uri)), adapter_name="a0"
        ).eval()
        for i, event in enumerate(events[1:], start=1):
            peft.load_adapter(str(store.resolve(event.uri)), adapter_name=f"a{i}")
        names = [f"a{i}" for i in range(8)]
        model: Any = node.runtime.model
        gen = torch.Generator().manual_seed(0)
        vocab = int(model.config.vocab_size)
        with torch.no_grad():
            prompt = model(input_ids=torch.randint(0, vocab, (8, 48), generator=gen), use_cache=True).past_key_values
        ids = torch.randint(0, vocab, (8, 1), generator=gen)

        def step(m: Any, **kw: Any) -> tuple[float, torch.Tensor]:
            cache = DynamicCache(
                ddp_cache_data=[(layer.keys, layer.values) for layer in prompt.layers], config=model.config
            )
            started = time.perf_counter()
            with torch.no_grad():
                logits = m(input_ids=ids, past_key_values=cache, use_cache=True, **kw).logits
            return (time.perf_counter() - started) * 1000, logits

        node.runtime.bind(None)
        _, plain = step(model)
        node.runtime.bind_rows(weights)
        _, ours = step(model)
        _, theirs = step(peft, adapter_names=names)
        agree, moved = float((ours - theirs).abs().max()), float((ours - plain).abs().max())
        assert moved > 100 * agree, "the adapters change the logits far more than ours and PEFT's differ"
        base, gathered, grouped = [], [], []
        for _ in range(rounds):
            node.runtime.bind(None)
            base.append(step(model)[0])
            node.runtime.bind_rows(weights)
            gathered.append(step(model)[0])
            grouped.append(step(peft, adapter_names=names)[0])
        node.runtime.bind(None)
        return {
            "step_ms_8_rows_base": round(statistics.median(base), 2),
            "step_ms_8_rows_gathered": round(statistics.median(gathered), 2),
            "step_ms_8_rows_peft_adapter_names": round(statistics.median(grouped), 2),
            "gathered_vs_base": round(statistics.median(g / b for g, b in zip(gathered, base, strict=True)), 4),
            "peft_adapter_names_vs_base": round(
                statistics.median(p / b for p, b in zip(grouped, base, strict=True)), 4
            ),
            "gathered_vs_peft_max_logit_diff": float(f"{agree:.3g}"),
            "gathered_vs_base_max_logit_diff": float(f"{moved:.3g}"),
        }
    finally:
        node.close()


# -- publish to served, through the broker --------------------------------------------------------


def watch_pointer(node: InferenceNode, user: str, version: int, stop: threading.Event, out: list[float]) -> None:
    """Record when ``user``'s pointer flips to ``version`` (loaded, validated, active on the node)."""
    while not stop.is_set():
        if node.cache.active(user) == (user, version):
            out.append(time.perf_counter())
            return
        time.sleep(0.001)


def measure_publish_to_served(bench: Bench, broker: Broker, mode: str, trials: int) -> dict[str, float]:
    stop = threading.Event()
    node: InferenceNode | None = None
    publisher: KafkaEventPublisher | None = None
    thread = None
    try:
        cfg = bench.config(f"publish-to-served-{mode}", lora_serving=mode).with_overrides(
            kafka={
                "bootstrap_servers": broker.bootstrap,
                "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
                "partitions": 3,
            }
        )
        ensure_topics(cfg.kafka)
        topic = Topics(cfg.kafka.topic_prefix).adapters
        publisher = KafkaEventPublisher(broker.bootstrap, client_id="bench-trainer")
        configure_torch(cfg)
        node = InferenceNode(cfg, KafkaEventPublisher(broker.bootstrap, client_id="bench-node"), load_served_base(cfg))
        follower = RegistryFollower(cfg, node)
        thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
        thread.start()
        if not follower.ready.wait(60):
            raise RuntimeError("the node did not read the registry within 60 s")
        first = bench.adapter(node, "alice", 1)
        publisher.publish(topic, first)
        publisher.flush()
        latencies, activations = [], []
        for version in range(2, trials + 2):
            event = bench.adapter(node, "alice", version)  # files written first, as the trainer does
            flipped: list[float] = []
            watching = threading.Event()
            watcher = threading.Thread(
                target=watch_pointer, args=(node, "alice", version, watching, flipped), daemon=True
            )
            watcher.start()
            produced = time.perf_counter()
            publisher.publish(topic, event)
            while True:
                answer = node.generate_personalized_response(PROMPT, "alice", max_new_tokens=1)
                if answer.adapter_version == version:
                    latencies.append((time.perf_counter() - produced) * 1000)
                    break
                if time.perf_counter() - produced > 30:
                    raise RuntimeError(f"version {version} was not served within 30 s")
            watching.set()
            watcher.join(timeout=5)
            if flipped:
                activations.append((flipped[0] - produced) * 1000)
            time.sleep(0.05)
        publisher.flush()
        return {**spread(latencies, "publish_to_served_ms"), **spread(activations, "publish_to_active_ms")}
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
        if node is not None:
            node.close()
        node = publisher = None  # the Kafka clients go before the broker does
        gc.collect()


# -- cache policies against the optimum -----------------------------------------------------------


def measure_hit_rates(capacity: int = 64, users: int = 10_000, requests: int = 100_000) -> dict[str, Any]:
    traces = {
        "independent": independent_zipf(requests, users, s=1.0, seed=0),
        "session": session_zipf(requests, users, s=1.0, mean_burst=8, concurrent=16, seed=0),
    }
    out: dict[str, dict[str, float]] = {
        "hit_rate": {},
        "hit_rate_vs_optimal": {},
        "optimal_hit_rate": {},
        "lru_hit_rate": {},
        "lru_vs_optimal": {},
        "static_top_hit_rate": {},
        "static_top_vs_optimal": {},
    }
    for name, trace in traces.items():
        optimum = belady_hit_rate(trace, capacity)
        ours = replay(trace, capacity, WTinyLFUPolicy(capacity))
        lru = replay(trace, capacity, LRUPolicy())
        static = static_top_hit_rate(trace, capacity)
        out["hit_rate"][name] = round(ours, 4)
        out["hit_rate_vs_optimal"][name] = round(ours / optimum, 4)
        out["optimal_hit_rate"][name] = round(optimum, 4)
        out["lru_hit_rate"][name] = round(lru, 4)
        out["lru_vs_optimal"][name] = round(lru / optimum, 4)
        out["static_top_hit_rate"][name] = round(static, 4)
        out["static_top_vs_optimal"][name] = round(static / optimum, 4)
        say(
            f"{name}: optimum {optimum:.4f}, wtinylfu {ours / optimum:.3f}, lru {lru / optimum:.3f}, "
            f"static top-{capacity} {static / optimum:.3f} of optimum"
        )
    return out


# -- fallbacks ------------------------------------------------------------------------------------


def measure_fallbacks(bench: Bench) -> dict[str, Any]:
    node = bench.node("fallbacks")
    store = ArtifactStore(node.cfg.artifact_root)
    outcomes: dict[str, bool] = {}
    try:
        for kind, reason in FAULTS.items():
            for previous in (True, False):
                user = f"fault-{kind}-{'prev' if previous else 'first'}"
                good = bench.adapter(node, user, 1)
                bad = make_faulty(store, good, kind, outside=bench.workdir)
                if previous:
                    node.apply(good)
                    node.apply(bad)
                    want_version = 1
                else:
                    # The broken adapter is the user's first: the base model must answer.
                    node.apply(bad)
                    want_version = None
                answer = node.generate_personalized_response(PROMPT, user, max_new_tokens=2)
                ok = (
                    answer.adapter_version == want_version
                    and answer.fallback_reason == reason
                    and "rejected" in answer.fallback_detail
                )
                outcomes[f"{kind}/{'previous' if previous else 'base'}"] = ok
        failed = sorted(k for k, ok in outcomes.items() if not ok)
        return {
            "fallback_ok": round(sum(outcomes.values()) / len(outcomes), 4),
            "fallback_cases": len(outcomes),
            "fallback_failed": failed,
        }
    finally:
        node.close()


# -- memory ---------------------------------------------------------------------------------------


def measure_rss(bench: Bench, users: int = 10_000, cached: int = 64) -> dict[str, float]:
    """A fresh process: RSS with the model, then ``users`` registered users, then ``cached`` adapters loaded
    into the cache and served, then the merged mode's scratch and the batch's per-row slots."""
    node = bench.node("rss", cache={"max_adapters": cached, "policy": "lru"}, max_batch_size=8)
    try:
        node.generate_personalized_response(PROMPT, None, max_new_tokens=1)
        before = rss_mb()
        # Every user points at one of ``cached`` adapter directories (files on disk are not what is measured).
        files = [bench.adapter(node, f"pool-{i}", 1) for i in range(cached)]
        for i in range(users):
            node.apply(files[i % cached].model_copy(update={"user_id": f"user-{i}", "event_id": uuid.uuid4()}))
        registered = rss_mb()
        for i in range(cached):  # one request per adapter: loaded, validated, cached (64 distinct entries)
            answer = node.generate_personalized_response(PROMPT, f"user-{i}", max_new_tokens=1)
            assert answer.adapter_version == 1
        served = rss_mb()
        stats = node.cache.stats()
        # Merged serving: one user's batch binds its adapter into the scratch copies of the target layers.
        lease = node.cache.lookup(("user-0", 1))
        assert lease is not None
        with lease:
            node.runtime.bind(lease.value)
            merged = rss_mb()
            scratch = node.runtime.scratch_bytes
            node.runtime.bind(None)
        # Batched serving: 8 users at once, one per-row slot each in every target layer.
        pending = [node.submit(PROMPTS[i], f"user-{i}", max_new_tokens=2) for i in range(8)]
        for p in pending:
            p.result(timeout=600)
        slots = node.runtime.slot_bytes
        return {
            "rss_mb": round(served, 1),
            "rss_mb_model_only": round(before, 1),
            "rss_mb_registry_delta": round(registered - before, 1),
            "rss_mb_cache_delta": round(served - registered, 1),
            "registered_users": len(node.registry),
            "cache_entries": stats.entries,
            "cache_mb": round(stats.bytes / 2**20, 2),
            "adapter_mb": round(stats.bytes / max(stats.entries, 1) / 2**20, 2),
            "merge_scratch_mb": round(scratch / 2**20, 2),
            "rss_mb_merge_delta": round(merged - served, 1),
            "merge_scratch_bound_mb": node.cfg.inference.merge_scratch_mb,
            "slot_mb_8_rows": round(slots / 2**20, 2),
            "rss_mb_after_batch": round(rss_mb(), 1),
        }
    finally:
        node.close()


def base_model(name: str) -> Path:
    if name in ("tiny", "demo-chat"):
        return build_model(default_cache_dir() / "models" / name, name)
    from infra.model_fetch import fetch_model

    say(f"the real model {name} (fetched once into the model cache)")
    return fetch_model(name, progress=lambda stage, message: say(f"  {stage}: {message}")).path


def timed(what: str, run: Callable[[], Any]) -> Any:
    say(what)
    started = time.perf_counter()
    result = run()
    say(f"  {what}: {time.perf_counter() - started:.0f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        default=REAL_MODEL,
        help=f"{REAL_MODEL} (default, fetched once), or a locally built model: tiny, demo-chat",
    )
    parser.add_argument("--trials", type=int, default=60, help="publish-to-served trials per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (inference.torch_threads)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 1-vs-8-users throughput comparison")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the fresh process below
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = base_model(args.model)
    workdir = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    bench = Bench(workdir, base, real=args.model not in ("tiny", "demo-chat"), threads=args.threads)
    if args.memory_only:
        try:
            memory = measure_rss(bench)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sys.stdout.write(json.dumps(memory) + "\n")
        return
    started = time.perf_counter()
    result: dict[str, Any] = {
        "model": args.model,
        "torch_threads": args.threads,
        "default_mode": DEFAULT_MODE,
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    broker: Broker | None = None
    try:
        memory = timed(
            "memory with 10,000 registered users and 64 cached adapters (in a fresh process)",
            lambda: json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads), "--memory-only"],
                    check=True,
                    text=True,
                    stdout=subprocess.PIPE,
                )
                .stdout.strip()
                .splitlines()[-1]
            ),
        )
        say(
            f"rss {memory['rss_mb']} MB: model {memory['rss_mb_model_only']} MB, registry of 10,000 users "
            f"+{memory['rss_mb_registry_delta']} MB, 64 cached adapters +{memory['rss_mb_cache_delta']} MB; "
            f"merged scratch {memory['merge_scratch_mb']} MB, 8-row slots {memory['slot_mb_8_rows']} MB"
        )
        hits = timed(
            "cache policies vs Belady's optimum (100,000 requests, 10,000 users, capacity 64)", measure_hit_rates
        )
        switch = {
            mode: timed(f"switching between two cached users ({mode})", lambda m=mode: measure_switch(bench, m))
            for mode in MODES
        }
        peft = measure_peft_set_adapter(bench)
        say(
            f"switch: merged {switch['merged']['switch_ms']:.3f} ms, unmerged {switch['unmerged']['switch_ms']:.3f} "
            f"ms; PEFT set_adapter {peft:.3f} ms"
        )
        cold = timed("cold loads", lambda: measure_cold_load(bench))
        overhead = {
            mode: timed(f"LoRA overhead, one user ({mode})", lambda m=mode: measure_overhead(bench, m))
            for mode in MODES
        }
        say(f"overhead: merged {overhead['merged']['ratio']:.3f}, unmerged {overhead['unmerged']['ratio']:.3f}")
        many = timed(
            "8 users on 8 adapters: one at a time vs at once", lambda: measure_throughput(bench, rounds=args.rounds)
        )
        say(
            f"tokens/s: 1 user {many['tokens_per_s_1_user']}, 8 users {many['tokens_per_s_8_users']}, "
            f"speedup {many['batch_speedup']} (runs {many['batch_speedup_runs']})"
        )
        rows = timed(
            "8 rows on 8 adapters, one decode step: gathered slots vs PEFT adapter_names",
            lambda: measure_row_adapters(bench),
        )
        say(
            f"decode step, 8 rows: base {rows['step_ms_8_rows_base']} ms, gathered {rows['gathered_vs_base']}x, "
            f"PEFT adapter_names {rows['peft_adapter_names_vs_base']}x"
        )
        fallbacks = timed("broken adapters", lambda: measure_fallbacks(bench))
        broker = Broker(home=workdir / "kafka", port=free_port(), controller_port=free_port())
        say(f"starting a Kafka broker on {broker.bootstrap}")
        broker.start()
        served = {
            mode: timed(
                f"publish -> served through the broker ({args.trials} versions, {mode})",
                lambda m=mode: measure_publish_to_served(bench, broker, m, args.trials),
            )  # type: ignore[arg-type]
            for mode in MODES
        }
        d = DEFAULT_MODE
        result.update(
            {
                "switch_ms": round(switch[d]["switch_ms"], 4),
                **{f"switch_ms_{m}": round(switch[m]["switch_ms"], 4) for m in MODES},
                **{f"bind_ms_{m}": round(switch[m]["bind_ms"], 4) for m in MODES},
                "row_bind_ms": round(switch["unmerged"]["row_bind_ms"], 4),
                "peft_set_adapter_ms": round(peft, 4),
                "cold_load_ms": round(cold, 3),
                **{k: v for k, v in served[d].items()},
                **{f"{k}_{m}": v for m in MODES for k, v in served[m].items()},
                "overhead_ratio": round(overhead[d]["ratio"], 4),
                **{f"overhead_ratio_{m}": round(overhead[m]["ratio"], 4) for m in MODES},
                "base_request_ms_64_tokens": round(overhead[d]["base_ms"], 1),
                **many,
                **rows,
                **hits,
                **fallbacks,
                **memory,
            }
        )
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
