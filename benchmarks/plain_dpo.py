"""A plain TRL ``DPOTrainer`` run: the baseline for the trainer benchmark's time per optimizer step.

usage: python benchmarks/plain_dpo.py SETTINGS.json

SETTINGS holds the model path, the training records, the resolved DPOConfig values, the LoRA
settings and the seed, exactly as the trainer's job used them, and optionally ``save_to``: where
the adapter is saved (safetensors), as a plain script would. Prints one JSON line:
``{"median_step_s": ..., "steps": ...}``. Step time is measured the same way as in the job: the time
between two consecutive ``on_step_begin`` callbacks.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(path: str) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    settings: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    starts: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            starts.append(time.perf_counter())

    torch.manual_seed(settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
    lora = settings["lora"]
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            seed=settings["seed"],
            **settings["dpo"],
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(settings["records"]),
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=list(lora["target_modules"]),
                bias="none",
                task_type="CAUSAL_LM",
            ),
            callbacks=[Timer()],
        )
        output = trainer.train()
        if settings.get("save_to"):
            trainer.model.save_pretrained(settings["save_to"], safe_serialization=True)
    steps = [b - a for a, b in itertools.pairwise(starts)]
    print(json.dumps({"median_step_s": round(statistics.median(steps), 5), "steps": output.global_step}))


if __name__ == "__main__":
    main(sys.argv[1])
