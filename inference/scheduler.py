"""Continuous batching: one thread owns the model and decodes every running request together, one row each.

A request (a :class:`Job`: prompt ids, the adapter its lease holds, limits) waits in a bounded queue.
Between two decode steps the scheduler admits waiting jobs while rows are free: each prompt is
prefilled alone (its own adapter bound to the only row), its first token sent at once, and its KV cache
joins the running batch (:mod:`inference.kv`). Each decode step is then one forward pass for every
row, each row with its own user's adapter (:meth:`inference.lora.LoRARuntime.bind_rows`), or the one
adapter of a batch that has only one. A row ends at a stop token, at its ``max_new_tokens``, at its
deadline, or when its caller cancels; it leaves the batch before the next step, and the job's
``on_end`` is called exactly once, whatever happened (the node releases the lease and reports there).

Failures: an exception in a prefill fails that job only; one in a decode step fails the rows of that
step (GenerationError, with the cause), the batch is cleared, and the scheduler keeps serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from inference.errors import GenerationError, NodeClosed, QueueFull, RequestTimedOut
from inference.generator import Detokenizer
from inference.kv import BatchCache, check_supported, left_padded
from inference.lora import LoRARuntime, LoRAWeights
from inference.pending import PendingAnswer
from inference.sampling import Sampling, next_tokens

log = logging.getLogger("samtuner.inference.scheduler")

EndReason = Literal["stop", "length", "timeout", "cancelled", "error"]
MERGE_AFTER_STEPS = 4  # merged mode: decode steps a one-adapter batch runs unmerged before it is merged ...
MERGE_MIN_TOKENS_LEFT = 32  # ... if its longest row may still generate this many tokens


@dataclass(eq=False)
class Job:
    """One request in the scheduler: what to generate, for whom, until when, and where it goes."""

    answer_id: uuid.UUID
    prompt: list[int]
    weights: LoRAWeights | None
    max_new_tokens: int
    min_new_tokens: int
    sampling: Sampling
    deadline: float  # time.monotonic()
    pending: PendingAnswer
    on_end: Callable[[Job, EndReason, BaseException | None], None]
    detokenizer: Detokenizer | None = None  # set for streamed answers
    submitted: float = field(default_factory=time.monotonic)  # arrival at the node (time.monotonic)
    tokens: list[int] = field(default_factory=list)
    admitted: float | None = None
    first_token: float | None = None
    bind_s: float = 0.0
    generator: torch.Generator | None = None
    taken: bool = False
    ended: EndReason | None = None


@dataclass(frozen=True)
class SchedulerStats:
    queued: int
    running: int
    steps: int  # decode steps (forward passes over the batch)
    rows_stepped: int  # sum of the rows of every decode step: / steps = the mean batch
    peak_rows: int
    admitted: int
    max_rows: int
    max_queue: int


class Scheduler:
    def __init__(
        self,
        model: Any,
        runtime: LoRARuntime,
        stop_ids: frozenset[int],
        max_rows: int,
        max_queue: int,
        pad_id: int = 0,
        prefill_tokens: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_supported(model)
        self.model = model
        self.runtime = runtime
        self.stop_ids = stop_ids
        self._stop_index = torch.tensor(sorted(stop_ids), dtype=torch.long)
        self.max_rows = max_rows
        self.max_queue = max_queue
        self._clock = clock
        self._device = next(model.parameters()).device
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._taken = 0  # jobs popped from the queue and not ended yet (being prefilled, or rows)
        self._closing = False
        self._rows: list[Job] = []  # the scheduler thread's own
        self.pad_id = pad_id
        self.prefill_tokens = prefill_tokens
        self._bound_rows: tuple[int, ...] | None = None  # the rows (adapter ids) the model is bound for
        self._bound_one = False  # ... with one adapter for all of them (not slots)
        self._merged = False  # ... merged into the weights
        self._same_steps = 0  # decode steps since the binding last changed
        self._kv = BatchCache(model.config)
        self._answer_s = 1.0  # moving average of a row's time in the batch, for Retry-After
        self.steps = 0
        self.rows_stepped = 0
        self.peak_rows = 0
        self.admitted = 0
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    # -- callers -------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFull when every row and every queue place is taken, NodeClosed when closing."""
        with self._cond:
            if self._closing:
                raise NodeClosed("the node is shutting down")
            if len(self._queue) + self._taken >= self.max_rows + self.max_queue:
                raise QueueFull(
                    f"the node is busy: {self._taken} requests generating and {len(self._queue)} "
                    f"waiting, the most inference.limits.max_queue ({self.max_queue}) allows; retry "
                    "later",
                    retry_after_s=self._retry_after(),
                )
            self._queue.append(job)
            self._cond.notify_all()

    def _retry_after(self) -> int:  # with the condition held
        waves = (len(self._queue) + 1) / max(self.max_rows, 1)
        return max(1, math.ceil(self._answer_s * waves))

    @property
    def closing(self) -> bool:
        with self._cond:
            return self._closing

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(
                len(self._queue),
                self._taken,
                self.steps,
                self.rows_stepped,
                self.peak_rows,
                self.admitted,
                self.max_rows,
                self.max_queue,
            )

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests; fail those still queued or running (NodeClosed) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.error("the scheduler did not stop within %.0f s", timeout_s)

    # -- the scheduler thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._queue and not self._rows:
                    self._cond.wait()
                if self._closing:
                    break
            try:
                self._admit()
                if self._rows:
                    self._step()
            except Exception as exc:  # a torch failure or a bug: the rows fail with the cause, serving goes on
                log.exception("a decode step failed; its %d rows fail", len(self._rows))
                self._drop_all(GenerationError(f"generation failed: {type(exc).__name__}: {exc}"))
        closed = NodeClosed("the node shut down before this request was answered")
        self._drop_all(closed)
        with self._cond:
            queued, self._queue = list(self._queue), deque()
        for job in queued:
            self._end(job, "error", closed)

    def _admit(self) -> None:
        """Prefill the waiting jobs that fit (rows free, padded prompt tokens in the budget) in one pass."""
        joiners: list[Job] = []
        longest = 0
        while len(self._rows) + len(joiners) < self.max_rows:
            with self._cond:
                if not self._queue or self._closing:
                    break
                job = self._queue[0]
                width = max(longest, len(job.prompt))
                if joiners and width * (len(joiners) + 1) > self.prefill_tokens:
                    break  # the next round takes it
                self._queue.popleft()
                self._taken += 1
                job.taken = True
            now = self._clock()
            if job.pending.cancelled.is_set():
                self._end(job, "cancelled")
            elif now > job.deadline:
                self._end(
                    job,
                    "error",
                    RequestTimedOut(
                        f"the request waited {now - job.submitted:.1f} s for a batch row and ran out of time "
                        f"(inference.limits.request_timeout_s = {job.deadline - job.submitted:g})"
                    ),
                )
            else:
                joiners.append(job)
                longest = width
        if joiners:
            self._prefill(joiners)

    def _prefill(self, joiners: list[Job]) -> None:
        """Run the joiners' prompts together, each row with its own adapter; their first tokens; then they join."""
        now = self._clock()
        for job in joiners:
            job.admitted = now
        self.admitted += len(joiners)
        rows = [r.weights for r in self._rows] + [j.weights for j in joiners]
        windowed = False
        try:
            started = time.perf_counter()
            self._bind(rows)
            if not self._bound_one:
                self.runtime.window(len(self._rows), len(rows))
                windowed = True
            bind_s = time.perf_counter() - started
            ids, mask, positions = left_padded([j.prompt for j in joiners], self.pad_id)
            with torch.no_grad():
                out = self.model(
                    input_ids=ids.to(self._device),
                    attention_mask=mask.to(self._device),
                    position_ids=positions.to(self._device),
                    use_cache=True,
                    logits_to_keep=1,
                )
            chosen = next_tokens(
                self._allowed(out.logits[:, -1], joiners), [j.sampling for j in joiners], [j.generator for j in joiners]
            )
        except Exception as exc:
            log.exception("prefill failed for %d requests", len(joiners))
            self._bound_rows = None
            for job in joiners:
                self._end(job, "error", GenerationError(f"generation failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            if windowed:
                self.runtime.window(0, len(rows))
        now = self._clock()
        keep: list[int] = []
        for i, (job, token) in enumerate(zip(joiners, chosen, strict=True)):
            job.bind_s = bind_s
            job.first_token = now
            reason = self._emit(job, token)
            if reason is None:
                keep.append(i)
            else:
                self._end(job, reason)
        self._kv.join(out.past_key_values, mask, keep)
        self._rows.extend(joiners[i] for i in keep)

    def _bind(self, rows: list[LoRAWeights | None], tokens_left: int = 0) -> None:
        """One adapter for the whole batch when every row has the same, else one per row.

        In merged mode a one-adapter batch starts unmerged (a switch costs attribute writes, not a merge) and is
        merged once it kept the same rows for ``MERGE_AFTER_STEPS`` decode steps and may still generate
        ``MERGE_MIN_TOKENS_LEFT`` tokens: a merge costs about one decode step on SmolLM2 and saves a few percent
        per token, so only long answers gain from it."""
        key = tuple(id(w) for w in rows)
        if key == self._bound_rows:
            if (
                self._bound_one
                and not self._merged
                and self._same_steps >= MERGE_AFTER_STEPS
                and tokens_left >= MERGE_MIN_TOKENS_LEFT
                and self.runtime.mode == "merged"
                and rows[0] is not None
            ):
                self.runtime.bind(rows[0], merge=True)
                self._merged = True
            return
        first = rows[0]
        self._bound_one = all(w is first for w in rows)
        if self._bound_one:
            self.runtime.bind(first, merge=False)
        else:
            self.runtime.bind_rows(rows)
        self._bound_rows = key
        self._merged = False
        self._same_steps = 0

    def _step(self) -> None:
        rows = self._rows
        self._bind([r.weights for r in rows], max(r.max_new_tokens - len(r.tokens) for r in rows))
        mask, positions = self._kv.step_inputs()
        ids = torch.tensor([[r.tokens[-1]] for r in rows], device=self._device)
        with torch.no_grad():
            out = self.model(
                input_ids=ids,
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                past_key_values=self._kv.cache,
                use_cache=True,
            )
        self._kv.cache = out.past_key_values
        self._kv.advanced()
        self.steps += 1
        self._same_steps += 1
        self.rows_stepped += len(rows)
        self.peak_rows = max(self.peak_rows, len(rows))
        chosen = next_tokens(
            self._allowed(out.logits[:, -1], rows), [r.sampling for r in rows], [r.generator for r in rows]
        )
        now = self._clock()
        ended: dict[int, EndReason] = {}
        for i, (job, token) in enumerate(zip(rows, chosen, strict=True)):
            reason = self._emit(job, token)
            if reason is None and job.pending.cancelled.is_set():
                reason = "cancelled"
            if reason is None and now > job.deadline:
                reason = "timeout"
            if reason is not None:
                ended[i] = reason
        if ended:
            self._leave(ended)

    def _allowed(self, logits: torch.Tensor, rows: list[Job]) -> torch.Tensor:
        """Stop tokens cannot be chosen by rows that have not reached their ``min_new_tokens`` (as transformers)."""
        early = [i for i, job in enumerate(rows) if len(job.tokens) < job.min_new_tokens]
        if early and self._stop_index.numel():
            logits = logits.clone()
            rows_index = torch.tensor(early, device=logits.device)[:, None]
            logits[rows_index, self._stop_index.to(logits.device)[None, :]] = float("-inf")
        return logits

    def _emit(self, job: Job, token: int) -> EndReason | None:
        """Record the row's new token, stream its text; the reason the row ends, if it does."""
        job.tokens.append(token)
        if token in self.stop_ids:
            return "stop"
        if job.detokenizer is not None:
            job.pending.push(job.detokenizer.push(token))
        if len(job.tokens) >= job.max_new_tokens:
            return "length"
        return None

    def _leave(self, ended: dict[int, EndReason]) -> None:
        """Drop the ended rows; rows past the survivors' count move into the holes (few slots rewritten)."""
        rows = self._rows
        survivors = len(rows) - len(ended)
        movers = [i for i in range(survivors, len(rows)) if i not in ended]
        order = [i if i not in ended else movers.pop() for i in range(survivors)]
        self._kv.keep(order)
        self._rows = [rows[i] for i in order]
        for i, reason in ended.items():
            self._end(rows[i], reason)

    def _drop_all(self, error: BaseException) -> None:
        rows, self._rows = self._rows, []
        self._kv.clear()
        self._bound_rows = None
        for job in rows:
            self._end(job, "error", error)

    def _end(self, job: Job, reason: EndReason, error: BaseException | None = None) -> None:
        if job.ended is not None:
            return
        job.ended = reason
        if job.taken:
            with self._cond:
                self._taken -= 1
        if job.admitted is not None:
            spent = self._clock() - job.admitted
            self._answer_s = 0.8 * self._answer_s + 0.2 * spent
        try:
            job.on_end(job, reason, error)
        except Exception:  # the caller's hook must never stop the scheduler
            log.exception("on_end failed for answer %s", job.answer_id)
            job.pending.fail(GenerationError("the node failed to finish this answer"))
