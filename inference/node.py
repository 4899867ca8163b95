"""An inference node: one base model, every user's adapter state, a bounded cache of loaded adapters.

A request is checked against the limits (``inference.limits``), routed (:mod:`inference.routing`) to a
version, leased from the cache (loaded and validated on a miss, once) and queued with its lease for a
row of the running batch (:mod:`inference.scheduler`): requests of many users are decoded together,
each row with its own user's adapter. The lease ends when the answer is done, so a request finishes on
the version it was routed to whatever is published or evicted meanwhile.

When the routed version cannot serve (it failed validation, or loading it failed), the previous
version answers, else the base model; the answer carries the reason, an ``AdapterLoadFailed`` event
is published once per version, and the node keeps serving. Every answer that was generated publishes
``AnswerServed`` once (refused requests publish nothing; they get an error naming the limit).

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
from dataclasses import dataclass
from typing import Any, cast

import torch

from inference.base import ServedBase
from inference.cache import AdapterCache, Lease
from inference.errors import AdapterRejected, CacheError, GenerationError, LimitExceeded
from inference.generator import GENERATION_OPTIONS, ChatEncoder, Detokenizer, stop_token_ids
from inference.loader import AdapterLoader
from inference.lora import LoRAWeights
from inference.metrics import NodeMetrics
from inference.pending import PendingAnswer
from inference.policies import make_policy
from inference.registry import Change, Registry
from inference.response import PersonalizedResponse
from inference.routing import Arm, Route, draw, route
from inference.sampling import Sampling
from inference.scheduler import EndReason, Job, Scheduler
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
_RESULT_MARGIN_S = 30.0  # a blocking caller waits this much past the request's deadline before giving up
_STOPPED_BY = {"length": "max_tokens", "timeout": "inference.limits.request_timeout_s", "cancelled": "cancelled"}


@dataclass(frozen=True)
class _Request:
    """What the node decided for a request before it was queued, kept for its answer."""

    user_id: str | None
    lease: Lease[CacheKey, LoRAWeights] | None
    arm: Arm
    reason: str | None
    detail: str
    started: float  # perf_counter at arrival
    resolve_s: float  # routing and the cache lease (a load on a miss)
    prompt_tokens: int
    served: bool = True  # an answer to the user (metrics, AnswerServed); False: the console's compare view


_Pick = Callable[[], tuple[Lease[CacheKey, LoRAWeights] | None, Arm]]


class InferenceNode:
    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher | None,
        base: ServedBase,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A node around ``base`` (``inference.base.load_served_base``): it loads nothing itself and
        changes no process-wide setting (``inference.base.configure_torch`` does, once per process)."""
        self.cfg = cfg
        self.node_id = cfg.inference.node_id
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.publisher = publisher
        if publisher is None:
            log.warning(
                "node %s publishes no events (no publisher): AnswerServed/AdapterLoadFailed are only logged",
                self.node_id,
            )
        self._clock = clock
        model, tokenizer = base.model, base.tokenizer
        serving = cfg.inference
        self.runtime = base.runtime
        self.encoder = ChatEncoder(tokenizer)
        context = getattr(model.config, "max_position_embeddings", None)
        self._context_tokens = int(context) if isinstance(context, int) else None
        self.scheduler = Scheduler(
            model,
            self.runtime,
            stop_token_ids(model, tokenizer),
            serving.max_batch_size,
            serving.limits.max_queue,
            pad_id=int(tokenizer.pad_token_id or 0),
        )
        self.base_sha256 = base.sha256
        cache_cfg = cfg.inference.cache
        self.loader = AdapterLoader(
            ArtifactStore(cfg.artifact_root),
            self.base_sha256,
            self.runtime.shapes,
            self.runtime.dtypes,
            cfg.inference.max_rank,
            cache_cfg.max_bytes,
        )
        self.registry = Registry()
        self.cache: AdapterCache[CacheKey, LoRAWeights] = AdapterCache(
            make_policy(cache_cfg.policy, cache_cfg.max_adapters, frequency_key=lambda k: k[0]),  # type: ignore[index]
            max_entries=cache_cfg.max_adapters,
            max_bytes=cache_cfg.max_bytes,
            ttl_s=cache_cfg.ttl_s,
            size_of=lambda w: w.nbytes,
            on_evict=self._evicted,
            clock=clock,
        )
        self.metrics = NodeMetrics(self.cache.stats, lambda: len(self.registry), self.scheduler.stats)
        self._pinned_users = frozenset(cache_cfg.pinned_users)
        self._lock = threading.Lock()  # guards the two maps below
        self._failures: dict[CacheKey, AdapterRejected] = {}
        self._last_seen: dict[str, float] = {}
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._reporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="answers")  # AnswerServed, off the model

    # -- the registry --------------------------------------------------------------------------

    def apply(self, event: Event) -> Change:
        """Fold one registry event in, and act on what changed (prefetch, unload, revoke)."""
        change = self.registry.apply(event)
        self.metrics.registry_events.inc()
        if change.changed and change.after is not None:
            self._on_change(change.user_id, change.before, change.after, change.new_version)
        return change

    def _on_change(
        self,
        user_id: str,
        before: AdapterRegistryState | None,
        after: AdapterRegistryState,
        new_version: AdapterRef | None,
    ) -> None:
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
        messages (``{"role", "content"}``). ``kw``: ``max_new_tokens``, ``min_new_tokens`` (stop tokens are
        not chosen before), ``temperature``, ``top_p``.

        The request joins the running batch; this call blocks until its answer is done."""
        pending = self.submit(prompt, user_id, context, **kw)
        try:
            return pending.result(timeout=self.cfg.inference.limits.request_timeout_s + _RESULT_MARGIN_S)
        except TimeoutError as exc:
            pending.cancel()
            raise GenerationError(f"no answer from the scheduler within the request's time bound: {exc}") from exc

    def submit(
        self,
        prompt: str,
        user_id: str | None = None,
        context: Sequence[Mapping[str, str]] | None = None,
        stream: bool = False,
        **kw: Any,
    ) -> PendingAnswer:
        """Check the request against the limits, route it and lease its adapter, and queue it for a batch row.

        Raises LimitExceeded (naming the limit; QueueFull when the queue is full) or GenerationError (the
        chat template failed) before anything is queued. ``stream``: the handle yields text pieces as they come.
        """
        unknown = set(kw) - set(GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation options {sorted(unknown)}; valid: {', '.join(GENERATION_OPTIONS)}")
        try:
            return self._submit(prompt, user_id, context, stream, kw)
        except LimitExceeded as exc:
            self.metrics.refusals.labels(exc.code).inc()
            log.info("request refused (%s): %s", exc.limit, exc)
            raise

    def _submit(
        self,
        prompt: str,
        user_id: str | None,
        context: Sequence[Mapping[str, str]] | None,
        stream: bool,
        kw: Mapping[str, Any],
        pick: _Pick | None = None,
    ) -> PendingAnswer:
        """``pick``: the lease and arm to answer with, instead of the user's routing (not a served answer)."""
        started, arrived = time.perf_counter(), time.monotonic()
        limits = self.cfg.inference.limits
        max_new = kw.get("max_new_tokens") or self.cfg.model.max_new_tokens
        if max_new > limits.max_tokens:
            raise LimitExceeded(
                "inference.limits.max_tokens",
                f"max_tokens is {max_new}, more than this node allows "
                f"(inference.limits.max_tokens = {limits.max_tokens})",
                code="max_tokens_exceeded",
                param="max_tokens",
            )
        min_new = int(kw.get("min_new_tokens") or 0)
        if min_new > max_new:
            raise ValueError(f"min_new_tokens ({min_new}) is more than max_new_tokens ({max_new})")
        ids = self.encoder.encode([*(dict(m) for m in context or ()), {"role": "user", "content": prompt}])
        if len(ids) > limits.max_prompt_tokens:
            raise LimitExceeded(
                "inference.limits.max_prompt_tokens",
                f"the prompt is {len(ids)} tokens (chat template "
                f"and conversation included), more than this node allows "
                f"(inference.limits.max_prompt_tokens = {limits.max_prompt_tokens})",
                code="context_length_exceeded",
                param="messages",
            )
        if self._context_tokens is not None and len(ids) + max_new > self._context_tokens:
            raise LimitExceeded(
                "max_position_embeddings",
                f"the model's context is {self._context_tokens} tokens, "
                f"and this request asks for {len(ids) + max_new} ({len(ids)} in the messages, "
                f"{max_new} in the completion)",
                code="context_length_exceeded",
                param="messages",
            )
        answer_id = uuid.uuid4()
        routing = time.perf_counter()
        if pick is not None:
            (lease, arm), reason, detail = pick(), None, ""
        else:
            if user_id:
                with self._lock:
                    self._last_seen[user_id] = self._clock()
            state = self.registry.get(user_id) if user_id else None
            planned = route(user_id, state, self.cfg.inference.ab_new_share, draw(answer_id))
            lease, arm, reason, detail = self._resolve(user_id, planned, state)
        request = _Request(
            user_id, lease, arm, reason, detail, started, time.perf_counter() - routing, len(ids), served=pick is None
        )
        pending = PendingAnswer(
            answer_id,
            {
                "answer_id": str(answer_id),
                "user": user_id,
                "source": "adapter" if lease is not None else "base",
                "arm": arm,
                "adapter_version": lease.value.version if lease is not None else None,
                "fallback_reason": reason,
                "fallback_detail": detail,
            },
        )
        temperature = kw.get("temperature")
        sampling = Sampling(temperature=temperature, top_p=kw.get("top_p"))
        job = Job(
            answer_id=answer_id,
            prompt=ids,
            weights=lease.value if lease is not None else None,
            max_new_tokens=int(max_new),
            min_new_tokens=min_new,
            sampling=sampling,
            deadline=arrived + limits.request_timeout_s,
            submitted=arrived,
            pending=pending,
            on_end=lambda j, why, error: self._ended(request, j, why, error),
            detokenizer=Detokenizer(self.encoder) if stream else None,
            generator=None if sampling.greedy else torch.Generator().manual_seed(int(answer_id.hex[:12], 16)),
        )
        try:
            self.scheduler.submit(job)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        return pending

    def _ended(self, request: _Request, job: Job, why: EndReason, error: BaseException | None) -> None:
        """The scheduler is done with ``job`` (on its thread): give the lease back, report off its thread."""
        if request.lease is not None:
            request.lease.release()
        try:
            self._reporter.submit(self._report, request, job, why, error)
        except RuntimeError:  # the node is closing: report here
            self._report(request, job, why, error)

    def _report(self, request: _Request, job: Job, why: EndReason, error: BaseException | None) -> None:
        if error is not None:
            self.metrics.refusals.labels(getattr(error, "code", "generation_error")).inc()
            job.pending.fail(error)
            return
        now = time.perf_counter()
        weights = job.weights
        text = self.encoder.decode(job.tokens)
        if job.detokenizer is not None:
            job.pending.push(job.detokenizer.rest(text))
        submitted = request.started
        answer = PersonalizedResponse(
            text=text,
            user_id=request.user_id,
            source="adapter" if weights is not None else "base",
            adapter_version=weights.version if weights is not None else None,
            fallback_reason=request.reason,
            fallback_detail=request.detail,
            latency_ms=round((now - submitted) * 1000, 3),
            arm=request.arm,
            answer_id=job.answer_id,
            completion_tokens=len(job.tokens),
            prompt_tokens=request.prompt_tokens,
            switch_ms=round((request.resolve_s + job.bind_s) * 1000, 4),
            ttft_ms=round(((job.first_token or job.submitted) - job.submitted) * 1000, 3),
            queue_ms=round(((job.admitted or job.submitted) - job.submitted) * 1000, 3),
            finish_reason="stop" if why == "stop" else "length",
            stopped_by=_STOPPED_BY.get(why),
        )
        if request.served:
            generate_s = time.monotonic() - (job.admitted or job.submitted)
            self._served(answer, generate_s, request.resolve_s + job.bind_s)
        job.pending.finish(answer)

    def answer_with_version(self, prompt: str, user_id: str, version: int | None, **kw: Any) -> PersonalizedResponse:
        """Answer with exactly this version of the user's adapter (None = the base model), whatever the
        user's routing says: the console's compare view. It runs in the batch like any request, but it is not
        an answer served to the user, so no AnswerServed is published and the user's pointer does not move."""
        unknown = set(kw) - set(GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation options {sorted(unknown)}; valid: {', '.join(GENERATION_OPTIONS)}")

        def pick() -> tuple[Lease[CacheKey, LoRAWeights] | None, Arm]:
            if version is None:
                return None, "base"
            state = self.registry.get(user_id)
            arms: list[tuple[Arm, AdapterRef | None]] = (
                [("new", state.latest), ("previous", state.previous)] if state is not None else []
            )
            found = [(a, r) for a, r in arms if r is not None and r.version == version]
            if not found:
                known = sorted(r.version for _, r in arms if r is not None)
                raise AdapterRejected(
                    "unknown_version",
                    f"this node knows no version {version} of the user's adapter (known: {known or 'none'})",
                )
            arm, ref = found[0]
            assert ref is not None
            return self._load(user_id, ref), arm  # AdapterRejected propagates: the caller shows why

        pending = self._submit(prompt, user_id, None, False, kw, pick=pick)
        return pending.result(timeout=self.cfg.inference.limits.request_timeout_s + _RESULT_MARGIN_S)

    def _resolve(
        self,
        user_id: str | None,
        planned: Route,
        state: AdapterRegistryState | None,
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
                    return (
                        lease,
                        arm,
                        why.reason,
                        (f"adapter v{version} rejected ({why.reason}): {why.detail}; answered by v{ref.version}"),
                    )
            if failure is None:
                failure = (ref.version, rejected)
        assert failure is not None
        version, why = failure
        return (
            None,
            "base",
            why.reason,
            (f"adapter v{version} rejected ({why.reason}): {why.detail}; the base model answered"),
        )

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
        self._publish(
            self.topics.inference,
            AdapterLoadFailed(
                event_id=derived_event_id("adapter-load-failed", self.node_id, user_id, str(ref.version)),
                user_id=user_id,
                correlation_id=adapter_event_id(user_id, ref.version),
                version=ref.version,
                node_id=self.node_id,
                reason=exc.reason,
                detail=exc.detail[:2000],
            ),
        )

    def _served(self, answer: PersonalizedResponse, generate_s: float, switch_s: float) -> None:
        self.metrics.answers.labels(answer.arm).inc()
        self.metrics.generation_seconds.labels(answer.source).observe(generate_s)
        self.metrics.switch_seconds.observe(switch_s)
        if answer.fallback_reason is not None:
            self.metrics.fallbacks.labels(answer.fallback_reason).inc()
        self._publish(
            self.topics.inference,
            AnswerServed(
                event_id=answer.answer_id,
                answer_id=answer.answer_id,
                user_id=answer.user_id or ANONYMOUS,
                correlation_id=answer.answer_id,
                node_id=self.node_id,
                arm=answer.arm,
                adapter_version=answer.adapter_version,
                fallback_reason=answer.fallback_reason,
                latency_ms=answer.latency_ms,
                completion_tokens=answer.completion_tokens,
            ),
        )

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
            rows.append(
                {
                    "user": user,
                    "version": version,
                    "bytes": info.size,
                    "in_use": info.refs,
                    "pinned": info.pinned,
                    "active": user in info.active_for,
                    "idle_s": round(info.idle_s, 3),
                }
            )
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
        self.scheduler.close()
        self._reporter.shutdown(wait=True)
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        if self.publisher is not None:
            try:
                self.publisher.flush(timeout_s=10.0)
            except PublishError as exc:
                log.error("events not delivered at shutdown: %s", exc)
