#!/usr/bin/env python3
"""Writes a small Llama-shaped Hugging Face model folder with random weights for the end-to-end
training check (scripts/gpu-train-check): config.json, model.safetensors, the byte-level BPE
tokenizer of Frugal's tokenizer fixtures (1000 tokens) and a tokenizer_config.json with a chat
template — a real folder in the format users download, small enough to make anywhere.

    python3 scripts/make_train_check_model.py OUT_FOLDER [--shape llama2-7b|opt-350m]

With --shape the folder holds one of the seeds' models' shapes instead: llama2-7b (32 layers of
4096, MLP 11008, 32 heads, vocabulary 32000; bf16, 13.5 GB) or opt-350m (DeepSpeed-Chat's: 24
post-norm layers of 1024, 512-wide embeddings projected in and out, vocabulary 50272; f32),
initialized on the GPU when there is one. The tokenizer stays the small one (its 1000 tokens
index the first rows of the embedding).
"""
import json
import os
import shutil
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "Tests", "FrugalFormatsTests", "Fixtures", "tokenizers", "bytelevel_llama3.json")
# Llama 3's chat format (Frugal knows a template by its markers).
TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
            "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def main() -> None:
    folder = sys.argv[1]
    shape = sys.argv[3] if sys.argv[2:3] == ["--shape"] and len(sys.argv) == 4 else None
    if len(sys.argv) > 2 and shape not in ("llama2-7b", "opt-350m"):
        raise SystemExit("usage: make_train_check_model.py OUT_FOLDER [--shape llama2-7b|opt-350m]")
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    common = dict(rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2,
                  hidden_act="silu")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if shape == "opt-350m":
        config = OPTConfig(vocab_size=50272, hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16,
                           word_embed_proj_dim=512, do_layer_norm_before=False, max_position_embeddings=2048,
                           activation_function="relu", tie_word_embeddings=True, bos_token_id=0, eos_token_id=2)
        with device:
            model = OPTForCausalLM(config)
    elif shape == "llama2-7b":
        config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=4096,
                             **common)
        with device:
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    else:
        config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                             **common)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": TEMPLATE, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, f)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
