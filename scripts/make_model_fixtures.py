#!/usr/bin/env python3
"""Makes tiny random-weight Hugging Face models and their reference logits for Frugal's tests.

Run with the oracle virtual environment (torch, transformers, safetensors):

    /work/oracle/bin/python scripts/make_model_fixtures.py

For each family it writes, under Tests/FrugalModelsTests/Fixtures/models/<name>/:
  config.json          the model's Hugging Face configuration (save_pretrained)
  model.safetensors    its float32 weights (save_pretrained, tied weights saved once, as HF does)
  expected.safetensors input_ids (F32, [2, 12]), logits (F32, [2, 12, vocab]) from the model in
                       eval mode with eager attention, and inv_freq (F32) for RoPE models
Weights are random with a fixed seed: linear and embedding weights N(0, 0.1), biases
N(0, 0.05), norm weights 1 + 0.1·N(0, 1) (Gemma stores w for its 1 + w norm, so 0.1·N(0, 1)),
norm biases N(0, 0.05).
"""

import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "FrugalModelsTests", "Fixtures", "models")
SEED = 1234
BATCH, TOKENS = 2, 12
VOCAB = 256


def models():
    """(name, model class, config) for each fixture."""
    return [
        ("llama3", LlamaForCausalLM, LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 3],
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32})),
        ("qwen2", Qwen2ForCausalLM, Qwen2Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        ("gemma", GemmaForCausalLM, GemmaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
            hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=2,
            eos_token_id=1, tie_word_embeddings=True)),
        ("phi3", Phi3ForCausalLM, Phi3Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
            original_max_position_embeddings=128, rms_norm_eps=1e-5, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "partial_rotary_factor": 0.5})),
        ("opt", OPTForCausalLM, OPTConfig(
            vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, do_layer_norm_before=False,
            word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2,
            dropout=0.0)),
        ("opt-prenorm", OPTForCausalLM, OPTConfig(
            vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, do_layer_norm_before=True,
            word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2,
            dropout=0.0)),
        ("gpt2", GPT2LMHeadModel, GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_head=4, n_layer=2, n_positions=64,
            activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    ]


def is_norm(module):
    return "Norm" in type(module).__name__


@torch.no_grad()
def randomize(model, norm_center):
    """Draws every parameter again so that no weight keeps its structured initial value."""
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if is_norm(module) and name == "weight":
                parameter.copy_(norm_center + 0.1 * torch.randn_like(parameter))
            elif name == "bias" or name.endswith("_bias"):
                parameter.normal_(0.0, 0.05)
            else:
                parameter.normal_(0.0, 0.1)


def make(name, model_class, config):
    torch.manual_seed(SEED)
    config._attn_implementation = "eager"
    model = model_class(config).to(torch.float32)
    randomize(model, norm_center=0.0 if config.model_type == "gemma" else 1.0)
    model.eval()

    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)

    generator = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.randint(3, VOCAB, (BATCH, TOKENS), generator=generator)
    with torch.no_grad():
        logits = model(input_ids).logits.to(torch.float32)
    expected = {"input_ids": input_ids.to(torch.float32).contiguous(), "logits": logits.contiguous()}
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is not None:
        expected["inv_freq"] = rotary.inv_freq.to(torch.float32).contiguous()
    save_file(expected, os.path.join(folder, "expected.safetensors"))
    generation_config = os.path.join(folder, "generation_config.json")
    if os.path.exists(generation_config):
        os.remove(generation_config)
    for file in os.listdir(folder):
        os.chmod(os.path.join(folder, file), 0o644)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, model_class, config in models():
        make(name, model_class, config)
    with open(os.path.join(OUT, "README.md"), "w") as readme:
        readme.write("Tiny random-weight models and their reference logits, made by "
                     "`scripts/make_model_fixtures.py` with Hugging Face transformers "
                     "(see the script for sizes, seeds and initialization).\n")


if __name__ == "__main__":
    main()
