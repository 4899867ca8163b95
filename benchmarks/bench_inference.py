"""``make bench-inference``: adapter switching, cold loads, publish-to-served through a real broker, LoRA
overhead, cache policies against Belady's optimum, fallbacks on broken adapters, and memory.

Runs on CPU with the small locally built model (``--preset tiny`` by default). Progress goes to stderr;
the last stdout line is one JSON object. Timings are medians of repeated runs on a shared machine, so
compare ratios taken in the same run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import torch

from inference.cache_sim import belady_hit_rate, independent_zipf, replay, session_zipf, static_top_hit_rate
from inference.follow import RegistryFollower
from inference.node import InferenceNode
from inference.policies import LRUPolicy, WTinyLFUPolicy
from infra.artifacts import ArtifactStore
from infra.broker import Broker, free_port
from infra.demo_model import build_model
from infra.demo_model.adapter import FAULTS, build_adapter, make_faulty
from infra.kafka import KafkaEventPublisher
from infra.topics import ensure_topics
from schemas.config import Config, default_cache_dir
from schemas.events import AdapterPublished
from schemas.topics import Topics

PROMPT = "What is the capital of Peru?"


def say(message: str) -> None:
    print(f"[bench-inference] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, workdir: Path, base: Path) -> None:
        self.workdir = workdir
        self.base = base

    def config(self, name: str, **inference: Any) -> Config:
        return Config.model_validate({
            "state_dir": str(self.workdir / "state"),
            "model": {"base": str(self.base), "max_new_tokens": 8},
            "inference": {"node_id": name, "torch_threads": 1, **inference},
        })

    def node(self, name: str, publisher: Any = None, **inference: Any) -> InferenceNode:
        return InferenceNode(self.config(name, **inference), publisher)

    def adapter(self, node: InferenceNode, user: str, version: int, seed: int | None = None) -> AdapterPublished:
        store = ArtifactStore(node.cfg.artifact_root)
        return build_adapter(store, str(self.base), node.runtime.model, user, version,
                             seed=seed if seed is not None else zlib.crc32(f"{user}/{version}".encode()),
                             strength=0.2, base_sha256=node.base_sha256)


# -- switching, cold loads, overhead --------------------------------------------------------------


def measure_switch(bench: Bench, mode: str, rounds: int = 200) -> dict[str, float]:
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
        alice, bob = (node.cache.lookup(("alice", 1)), node.cache.lookup(("bob", 1)))
        assert alice is not None and bob is not None
        binds = []
        for i in range(rounds):
            started = time.perf_counter()
            node.runtime.bind((alice, bob)[i % 2].value)
            binds.append((time.perf_counter() - started) * 1000)
        alice.release()
        bob.release()
        return {"switch_ms": statistics.median(switches), "bind_ms": statistics.median(binds)}
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
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(bench.base)),
                                          str(store.resolve(a.uri)), adapter_name="a")
        model.load_adapter(str(store.resolve(b.uri)), adapter_name="b")
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            model.set_adapter(("a", "b")[i % 2])
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        node.close()


def measure_cold_load(bench: Bench, n: int = 40) -> float:
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


def measure_overhead(bench: Bench, mode: str, rounds: int = 25, tokens: int = 32) -> dict[str, float]:
    """Generation time with an adapter / without, same prompt and token count, runs interleaved."""
    node = bench.node(f"overhead-{mode}", lora_serving=mode)
    try:
        node.apply(bench.adapter(node, "alice", 1))
        with node.cache.load(("alice", 1), lambda: node.loader.load(
                "alice", node.registry.get("alice").latest)) as lease:  # type: ignore[arg-type, union-attr]
            weights = lease.value
        inputs = node.generator.tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        model: Any = node.runtime.model

        def generate(adapter: Any) -> float:
            started = time.perf_counter()
            node.runtime.bind(adapter)  # one user owns the batch: bound once per request
            with torch.no_grad():
                model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                               pad_token_id=node.generator.tokenizer.pad_token_id)
            return time.perf_counter() - started

        for _ in range(3):
            generate(None)
            generate(weights)
        ratios, base_ms, adapter_ms = [], [], []
        for _ in range(rounds):
            b = generate(None)
            a = generate(weights)
            ratios.append(a / b)
            base_ms.append(b * 1000)
            adapter_ms.append(a * 1000)
        return {"ratio": statistics.median(ratios), "base_ms": statistics.median(base_ms),
                "adapter_ms": statistics.median(adapter_ms)}
    finally:
        node.close()


# -- publish to served, through the broker --------------------------------------------------------


def measure_publish_to_served(bench: Bench, trials: int = 60) -> dict[str, float]:
    broker = Broker(home=bench.workdir / "kafka", port=free_port(), controller_port=free_port())
    say(f"starting a Kafka broker on {broker.bootstrap}")
    broker.start()
    stop = threading.Event()
    node: InferenceNode | None = None
    publisher: KafkaEventPublisher | None = None
    thread = None
    try:
        cfg = bench.config("publish-to-served").with_overrides(
            kafka={"bootstrap_servers": broker.bootstrap, "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
                   "partitions": 3})
        ensure_topics(cfg.kafka)
        topic = Topics(cfg.kafka.topic_prefix).adapters
        publisher = KafkaEventPublisher(broker.bootstrap, client_id="bench-trainer")
        node = InferenceNode(cfg, KafkaEventPublisher(broker.bootstrap, client_id="bench-node"))
        follower = RegistryFollower(cfg, node)
        thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
        thread.start()
        if not follower.ready.wait(60):
            raise RuntimeError("the node did not read the registry within 60 s")
        first = bench.adapter(node, "alice", 1)
        publisher.publish(topic, first)
        publisher.flush()
        latencies = []
        for version in range(2, trials + 2):
            event = bench.adapter(node, "alice", version)  # files written first, as the trainer does
            produced = time.perf_counter()
            publisher.publish(topic, event)
            while True:
                answer = node.generate_personalized_response(PROMPT, "alice", max_new_tokens=1)
                if answer.adapter_version == version:
                    latencies.append((time.perf_counter() - produced) * 1000)
                    break
                if time.perf_counter() - produced > 30:
                    raise RuntimeError(f"version {version} was not served within 30 s")
            time.sleep(0.05)
        publisher.flush()
        return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "n": len(latencies),
                "max": max(latencies)}
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
        if node is not None:
            node.close()
        node = publisher = None  # the Kafka clients go before the broker does
        gc.collect()
        broker.stop()


# -- cache policies against the optimum -----------------------------------------------------------


def measure_hit_rates(capacity: int = 64, users: int = 10_000, requests: int = 100_000) -> dict[str, Any]:
    traces = {
        "independent": independent_zipf(requests, users, s=1.0, seed=0),
        "session": session_zipf(requests, users, s=1.0, mean_burst=8, concurrent=16, seed=0),
    }
    out: dict[str, dict[str, float]] = {"hit_rate": {}, "hit_rate_vs_optimal": {}, "optimal_hit_rate": {},
                                        "lru_hit_rate": {}, "lru_vs_optimal": {}, "static_top_hit_rate": {},
                                        "static_top_vs_optimal": {}}
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
        say(f"{name}: optimum {optimum:.4f}, wtinylfu {ours / optimum:.3f}, lru {lru / optimum:.3f}, "
            f"static top-{capacity} {static / optimum:.3f} of optimum")
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
                ok = answer.adapter_version == want_version and answer.fallback_reason == reason \
                    and "rejected" in answer.fallback_detail
                outcomes[f"{kind}/{'previous' if previous else 'base'}"] = ok
        failed = sorted(k for k, ok in outcomes.items() if not ok)
        return {"fallback_ok": round(sum(outcomes.values()) / len(outcomes), 4), "fallback_cases": len(outcomes),
                "fallback_failed": failed}
    finally:
        node.close()


# -- memory ---------------------------------------------------------------------------------------


def measure_rss(bench: Bench, users: int = 10_000, pool: int = 200, requests: int = 1_500) -> dict[str, float]:
    """RSS with ``users`` registered users and a 64-adapter cache: the registry holds references only."""
    node = bench.node("rss", cache={"max_adapters": 64})
    try:
        node.generate_personalized_response(PROMPT, None, max_new_tokens=1)
        before = rss_mb()
        # Every user points at one of ``pool`` adapter directories (files on disk are not what is measured).
        files = [bench.adapter(node, f"pool-{i}", 1) for i in range(pool)]
        for i in range(users):
            node.apply(files[i % pool].model_copy(update={"user_id": f"user-{i}", "event_id": uuid.uuid4()}))
        registered = rss_mb()
        trace = independent_zipf(requests, users, seed=3)
        for user in trace:
            node.generate_personalized_response(PROMPT, f"user-{user}", max_new_tokens=1)
        served = rss_mb()
        stats = node.cache.stats()
        return {"rss_mb": round(served, 1), "rss_mb_model_only": round(before, 1),
                "rss_mb_registry_delta": round(registered - before, 1),
                "rss_mb_cache_delta": round(served - registered, 1), "registered_users": len(node.registry),
                "cache_entries": stats.entries, "cache_mb": round(stats.bytes / 2**20, 2)}
    finally:
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny", help="locally built model: tiny (default) or demo-chat")
    parser.add_argument("--trials", type=int, default=60, help="publish-to-served trials")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the fresh process below
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = build_model(default_cache_dir() / "models" / args.preset, args.preset)
    workdir = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    bench = Bench(workdir, base)
    result: dict[str, Any] = {"model": args.preset}
    if args.memory_only:
        try:
            result = measure_rss(bench)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    try:
        say("memory with 10,000 registered users (in a fresh process)")
        memory = json.loads(subprocess.run(
            [sys.executable, __file__, "--preset", args.preset, "--memory-only"], check=True, text=True,
            stdout=subprocess.PIPE).stdout.strip().splitlines()[-1])
        say(f"rss {memory['rss_mb']} MB: model {memory['rss_mb_model_only']} MB, registry of 10,000 users "
            f"+{memory['rss_mb_registry_delta']} MB, 64 cached adapters +{memory['rss_mb_cache_delta']} MB")
        say("cache policies vs Belady's optimum (100,000 requests, 10,000 users, capacity 64)")
        hits = measure_hit_rates()
        say("switching between two cached users")
        merged, unmerged = measure_switch(bench, "merged"), measure_switch(bench, "unmerged")
        peft = measure_peft_set_adapter(bench)
        say(f"switch: merged {merged['switch_ms']:.3f} ms, unmerged {unmerged['switch_ms']:.3f} ms, "
            f"PEFT set_adapter {peft:.3f} ms")
        say("cold loads")
        cold = measure_cold_load(bench)
        say("LoRA overhead")
        over_m, over_u = measure_overhead(bench, "merged"), measure_overhead(bench, "unmerged")
        say(f"overhead: merged {over_m['ratio']:.3f}, unmerged {over_u['ratio']:.3f} "
            f"(base {over_m['base_ms']:.1f} ms for 32 tokens)")
        say("broken adapters")
        fallbacks = measure_fallbacks(bench)
        say(f"publish -> served through the broker ({args.trials} versions)")
        served = measure_publish_to_served(bench, args.trials)
        result.update({
            "switch_ms": round(merged["switch_ms"], 4),
            "switch_ms_unmerged": round(unmerged["switch_ms"], 4),
            "bind_ms": round(merged["bind_ms"], 4),
            "peft_set_adapter_ms": round(peft, 4),
            "cold_load_ms": round(cold, 3),
            "publish_to_served_ms_p50": round(served["p50"], 1),
            "publish_to_served_ms_p99": round(served["p99"], 1),
            "publish_to_served_trials": served["n"],
            "overhead_ratio": round(min(over_m["ratio"], over_u["ratio"]), 4),
            "overhead_ratio_merged": round(over_m["ratio"], 4),
            "overhead_ratio_unmerged": round(over_u["ratio"], 4),
            "base_generate_ms_32_tokens": round(over_m["base_ms"], 2),
            **hits,
            **fallbacks,
            **memory,
        })
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
