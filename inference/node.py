"""An inference node: one base model, every user's adapter state, a bounded cache of loaded adapters.

A request is routed (:mod:`inference.routing`) to a version, leased from the cache (loaded and
validated on a miss, once), bound to the model (:mod:`inference.lora`) and answered; the lease ends
when the answer is done, so a request finishes on the version it started with whatever is published
or evicted meanwhile. Generation is serialized (one request binds the model at a time), so every
answer uses its own user's adapter and no other.

When the routed version cannot serve (it failed validation, or loading it failed), the previous
version answers, else the base model; the answer carries the reason, an ``AdapterLoadFailed`` event
is published once per version, and the node keeps serving. Every answer publishes ``AnswerServed``.

Registry events come from :class:`inference.follow.RegistryFollower`; a newly published version is
loaded at once (before anything is evicted for it) when its user asked recently, and the user's
pointer flips to it once it validated.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from inference.cache import AdapterCache, Lease
from inference.errors import AdapterRejected, CacheError
from inference.generator import GENERATION_OPTIONS, Generator
from inference.loader import AdapterLoader
from inference.lora import LoRARuntime, LoRAWeights
from inference.metrics import NodeMetrics
from inference.policies import make_policy
from inference.registry import Change, Registry
from inference.response import PersonalizedResponse
from inference.routing import Arm, Route, draw, route
from infra.artifacts import ArtifactStore
from infra.errors import PublishError
from infra.kafka import EventPublisher
from schemas.config import Config
from schemas.events import AdapterLoadFailed, AdapterRef, AdapterRegistryState, AnswerServed, Event
from schemas.ids import adapter_event_id, derived_event_id
from schemas.topics import Topics

log = logging.getLogger("samtuner.inference")

ANONYMOUS = "<anonymous>"  # the user id of AnswerServed for requests that name no user
CacheKey = tuple[str, int]  # (user id, adapter version)


class InferenceNode:
    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher | None,
        model: Any | None = None,
        tokenizer: Any | None = None,
        base_sha256: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from transformers.utils import logging as hf_logging

        from infra.models import load_base_model, load_tokenizer, weights_sha256

        hf_logging.set_verbosity_error()
        if cfg.inference.torch_threads is not None:
            import torch

            torch.set_num_threads(cfg.inference.torch_threads)
        self.cfg = cfg
        self.node_id = cfg.inference.node_id
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.publisher = publisher
        if publisher is None:
            log.warning("node %s publishes no events (no publisher): AnswerServed/AdapterLoadFailed are only logged",
                        self.node_id)
        self._clock = clock
        tokenizer = tokenizer or load_tokenizer(cfg.model.base)
        model = model or load_base_model(cfg.model, cfg.quantization)
        model.requires_grad_(False)
        model.eval()
        self.runtime = LoRARuntime(model, cfg.inference.lora_serving)
        self.generator = Generator(model, tokenizer, cfg.model.max_new_tokens)
        self.base_sha256 = base_sha256 or weights_sha256(cfg.model.base)
        cache_cfg = cfg.inference.cache
        self.loader = AdapterLoader(ArtifactStore(cfg.artifact_root), self.base_sha256, self.runtime.shapes,
                                    self.runtime.dtypes, cfg.inference.max_rank, cache_cfg.max_bytes)
        self.registry = Registry()
        self.cache: AdapterCache[CacheKey, LoRAWeights] = AdapterCache(
            make_policy(cache_cfg.policy, cache_cfg.max_adapters, frequency_key=lambda k: k[0]),  # type: ignore[index]
            max_entries=cache_cfg.max_adapters, max_bytes=cache_cfg.max_bytes, ttl_s=cache_cfg.ttl_s,
            size_of=lambda w: w.nbytes, on_evict=self._evicted, clock=clock)
        self.metrics = NodeMetrics(self.cache.stats, lambda: len(self.registry))
        self._pinned_users = frozenset(cache_cfg.pinned_users)
        self._generate_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the two maps below
        self._failures: dict[CacheKey, AdapterRejected] = {}
        self._last_seen: dict[str, float] = {}
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    # -- the registry --------------------------------------------------------------------------

    def apply(self, event: Event) -> Change:
        """Fold one registry event in, and act on what changed (prefetch, unload, revoke)."""
        change = self.registry.apply(event)
        self.metrics.registry_events.inc()
        if change.changed and change.after is not None:
            self._on_change(change.user_id, change.before, change.after, change.new_version)
        return change

    def _on_change(self, user_id: str, before: AdapterRegistryState | None, after: AdapterRegistryState,
                   new_version: AdapterRef | None) -> None:
        if after.revoked:
            dropped = self.cache.evict_where(lambda k: k[0] == user_id, "revoked")
            self.cache.deactivate(user_id)
            with self._lock:
                for key in [k for k in self._failures if k[0] == user_id]:
                    del self._failures[key]
            log.info("adapters of a user revoked: %d unloaded", len(dropped))
            return
        if not after.active:
            self.cache.deactivate(user_id)
        keep = {ref.version for ref in (after.latest, after.previous) if ref is not None}
        self.cache.evict_where(lambda k: k[0] == user_id and k[1] not in keep, "superseded")
        if new_version is not None and after.active and self._wants_prefetch(user_id):
            try:
                self._prefetcher.submit(self._prefetch, user_id, new_version)
            except RuntimeError:  # the node is closing: the first request will load it instead
                log.debug("no prefetch: the node is closing")

    def _wants_prefetch(self, user_id: str) -> bool:
        if user_id in self._pinned_users or self.cache.active(user_id) is not None:
            return True
        with self._lock:
            seen = self._last_seen.get(user_id)
        return seen is not None and self._clock() - seen <= self.cfg.inference.prefetch_window_s

    def _prefetch(self, user_id: str, ref: AdapterRef) -> None:
        try:
            lease = self._load(user_id, ref)
        except AdapterRejected:
            return  # recorded (event, metrics, log); requests fall back with the reason
        except Exception:
            log.exception("prefetching an adapter failed")
            return
        try:
            self._flip(user_id, lease.key)
        finally:
            lease.release()

    # -- answers -------------------------------------------------------------------------------

    def generate_personalized_response(
        self,
        prompt: str,
        user_id: str | None = None,
        context: Sequence[Mapping[str, str]] | None = None,
        **kw: Any,
    ) -> PersonalizedResponse:
        """Answer ``prompt`` as ``user_id``'s adapter would; ``context`` holds the conversation's earlier
        messages (``{"role", "content"}``). ``kw``: ``max_new_tokens``, ``temperature``, ``top_p``."""
        unknown = set(kw) - set(GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation options {sorted(unknown)}; valid: {', '.join(GENERATION_OPTIONS)}")
        started = time.perf_counter()
        answer_id = uuid.uuid4()
        if user_id:
            with self._lock:
                self._last_seen[user_id] = self._clock()
        state = self.registry.get(user_id) if user_id else None
        planned = route(user_id, state, self.cfg.inference.ab_new_share, draw(answer_id))
        lease, arm, reason, detail = self._resolve(user_id, planned, state)
        weights = lease.value if lease is not None else None
        resolved_s = time.perf_counter() - started
        try:
            with self._generate_lock:
                bind_started = time.perf_counter()
                self.runtime.bind(weights)
                switch_s = resolved_s + time.perf_counter() - bind_started
                generate_started = time.perf_counter()
                text, tokens, prompt_tokens = self.generator.complete([*(dict(m) for m in context or ()),
                                                        {"role": "user", "content": prompt}], **kw)
                generate_s = time.perf_counter() - generate_started
        finally:
            if lease is not None:
                lease.release()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        answer = PersonalizedResponse(
            text=text, user_id=user_id, source="adapter" if weights is not None else "base",
            adapter_version=weights.version if weights is not None else None, fallback_reason=reason,
            fallback_detail=detail, latency_ms=latency_ms, arm=arm, answer_id=answer_id, completion_tokens=tokens,
            prompt_tokens=prompt_tokens, switch_ms=round(switch_s * 1000, 4))
        self._served(answer, generate_s, switch_s)
        return answer

    def answer_with_version(self, prompt: str, user_id: str, version: int | None, **kw: Any) -> PersonalizedResponse:
        """Answer with exactly this version of the user's adapter (None = the base model), whatever the
        user's routing says: the console's compare view. Not an answer served to the user, so no
        AnswerServed is published and the user's pointer does not move."""
        started = time.perf_counter()
        lease = None
        arm: Arm = "base"
        if version is not None:
            state = self.registry.get(user_id)
            arms: list[tuple[Arm, AdapterRef | None]] = [("new", state.latest), ("previous", state.previous)] \
                if state is not None else []
            found = [(a, r) for a, r in arms if r is not None and r.version == version]
            if not found:
                known = sorted(r.version for _, r in arms if r is not None)
                raise AdapterRejected("unknown_version", f"this node knows no version {version} of the user's "
                                      f"adapter (known: {known or 'none'})")
            arm, ref = found[0][0], found[0][1]
            assert ref is not None
            lease = self._load(user_id, ref)  # AdapterRejected propagates: the caller shows why
        try:
            with self._generate_lock:
                self.runtime.bind(lease.value if lease is not None else None)
                text, tokens, prompt_tokens = self.generator.complete([{"role": "user", "content": prompt}], **kw)
        finally:
            if lease is not None:
                lease.release()
        return PersonalizedResponse(
            text=text, user_id=user_id, source="adapter" if lease is not None else "base", adapter_version=version,
            fallback_reason=None, fallback_detail="", arm=arm, answer_id=uuid.uuid4(), completion_tokens=tokens,
            prompt_tokens=prompt_tokens, latency_ms=round((time.perf_counter() - started) * 1000, 3), switch_ms=0.0)

    def _resolve(self, user_id: str | None, planned: Route, state: AdapterRegistryState | None,
                 ) -> tuple[Lease[CacheKey, LoRAWeights] | None, Arm, str | None, str]:
        """A lease on the routed version, else on the previous one, else None (the base model) with the reason."""
        if planned.target is None or user_id is None or state is None:
            return None, planned.arm, planned.reason, planned.detail
        chain: list[tuple[Arm, AdapterRef]] = [(planned.arm, planned.target)]
        if planned.arm == "new" and state.previous is not None:
            chain.append(("previous", state.previous))
        failure: tuple[int, AdapterRejected] | None = None
        for arm, ref in chain:
            with self._lock:
                rejected = self._failures.get((user_id, ref.version))
            if rejected is None:
                try:
                    lease = self._load(user_id, ref)
                except AdapterRejected as exc:
                    rejected = exc
                else:
                    if arm == "new" or failure is not None:  # the user's current validated version
                        self._flip(user_id, lease.key)
                    if failure is None:
                        return lease, arm, None, ""
                    version, why = failure
                    return lease, arm, why.reason, (f"adapter v{version} rejected ({why.reason}): {why.detail}; "
                                                    f"answered by v{ref.version}")
            if failure is None:
                failure = (ref.version, rejected)
        assert failure is not None
        version, why = failure
        return None, "base", why.reason, (f"adapter v{version} rejected ({why.reason}): {why.detail}; "
                                          "the base model answered")

    def _load(self, user_id: str, ref: AdapterRef) -> Lease[CacheKey, LoRAWeights]:
        key = (user_id, ref.version)

        def load() -> LoRAWeights:
            started = time.perf_counter()
            try:
                weights = self.loader.load(user_id, ref)
            except AdapterRejected as exc:
                self._rejected(user_id, ref, exc)
                raise
            except Exception as exc:  # a loader bug or an I/O surprise must not take the node down
                rejected = AdapterRejected("load_error", f"{type(exc).__name__}: {exc}")
                self._rejected(user_id, ref, rejected)
                raise rejected from exc
            self.metrics.loads.labels("ok").inc()
            self.metrics.load_seconds.observe(time.perf_counter() - started)
            return weights

        return self.cache.load(key, load)

    def _flip(self, user_id: str, key: CacheKey) -> None:
        """Point the user at a validated version (atomically); pinned users keep it loaded."""
        try:
            before = self.cache.activate(user_id, key)
        except CacheError as exc:
            log.debug("no pointer flip for %s: %s", key, exc)  # declined by the policy: served, not kept
            return
        if user_id in self._pinned_users and before != key:
            if before is not None:
                self.cache.unpin(before)  # the pin moves with the pointer
            try:
                self.cache.pin(key)
            except CacheError as exc:
                log.warning("cannot pin the adapter of a pinned user: %s", exc)

    def _rejected(self, user_id: str, ref: AdapterRef, exc: AdapterRejected) -> None:
        with self._lock:
            first = (user_id, ref.version) not in self._failures
            self._failures[(user_id, ref.version)] = exc
        self.metrics.loads.labels(exc.reason).inc()
        if not first:
            return
        log.warning("adapter %s rejected on node %s: %s", ref.uri, self.node_id, exc)
        self._publish(self.topics.inference, AdapterLoadFailed(
            event_id=derived_event_id("adapter-load-failed", self.node_id, user_id, str(ref.version)),
            user_id=user_id, correlation_id=adapter_event_id(user_id, ref.version), version=ref.version,
            node_id=self.node_id, reason=exc.reason, detail=exc.detail[:2000]))

    def _served(self, answer: PersonalizedResponse, generate_s: float, switch_s: float) -> None:
        self.metrics.answers.labels(answer.arm).inc()
        self.metrics.generation_seconds.labels(answer.source).observe(generate_s)
        self.metrics.switch_seconds.observe(switch_s)
        if answer.fallback_reason is not None:
            self.metrics.fallbacks.labels(answer.fallback_reason).inc()
        self._publish(self.topics.inference, AnswerServed(
            event_id=answer.answer_id, answer_id=answer.answer_id, user_id=answer.user_id or ANONYMOUS,
            correlation_id=answer.answer_id, node_id=self.node_id, arm=answer.arm,
            adapter_version=answer.adapter_version, fallback_reason=answer.fallback_reason,
            latency_ms=answer.latency_ms, completion_tokens=answer.completion_tokens))

    def _publish(self, topic: str, event: Event) -> None:
        if self.publisher is None:
            log.info("event not published (no publisher): %s", event.model_dump_json())
            return
        try:
            self.publisher.publish(topic, event)
        except PublishError as exc:
            self.metrics.event_failures.inc()
            log.error("cannot publish %s: %s", type(event).__name__, exc)

    def _evicted(self, key: object, value: object, reason: str) -> None:
        self.metrics.evictions.labels(reason).inc()

    # -- upkeep and views ----------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Expire idle adapters, forget old activity, and surface undelivered events (call every second)."""
        self.cache.expire()
        horizon = self._clock() - self.cfg.inference.prefetch_window_s
        with self._lock:
            for user in [u for u, t in self._last_seen.items() if t < horizon]:
                del self._last_seen[user]
        if self.publisher is not None:
            try:
                self.publisher.flush(timeout_s=5.0)
            except PublishError as exc:
                self.metrics.event_failures.inc()
                log.error("events not delivered: %s", exc)

    def resident(self) -> list[dict[str, Any]]:
        """The loaded adapters (for routers): user, version, bytes, in use, pinned, active, idle seconds."""
        rows = []
        for info in self.cache.list():
            user, version = cast(CacheKey, info.key)
            rows.append({"user": user, "version": version, "bytes": info.size, "in_use": info.refs,
                         "pinned": info.pinned, "active": user in info.active_for, "idle_s": round(info.idle_s, 3)})
        return sorted(rows, key=lambda r: (r["user"], r["version"]))

    def user_state(self, user_id: str) -> dict[str, Any]:
        state = self.registry.get(user_id)
        with self._lock:
            failures = {v: f"{e.reason}: {e.detail}" for (u, v), e in self._failures.items() if u == user_id}
        return {
            "user": user_id,
            "known": state is not None,
            "state": state.model_dump(mode="json") if state is not None else None,
            "active_version": (self.cache.active(user_id) or (None, None))[1],
            "rejected_versions": failures,
        }

    def close(self) -> None:
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        if self.publisher is not None:
            try:
                self.publisher.flush(timeout_s=10.0)
            except PublishError as exc:
                log.error("events not delivered at shutdown: %s", exc)
