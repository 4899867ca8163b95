"""A pair's training_weight weights its loss: the gradient changes with it, exactly as the weights say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.weighted import WEIGHT, weighted_dpo_trainer_class

PAIRS = [
    ("What is 2 plus 2?", "2 plus 2 is 4. Hope this helps!", "2 plus 2 is 4."),
    ("What color is snow?", "Snow is white. Hope this helps!", "Snow is white."),
]


def trainer_for(model_path: Path, tmp_path: Path, loss_type: list[str]) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    records = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
            WEIGHT: 1.0,
        }
        for p, c, r in PAIRS
    ]
    args = DPOConfig(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=64,
        per_device_train_batch_size=2,
        loss_type=loss_type,
        loss_weights=[1.0] * len(loss_type),
        disable_tqdm=True,
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = weighted_dpo_trainer_class()(
        model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer, peft_config=lora
    )
    # LoRA's B starts at zero (so A gets no gradient): give B values, so every LoRA weight has a gradient.
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    trainer.model.train()
    return trainer


def gradient(trainer: Any, indices: list[int], weights: list[float] | None) -> torch.Tensor:
    """The LoRA weights' gradient on a batch of these pairs; ``weights`` None = a batch without weights."""
    examples = []
    for n, i in enumerate(indices):
        row = trainer.train_dataset[i]
        example = {key: row[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
        if weights is not None:
            example[WEIGHT] = weights[n]
        examples.append(example)
    batch = trainer.data_collator(examples)
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad and p.grad is not None])


def test_weights_change_the_gradient_exactly_as_they_say(tiny_model: Path, tmp_path: Path) -> None:
    trainer = trainer_for(tiny_model, tmp_path, ["sigmoid"])
    even = gradient(trainer, [0, 1], [1.0, 1.0])
    assert torch.allclose(even, gradient(trainer, [0, 1], None))  # weight 1 everywhere = plain DPO
    assert float(even.abs().sum()) > 0
    skewed = gradient(trainer, [0, 1], [2.0, 0.0])
    assert not torch.allclose(skewed, even, atol=1e-7)
    # The loss is the batch mean: weights (2, 0) over two pairs give the gradient of the first pair alone.
    assert torch.allclose(skewed, gradient(trainer, [0], [1.0]), rtol=1e-4, atol=1e-7)
    # ... and weights add up linearly: (0.5, 1.5) = 0.25 * (2, 0) + 0.75 * (0, 2).
    other = gradient(trainer, [0, 1], [0.0, 2.0])
    assert torch.allclose(gradient(trainer, [0, 1], [0.5, 1.5]), 0.25 * skewed + 0.75 * other, rtol=1e-4, atol=1e-7)


def test_the_sft_term_is_weighted_too(tiny_model: Path, tmp_path: Path) -> None:
    trainer = trainer_for(tiny_model, tmp_path, ["sigmoid", "sft"])
    even = gradient(trainer, [0, 1], [1.0, 1.0])
    assert torch.allclose(even, gradient(trainer, [0, 1], None))
    zero = gradient(trainer, [0, 1], [0.0, 0.0])
    assert float(zero.abs().max()) == 0.0  # no weight, no gradient, whatever the loss terms
    assert not torch.allclose(gradient(trainer, [0, 1], [0.1, 1.9]), even, atol=1e-7)
