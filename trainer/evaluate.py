"""Held-out preference accuracy: does the adapter's implicit DPO reward prefer the chosen answer?

The implicit reward of a completion y is ``beta * (log pi(y|x) - log pi_ref(y|x))``, where pi is the
model with the adapter and pi_ref the same model with the adapter disabled. A pair counts as
preferred when the chosen answer's reward beats the rejected one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
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


def preference_metrics(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], beta: float,
                       reference: Any | None = None) -> dict[str, float]:
    """Accuracy and mean margin of the implicit reward on ``rows``.

    ``reference`` is a context manager factory that disables the adapter (``model.disable_adapter``);
    without it, the reference log-probs are taken as zero (absolute preference).
    """
    if not rows:
        return {}
    prompts = [r["prompt"] for r in rows]
    chosen = [r["chosen_response"] for r in rows]
    rejected = [r["rejected_response"] for r in rows]
    pol_c = completion_logps(model, tokenizer, prompts, chosen)
    pol_r = completion_logps(model, tokenizer, prompts, rejected)
    ctx = reference if reference is not None else nullcontext
    with ctx():
        if reference is not None:
            ref_c = completion_logps(model, tokenizer, prompts, chosen)
            ref_r = completion_logps(model, tokenizer, prompts, rejected)
        else:
            ref_c = [0.0] * len(rows)
            ref_r = [0.0] * len(rows)
    margins = [beta * ((pc - rc) - (pr - rr)) for pc, rc, pr, rr in zip(pol_c, ref_c, pol_r, ref_r, strict=True)]
    return {
        "heldout_pref_accuracy": sum(m > 0 for m in margins) / len(margins),
        "heldout_reward_margin": sum(margins) / len(margins),
        "heldout_pairs": float(len(margins)),
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
