"""Held-out preference metrics of a model, and greedy answers, for the gate and the benchmarks.

Two families, both on the user's held-out pairs (prompt x, chosen y_c, rejected y_r), which neither
training nor the choice of the checkpoint saw (trainer/dataset.py):

* **Policy preference**: does the model itself find the chosen answer more likely? Compared per
  token: the mean log-probability of an answer's tokens, log pi(y|x) / |y|. A summed log-probability
  favours the shorter answer by construction (every extra token costs probability), and the usual
  correction is longer than the answer it corrects (a sign-off, a caveat, a step); per token, the
  question is how natural each answer is to the model, whatever its length.
  ``heldout_policy_accuracy`` is the share of pairs with a higher mean log-probability for y_c,
  ``heldout_policy_margin`` the mean difference (nats per token). What the gate compares across
  models (the new adapter, the previous one, the base model). ``heldout_policy_accuracy_summed`` and
  ``heldout_policy_margin_summed`` are the same on summed log-probabilities: reported, not gated on.
* **Implicit reward** (DPO's own): r(y) = beta * (log pi(y|x) - log pi_base(y|x)), summed.
  ``heldout_pref_accuracy`` is the share of pairs with r(y_c) > r(y_r), ``heldout_reward_margin``
  the mean r(y_c) - r(y_r). It says how far training moved the model towards the user's choices;
  the base model's reward is 0 for every answer. Reported, not gated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scored:
    """The summed log-probability of one completion (end-of-turn included) and its number of tokens."""

    logp: float
    tokens: int

    @property
    def per_token(self) -> float:
        return self.logp / max(self.tokens, 1)


def completion_scores(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 16
) -> list[Scored]:
    """Log-probability and token count of each completion (plus end-of-turn) after its chat-formatted prompt."""
    import torch

    out: list[Scored] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        seqs, starts = [], []
        for prompt, completion in zip(
            prompts[start : start + batch_size], completions[start : start + batch_size], strict=True
        ):
            head = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            p_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
            c_ids = tokenizer(completion + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
            seqs.append(p_ids + c_ids)
            starts.append(len(p_ids))
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(device)
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for i, s in enumerate(seqs):
            out.append(Scored(float(token_lp[i, starts[i] - 1 : len(s) - 1].sum()), len(s) - starts[i]))
    return out


@dataclass(frozen=True)
class PairLogps:
    """The chosen and the rejected answers of each pair, scored under one model."""

    chosen: list[Scored]
    rejected: list[Scored]


def pair_logps(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]]) -> PairLogps:
    prompts = [r["prompt"] for r in rows]
    return PairLogps(
        completion_scores(model, tokenizer, prompts, [r["chosen_response"] for r in rows]),
        completion_scores(model, tokenizer, prompts, [r["rejected_response"] for r in rows]),
    )


HELDOUT_KEYS = (
    "heldout_pairs",
    "heldout_policy_accuracy",
    "heldout_policy_margin",
    "heldout_policy_accuracy_summed",
    "heldout_policy_margin_summed",
    "heldout_pref_accuracy",
    "heldout_reward_margin",
)


def heldout_metrics(policy: PairLogps, base: PairLogps, beta: float) -> dict[str, float]:
    """Both metric families for ``policy``, with ``base`` as the implicit reward's reference."""
    n = len(policy.chosen)
    if n == 0:
        return dict.fromkeys(HELDOUT_KEYS, 0.0)
    pairs = list(zip(policy.chosen, policy.rejected, base.chosen, base.rejected, strict=True))
    rewards = [beta * ((pc.logp - bc.logp) - (pr.logp - br.logp)) for pc, pr, bc, br in pairs]
    per_token = [pc.per_token - pr.per_token for pc, pr, _, _ in pairs]
    summed = [pc.logp - pr.logp for pc, pr, _, _ in pairs]
    return {
        "heldout_pairs": float(n),
        "heldout_policy_accuracy": round(sum(d > 0 for d in per_token) / n, 4),
        "heldout_policy_margin": round(sum(per_token) / n, 5),
        "heldout_policy_accuracy_summed": round(sum(d > 0 for d in summed) / n, 4),
        "heldout_policy_margin_summed": round(sum(summed) / n, 4),
        "heldout_pref_accuracy": round(sum(r > 0 for r in rewards) / n, 4),
        "heldout_reward_margin": round(sum(rewards) / n, 4),
    }


def generate_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy answers to ``prompts`` (chat-formatted), in batches with left padding."""
    import torch

    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
                for p in chunk
            ]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            width = inputs["input_ids"].shape[1]
            answers += [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]
    finally:
        tokenizer.padding_side = side
    return answers


EXAMPLE_KEYS = ("heldout_examples", "heldout_label_accuracy", "heldout_label_margin")


def example_scores(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[Scored]:
    """Labelled examples (prompt, response), scored under one model."""
    return completion_scores(model, tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows])


def example_metrics(policy: Sequence[Scored], base: Sequence[Scored], desirable: Sequence[bool]) -> dict[str, float]:
    """For held-out labelled examples (thumbs up/down, no pair): did the model move the way the label says?

    The move is the change of the response's mean per-token log-probability against the base model:
    up for a thumbs up, down for a thumbs down. ``heldout_label_accuracy`` is the share of examples
    moved the right way (the base model moves nothing: 0), ``heldout_label_margin`` the mean signed
    move (nats per token). What the gate compares when a job has held-out examples and no pairs.
    """
    n = len(policy)
    if n == 0:
        return dict.fromkeys(EXAMPLE_KEYS, 0.0)
    signed = [
        (p.per_token - b.per_token) * (1.0 if good else -1.0)
        for p, b, good in zip(policy, base, desirable, strict=True)
    ]
    return {
        "heldout_examples": float(n),
        "heldout_label_accuracy": round(sum(s > 0 for s in signed) / n, 4),
        "heldout_label_margin": round(sum(signed) / n, 5),
    }
