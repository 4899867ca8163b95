"""Text generation with the shared base model (whatever adapter is bound): chat template in, text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inference.errors import GenerationError

GENERATION_OPTIONS = ("max_new_tokens", "temperature", "top_p")


class Generator:
    def __init__(self, model: Any, tokenizer: Any, default_max_new_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.default_max_new_tokens = default_max_new_tokens
        self._device = next(model.parameters()).device

    def complete(self, messages: Sequence[Mapping[str, str]], max_new_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None) -> tuple[str, int, int]:
        """(answer text, tokens generated, prompt tokens). Greedy unless ``temperature`` > 0."""
        import torch

        options: dict[str, Any] = {"max_new_tokens": max_new_tokens or self.default_max_new_tokens,
                                   "pad_token_id": self.tokenizer.pad_token_id, "do_sample": False}
        if temperature is not None and temperature > 0:
            options.update(do_sample=True, temperature=float(temperature))
            if top_p is not None:
                options["top_p"] = float(top_p)
        try:
            inputs = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True)
            inputs = {k: v.to(self._device) for k, v in inputs.items()}
            with torch.no_grad():
                out = self.model.generate(**inputs, **options)
            prompt_tokens = int(inputs["input_ids"].shape[1])
            new_tokens = out[0][prompt_tokens:]
            text = str(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
            return text, int(new_tokens.shape[0]), prompt_tokens
        except Exception as exc:  # torch/transformers errors of every kind: translated once, here
            raise GenerationError(f"generation failed: {type(exc).__name__}: {exc}") from exc
