"""Per-pair loss weights for TRL's DPOTrainer: the one door to TRL's DPO internals.

TRL's ``DPOTrainer`` (checked against trl 1.16.0) has no per-example weight. ``WeightedDPOTrainer``
adds one without copying TRL's loss code: each batch carries the pairs' ``training_weight``, and the
policy forward that ``DPOTrainer._compute_loss`` makes through its ``model`` argument is wrapped so
that the gradient flowing into pair i's per-token log-probabilities is multiplied by w_i (the
forward values are untouched). Every DPO loss TRL computes per pair (``sigmoid``, ``ipo``, ...)
then has the gradient of sum_i w_i * loss_i / n, and the ``sft`` term that of the chosen tokens
weighted by their pair's weight. Logged losses stay unweighted. The reference forward (the base
model under ``no_grad``) is not touched.

This relies on two facts of TRL 1.16 (``tests/unit/test_weighted_dpo.py`` fails when either
changes): ``_compute_loss`` runs the policy through the ``model`` it is given, and that call returns
an output whose ``log_probs`` rows are ``[chosen..., rejected...]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WEIGHT = "training_weight"


def _scale_grad() -> Any:
    import torch

    class ScaleGrad(torch.autograd.Function):
        """Identity forward; the backward multiplies the gradient by ``scale`` (broadcast)."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(scale)
            return x.view_as(x)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            (scale,) = ctx.saved_tensors
            return grad * scale, None

    return ScaleGrad


class _WeightedForward:
    """Calls the policy and scales the gradient of each row's log-probabilities by its pair's weight."""

    def __init__(self, model: Any, row_weights: Any) -> None:
        self._model = model
        self._weights = row_weights

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self._model(*args, **kwargs)
        if getattr(outputs, "log_probs", None) is None:
            raise RuntimeError(
                "WeightedDPOTrainer: the policy forward returned no log_probs; the TRL version "
                "differs from the one trainer/weighted.py was checked against (trl 1.16)"
            )
        scale = self._weights.to(outputs.log_probs.dtype).unsqueeze(-1)
        outputs.log_probs = _scale_grad().apply(outputs.log_probs, scale)
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class WeightCollator:
    """Wraps TRL's preference collator: the batch also carries each pair's weight (1.0 when absent)."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        weights = [float(e.get(WEIGHT, 1.0)) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != WEIGHT} for e in examples])
        batch[WEIGHT] = torch.tensor(weights, dtype=torch.float32)
        return batch


def weighted_dpo_trainer_class() -> type:
    """``DPOTrainer`` with per-pair weights (imported lazily: TRL is heavy)."""
    import torch
    from trl import DPOTrainer

    class WeightedDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator = WeightCollator(self.data_collator)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and WEIGHT not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, WEIGHT]

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            weights = inputs.pop(WEIGHT, None)
            if weights is None or not torch.is_grad_enabled() or bool(torch.all(weights == 1.0)):
                return super()._compute_loss(model, inputs, return_outputs)
            rows = torch.cat([weights, weights]).to(inputs["input_ids"].device)  # the batch is [chosen, rejected]
            return super()._compute_loss(_WeightedForward(model, rows), inputs, return_outputs)

    return WeightedDPOTrainer
