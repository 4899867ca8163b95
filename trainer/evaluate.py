"""Held-out preference metrics of a model, and greedy answers, for the gate and the benchmarks.

Two families, both on the user's held-out pairs (prompt x, chosen y_c, rejected y_r):

* **Implicit reward** (DPO's own): r(y) = beta * (log pi(y|x) - log pi_base(y|x)).
  ``heldout_pref_accuracy`` is the share of pairs with r(y_c) > r(y_r), ``heldout_reward_margin``
  the mean r(y_c) - r(y_r). It says how far training moved the model towards the user's choices;
  the base model's reward is 0 for every answer.
* **Policy preference**: does the model itself find the chosen answer more likely?
  ``heldout_policy_accuracy`` is the share of pairs with log pi(y_c|x) > log pi(y_r|x),
  ``heldout_policy_margin`` the mean difference. This is what the model will say, so it is what
  the gate compares across models (the new adapter, the previous one, the base model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def completion_logps(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
                     batch_size: int = 16) -> list[float]:
    """Sum of log-probabilities of each completion (plus end-of-turn) after its chat-formatted prompt."""
    import torch

    out: list[float] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        seqs, starts = [], []
        for prompt, completion in zip(prompts[start:start + batch_size], completions[start:start + batch_size],
                                      strict=True):
            head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=False)
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
            out.append(float(token_lp[i, starts[i] - 1 : len(s) - 1].sum()))
    return out


@dataclass(frozen=True)
class PairLogps:
    """Summed log-probabilities of the chosen and the rejected answers of each pair under one model."""

    chosen: list[float]
    rejected: list[float]


def pair_logps(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]]) -> PairLogps:
    prompts = [r["prompt"] for r in rows]
    return PairLogps(completion_logps(model, tokenizer, prompts, [r["chosen_response"] for r in rows]),
                     completion_logps(model, tokenizer, prompts, [r["rejected_response"] for r in rows]))


def heldout_metrics(policy: PairLogps, base: PairLogps, beta: float) -> dict[str, float]:
    """Both metric families for ``policy``, with ``base`` as the implicit reward's reference."""
    n = len(policy.chosen)
    if n == 0:
        return {"heldout_pairs": 0.0, "heldout_pref_accuracy": 0.0, "heldout_reward_margin": 0.0,
                "heldout_policy_accuracy": 0.0, "heldout_policy_margin": 0.0}
    rewards = [beta * ((pc - bc) - (pr - br))
               for pc, pr, bc, br in zip(policy.chosen, policy.rejected, base.chosen, base.rejected, strict=True)]
    own = [pc - pr for pc, pr in zip(policy.chosen, policy.rejected, strict=True)]
    return {
        "heldout_pairs": float(n),
        "heldout_pref_accuracy": sum(r > 0 for r in rewards) / n,
        "heldout_reward_margin": sum(rewards) / n,
        "heldout_policy_accuracy": sum(d > 0 for d in own) / n,
        "heldout_policy_margin": sum(own) / n,
    }


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers to ``prompts`` (chat-formatted), in batches with left padding."""
    import torch

    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                   tokenize=False) for p in chunk]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            width = inputs["input_ids"].shape[1]
            answers += [str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]
    finally:
        tokenizer.padding_side = side
    return answers
