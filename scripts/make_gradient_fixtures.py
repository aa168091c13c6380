#!/usr/bin/env python3
"""Makes reference losses and gradients of the tiny fixture models for Frugal's training tests.

Run with the oracle virtual environment (torch, transformers, safetensors, peft), after
scripts/make_model_fixtures.py:

    /work/oracle/bin/python scripts/make_gradient_fixtures.py

On the GPU machine, `--device cuda --models COPY` recomputes the references with transformers on
the GPU into a copy of the fixture folders (logits in expected.safetensors too), for
`frugal gpu-check --models COPY` (scripts/gpu-check does this).

For each model under Tests/FrugalModelsTests/Fixtures/models/<name>/ it loads the model in
float32 with eager attention and in eval mode (no dropout), takes the input_ids of its
expected.safetensors (2 × 12) and makes labels = input_ids with the first PROMPT positions of
each row set to -100 (a masked prompt). The loss is transformers' own mean cross-entropy
(model(input_ids, labels=labels).loss), which shifts the labels inside. It writes
gradients.safetensors with:
  targets                       F32 [2, 12]: the shifted labels, targets[b, t] = labels[b, t+1],
                                -100 where ignored (always at the last position)
  loss_full                     F32 [1]: the loss of the base model
  full.<hf name>                F32: d loss_full / d parameter by its Hugging Face name, in HF's
                                layout (GPT-2's Conv1D weights (in, out), fused projections whole),
                                for every parameter outside the blocks and those of block 0 (the
                                farthest from the loss; later blocks are left out to keep the files
                                small); tied embeddings have one shared gradient under the
                                embedding's name
  loss_lora                     F32 [1]: the loss with PEFT LoRA adapters attached
  lora.<module>.lora_A.weight   F32 (rank, in): the adapter values used
  lora.<module>.lora_B.weight   F32 (out, rank)
  lora_grad.<module>.lora_A.weight, lora_grad.<module>.lora_B.weight: their gradients
Module names are the base model's (PEFT's "base_model.model." prefix and ".default" adapter name
removed), so they equal Frugal's adapter names. LoRA has rank RANK, alpha ALPHA, no dropout;
A keeps PEFT's Kaiming-uniform initialization and B, which PEFT starts at zero, is drawn
N(0, 0.1) so that A receives a gradient. Fused projections (Phi-3's qkv_proj and gate_up_proj,
GPT-2's c_attn) get no adapter, since Frugal adapts q, k, v (gate, up) separately.
"""

import argparse
import os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "FrugalModelsTests", "Fixtures", "models")
SEED = 4321
PROMPT = 4
RANK, ALPHA = 4, 8
FULL_BLOCKS = {0}  # blocks whose full gradients are stored
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# (fixture name, LoRA target modules, whether the targets are Conv1D (fan_in_fan_out))
FIXTURES = [
    ("llama3", LLAMA_TARGETS, False),
    ("qwen2", LLAMA_TARGETS, False),
    ("gemma", LLAMA_TARGETS, False),
    ("phi3", ["o_proj", "down_proj"], False),
    ("opt", ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], False),
    ("opt-prenorm", ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], False),
    ("gpt2", ["c_proj", "c_fc"], True),  # attn.c_proj, mlp.c_fc, mlp.c_proj
]


DEVICE = "cpu"


def load(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.to(DEVICE)
    model.eval()
    return model


def inputs(folder):
    """input_ids (2, 12), HF labels (unshifted, prompt masked) and Frugal's shifted targets."""
    from safetensors.torch import load_file
    input_ids = load_file(os.path.join(folder, "expected.safetensors"))["input_ids"].to(torch.long).to(DEVICE)
    labels = input_ids.clone()
    labels[:, :PROMPT] = -100
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    return input_ids, labels, targets


def block_index(name):
    """The block a parameter belongs to (from `.layers.3.` or `.h.3.`), or None."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def full_gradients(folder, input_ids, labels):
    model = load(folder)
    loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    tensors = {"loss_full": loss.detach().reshape(1).cpu()}
    for name, parameter in model.named_parameters():  # tied parameters appear once
        assert parameter.grad is not None, name
        block = block_index(name)
        if block is not None and block not in FULL_BLOCKS:
            continue
        tensors["full." + name] = parameter.grad.detach().cpu().contiguous()
    return tensors


def lora_gradients(folder, input_ids, labels, targets, conv1d):
    model = load(folder)
    torch.manual_seed(SEED)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets,
                        fan_in_fan_out=conv1d, bias="none")
    model = get_peft_model(model, config)
    model.eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.1)
    loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    tensors = {"loss_lora": loss.detach().reshape(1).cpu()}
    count = 0
    for name, parameter in model.named_parameters():
        if "lora_" not in name:
            continue
        assert parameter.requires_grad and parameter.grad is not None, name
        short = name.removeprefix("base_model.model.").replace(".default.", ".")
        tensors["lora." + short] = parameter.detach().cpu().contiguous()
        tensors["lora_grad." + short] = parameter.grad.detach().cpu().contiguous()
        count += 1
    assert count > 0
    return tensors


def rewrite_logits(folder, input_ids):
    """Replaces expected.safetensors' logits with this device's."""
    with torch.no_grad():
        logits = load(folder)(input_ids=input_ids).logits
    save_file({"input_ids": input_ids.to(torch.float32).cpu().contiguous(), "logits": logits.cpu().contiguous()},
              os.path.join(folder, "expected.safetensors"))


def make(models, name, lora_targets, conv1d):
    folder = os.path.join(models, name)
    input_ids, labels, targets = inputs(folder)
    if DEVICE != "cpu":
        rewrite_logits(folder, input_ids)
    tensors = {"targets": targets.to(torch.float32).cpu().contiguous()}
    tensors.update(full_gradients(folder, input_ids, labels))
    tensors.update(lora_gradients(folder, input_ids, labels, lora_targets, conv1d))
    path = os.path.join(folder, "gradients.safetensors")
    save_file(tensors, path)
    os.chmod(path, 0o644)
    print(f"{name}: loss_full {tensors['loss_full'].item():.6f}, loss_lora {tensors['loss_lora'].item():.6f}, "
          f"{len(tensors)} tensors, {os.path.getsize(path) / 1024:.0f} KiB")


def main():
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=MODELS, help="folder of fixture model folders (default: the repository's)")
    parser.add_argument("--device", default="cpu", help="torch device for the references, e.g. cuda")
    args = parser.parse_args()
    DEVICE = args.device
    torch.manual_seed(SEED)
    for name, lora_targets, conv1d in FIXTURES:
        make(args.models, name, lora_targets, conv1d)


if __name__ == "__main__":
    main()
