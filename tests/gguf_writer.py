"""Write a Llama GGUF of a local Hugging Face model with the ``gguf`` library, as llama.cpp's
``convert_hf_to_gguf.py`` does: its tensor names, q/k rows permuted for its rotary layout, the
tokenizer as a 'gpt2' (byte-level BPE) vocabulary with merges. Tests import what it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TENSOR_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_TENSOR_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in TENSOR_NAMES:
        return TENSOR_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.N.<rest>
    return f"blk.{layer}.{LAYER_TENSOR_NAMES[rest]}"


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def quantized_roundtrip(weights: np.ndarray, quant: str) -> np.ndarray:
    """What a reader dequantizes from ``weights`` written as ``quant`` (F32: the weights themselves)."""
    from gguf import GGMLQuantizationType, dequantize, quantize

    if quant == "F32" or weights.ndim != 2:
        return weights
    qtype = GGMLQuantizationType[quant]
    return dequantize(quantize(weights, qtype), qtype).reshape(weights.shape)


def write_llama_gguf(model_dir: Path, out: Path, quant: str = "F32", architecture: str = "llama") -> Path:
    """``model_dir`` (a LlamaForCausalLM with its tokenizer) as a GGUF; 2-D weights in ``quant``."""
    import gguf
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    kv_heads, rope = cfg.num_key_value_heads, cfg.rope_parameters
    assert kv_heads is not None and rope is not None, "the tiny model's config names its KV heads and RoPE"
    writer = gguf.GGUFWriter(out, architecture)
    writer.add_name("samtuner test model")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(rope["rope_theta"]))  # type: ignore[arg-type]
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "F32" else gguf.LlamaFileType.MOSTLY_Q4_1)
    _add_tokenizer(writer, tokenizer, model_dir)
    for hf_name, tensor in model.state_dict().items():
        data = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute(data, cfg.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute(data, kv_heads)
        if quant != "F32" and data.ndim == 2:
            qtype = gguf.GGMLQuantizationType[quant]
            writer.add_tensor(gguf_name(hf_name), gguf.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name(hf_name), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add_tokenizer(writer: Any, tokenizer: Any, model_dir: Path) -> None:
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)
