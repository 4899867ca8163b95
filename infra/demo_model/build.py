"""Build a small Llama-architecture chat model and its tokenizer locally: no downloads.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the synthetic corpus, with a chat
template. The model is pre-trained on that corpus (a few CPU minutes for the demo preset, a few
seconds for the test preset) and saved with ``save_pretrained``, so everything loads it through
``from_pretrained(path)`` exactly as it would load a real model id.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.demo_model.corpus import Fact, tokenizer_corpus, training_examples

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% elif m['role'] == 'system' %}{{ m['content'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    examples: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int = 0


PRESETS = {
    # Readable answers: every fact of the corpus right after ~5 CPU minutes.
    "demo-chat": Preset(
        "demo-chat", 1024, 192, 4, 4, 512, examples=40_000, epochs=1, batch_size=32, learning_rate=3e-3
    ),
    # For tests: seconds to build, answers are not meant to be read.
    "tiny": Preset("tiny", 512, 64, 2, 4, 128, examples=2_000, epochs=1, batch_size=32, learning_rate=3e-3),
}

ProgressFn = Callable[[int, int, float], None]


def build_model(
    out_dir: Path,
    preset: str = "demo-chat",
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Build (once) the preset's model and tokenizer under ``out_dir``; returns the directory."""
    spec = PRESETS[preset]
    out_dir = Path(out_dir)
    marker = out_dir / "samtuner-build.json"
    if marker.exists() and not force:
        recorded = json.loads(marker.read_text())
        if recorded.get("preset") == asdict(spec):
            return out_dir
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    tokenizer = _build_tokenizer(spec)
    tokenizer.save_pretrained(tmp)
    model = _build_and_pretrain(spec, tokenizer, progress)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "samtuner-build.json").write_text(
        json.dumps({"preset": asdict(spec), "build_seconds": round(time.monotonic() - started, 1)}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def _build_tokenizer(spec: Preset):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _encode(tokenizer, fact: Fact) -> tuple[list[int], int]:  # type: ignore[no-untyped-def]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": fact.question}], add_generation_prompt=True, tokenize=False
    )
    full = prompt + fact.answer + tokenizer.eos_token
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return ids, prompt_len


def _build_and_pretrain(spec: Preset, tokenizer, progress: ProgressFn | None):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    examples = training_examples(spec.examples, seed=spec.seed)
    encoded = [_encode(tokenizer, fact) for fact in examples]
    steps = math.ceil(len(encoded) / spec.batch_size) * spec.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(spec.seed)
    model.train()
    step = 0
    for _ in range(spec.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), spec.batch_size):
            batch = [encoded[i] for i in order[start : start + spec.batch_size]]
            input_ids, labels, mask = _collate(batch, tokenizer.pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress is not None:
                progress(step, steps, loss.item())
    model.eval()
    return model


def _collate(batch: list[tuple[list[int], int]], pad_id: int):  # type: ignore[no-untyped-def]
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        # Loss on the answer only: the model learns to answer, not to ask.
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return input_ids, labels, mask
