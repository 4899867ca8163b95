"""What transformers' GGUF loader gets wrong, corrected after loading (checked against transformers 5.17.0).

1. The tokenizer's special tokens. ``GGUFLlamaConverter.tokenizer`` (transformers/integrations/ggml.py)
   reads ``eos_token = proto.tokens[proto.bos_token_id]`` and then swaps bos and eos in its kwargs, so a
   tokenizer loaded from a GGUF whose bos and eos differ has ``eos_token == bos_token``. Generation then
   never stops at the real end of turn, and TRL appends the wrong token to every training answer. We set
   bos/eos/pad/unk from the GGUF's own ``tokenizer.ggml.*_token_id`` fields.
2. ``clean_up_tokenization_spaces`` comes out true for a byte-level BPE (transformers warns on every
   decode and ignores it); we save it false.
3. A model loaded from a GGUF refuses ``save_pretrained`` ("quantized with QuantizationMethod.GGUF and is
   not serializable") although its weights are already dequantized: ``rebuilt_without_quantizer`` makes
   the same model from its config minus ``quantization_config`` and moves the weights over.

``tests/unit/test_gguf_import.py::test_transformers_still_swaps_gguf_special_tokens`` fails once
transformers fixes (1); then this correction can go.
"""

from __future__ import annotations

from typing import Any

from infra.errors import UnsupportedModelError


def correct_special_tokens(tokenizer: Any, special_tokens: dict[str, str], max_length: int) -> None:
    """Set the special tokens the GGUF declares (role -> token text) and a sane decode/length setup."""
    for role, token in special_tokens.items():
        setattr(tokenizer, f"{role}_token", token)
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = max_length


def rebuilt_without_quantizer(loaded: Any) -> Any:
    """The same weights in a plain model of the same class, which ``save_pretrained`` accepts.

    For saving only: it is built on the meta device, so its non-persistent buffers (the rotary
    frequencies) are not materialized; reload the saved directory to run it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    data = loaded.config.to_dict()
    data.pop("quantization_config", None)
    config = type(loaded.config).from_dict(data)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    result = fresh.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise UnsupportedModelError(
            "the converted weights do not fit the model built from their config: missing "
            f"{list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.eval()
    return fresh
