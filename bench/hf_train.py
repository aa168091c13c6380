#!/usr/bin/env python3
"""Hugging Face baseline of the GPU benchmark suite (BENCH.md W1-W4): HF transformers + PEFT.

Builds a model of a named shape with random weights (no downloads, created directly on the
device in the chosen dtype, SDPA attention), trains it on random tokens (labels = input ids,
HF shifts them) with LoRA (r, alpha 2r, dropout 0) or a full fine-tune, AdamW (lr 1e-4, fused
on CUDA), and prints ONE JSON row in BENCH.md's format on stdout; progress goes to stderr.
Warm-up steps are not timed. Energy comes from NVML's cumulative counter over the timed steps
(left out where NVML is missing, e.g. on CPU). An out-of-memory run prints a row with
"oom": true and no figures.

    python bench/hf_train.py --workload W1-ckpt --shape llama3.1-8b --method lora \\
        --targets all-linear --precision bf16 --batch 4 --seq 1024 --checkpointing --steps 10
    python bench/hf_train.py --shape tiny --device cpu --precision fp32 --steps 2 --batch 2 --seq 32

--liger patches the model family with Liger kernels (liger_kernel must be importable, e.g. the
wheel pip-installed into a directory on PYTHONPATH); the row's system is then "hf-peft-liger".
"""
import argparse
import ctypes
import json
import os
import sys
import time

# Dense bf16 peak of H100 SXM and H200 (BENCH.md's MFU denominator).
PEAK_FLOPS = 989e12

# Module names per family for --targets; several short names can map to one fused module.
TARGETS = {
    "llama": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"},
    "gemma": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"},
    # Phi-3 fuses q/k/v and gate/up into one linear each.
    "phi3": {"q": "qkv_proj", "k": "qkv_proj", "v": "qkv_proj", "o": "o_proj",
             "gate": "gate_up_proj", "up": "gate_up_proj", "down": "down_proj"},
    # OPT's MLP is fc1 (up) -> ReLU -> fc2 (down); it has no gate.
    "opt": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj",
            "up": "fc1", "down": "fc2"},
}

SHAPES = ["llama3.1-8b", "llama2-7b", "opt-350m", "phi3-mini", "gemma-2b", "smollm2", "tiny"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_config(shape: str):
    """The transformers config of a named shape, and its family (a key of TARGETS)."""
    from transformers import GemmaConfig, LlamaConfig, OPTConfig, Phi3Config

    def rope(theta: float) -> dict:
        return {"rope_type": "default", "rope_theta": theta}

    # Llama-architecture shapes: vocabulary, hidden, MLP, layers, heads, kv heads, positions,
    # rotary theta, tied embeddings.
    llama = {
        "llama3.1-8b": (128256, 4096, 14336, 32, 32, 8, 131072, 500000.0, False),
        "llama2-7b": (32000, 4096, 11008, 32, 32, 32, 4096, 10000.0, False),
        "smollm2": (49152, 576, 1536, 30, 9, 3, 8192, 100000.0, True),
        "tiny": (256, 64, 128, 2, 4, 2, 2048, 10000.0, False),
    }
    if shape in llama:
        vocab, hidden, mlp, layers, heads, kv_heads, positions, theta, tied = llama[shape]
        return LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
            max_position_embeddings=positions, rms_norm_eps=1e-5, rope_parameters=rope(theta),
            tie_word_embeddings=tied, hidden_act="silu"), "llama"
    if shape == "opt-350m":
        # Post-LN, with project_in/project_out between the 512-wide embeddings and d 1024.
        return OPTConfig(
            vocab_size=50272, hidden_size=1024, ffn_dim=4096, num_hidden_layers=24,
            num_attention_heads=16, word_embed_proj_dim=512, do_layer_norm_before=False,
            max_position_embeddings=2048, activation_function="relu", tie_word_embeddings=True), "opt"
    if shape == "phi3-mini":
        return Phi3Config(
            vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
            rms_norm_eps=1e-5, tie_word_embeddings=False), "phi3"
    if shape == "gemma-2b":
        return GemmaConfig(
            vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
            num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
            rms_norm_eps=1e-6, tie_word_embeddings=True), "gemma"
    raise SystemExit(f"unknown shape {shape}")


def target_modules(family: str, targets: str) -> list:
    names = TARGETS[family]
    if targets in ("all-linear", "all"):
        wanted = list(names)
    else:
        wanted = [t.strip() for t in targets.split(",") if t.strip()]
    modules = []
    for t in wanted:
        if t not in names:
            raise SystemExit(f"target {t!r} does not exist for {family} (has {', '.join(names)})")
        if names[t] not in modules:
            modules.append(names[t])
    return modules


def apply_liger(family: str) -> str:
    """Patches the family's HF classes with Liger kernels (before the model is built)."""
    try:
        import liger_kernel
        from liger_kernel import transformers as liger
    except ImportError as error:
        raise SystemExit(f"--liger: cannot import liger_kernel ({error}); pip-install the wheel "
                         "into a directory and put it on PYTHONPATH")
    patch = {"llama": liger.apply_liger_kernel_to_llama, "phi3": liger.apply_liger_kernel_to_phi3,
             "gemma": liger.apply_liger_kernel_to_gemma}.get(family)
    if patch is None:
        raise SystemExit(f"--liger: Liger has no patch for the {family} family")
    # Defaults: RoPE, RMSNorm, SwiGLU/GeGLU, fused linear + cross-entropy (no logits materialized).
    patch()
    try:
        from importlib.metadata import version
        return version("liger-kernel")
    except Exception:
        return getattr(liger_kernel, "__version__", "unknown")


class Energy:
    """NVML's cumulative energy counter (millijoules since driver load): pynvml if importable,
    else ctypes on libnvidia-ml.so.1. `read()` is None where NVML or the counter is missing."""

    def __init__(self, index: int):
        self.read_mj = None
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.read_mj = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return
        except Exception:
            pass
        try:
            nvml = ctypes.CDLL("libnvidia-ml.so.1")
            if nvml.nvmlInit_v2() != 0:
                return
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
                return

            def read() -> int:
                energy = ctypes.c_ulonglong()
                if nvml.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(energy)) != 0:
                    raise RuntimeError("nvmlDeviceGetTotalEnergyConsumption failed")
                return energy.value

            read()
            self.read_mj = read
        except Exception:
            self.read_mj = None

    def read(self):
        try:
            return self.read_mj() if self.read_mj else None
        except Exception:
            return None


def nvml_index() -> int:
    """NVML counts all GPUs; CUDA only the visible ones: map CUDA device 0 back when we can."""
    import torch
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    index = torch.cuda.current_device()
    if visible.isdigit():
        return int(visible)
    return index


def flops_per_token(model, config, method: str, seq: int) -> tuple:
    """BENCH.md's model FLOPs per token, and N (the base's params without the input embedding).

    2N forward + 2N backward to the activations, + 2N weight gradients when the base trains;
    LoRA's own (trained) params count 6 each. Attention 4*L*T*d forward, x3 with backward.
    Embedding lookups cost nothing, but a tied LM head is a matmul and counts."""
    import torch
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    seen, base, lora = set(), 0, 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "lora_" in name:
            lora += p.numel()
        elif id(p) not in embedding_weights:
            base += p.numel()
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) in embedding_weights:
        base += head.weight.numel()
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = 3 * 4 * layers * seq * heads * head_dim
    dense = (6 if method == "full" else 4) * base + 6 * lora
    return dense + attention, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="adhoc", help="name for the row, e.g. W1-ckpt")
    parser.add_argument("--shape", default="llama3.1-8b", choices=SHAPES)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--rank", type=int, default=16, help="LoRA r (alpha = 2r, dropout 0)")
    parser.add_argument("--targets", default="all-linear", help="q,k,v,o,gate,up,down or all-linear")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16-amp", "bf16-amp"],
                        help="bf16: weights in bf16; *-amp: fp32 weights under torch.autocast")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (non-reentrant)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--liger", action="store_true", help="patch the model with Liger kernels")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-flops", type=float, default=PEAK_FLOPS, help="MFU denominator")
    parser.add_argument("--dump-losses", metavar="PATH", help="write the per-step losses as JSON")
    args = parser.parse_args()

    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    device = torch.device(args.device)
    config, family = make_config(args.shape)
    lora = args.method == "lora"
    targets = ("all-linear" if args.targets in ("all-linear", "all") else args.targets) if lora else None
    row = {
        "workload": args.workload,
        "system": "hf-peft-liger" if args.liger else "hf-peft",
        "model": f"{args.shape}-shape", "method": args.method,
        "lora_r": args.rank if lora else None, "targets": targets,
        "precision": args.precision, "batch": args.batch, "seq": args.seq,
        "grad_accum": args.grad_accum, "checkpointing": args.checkpointing,
        "steps_timed": args.steps,
    }
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__}
    if args.liger:
        versions["liger"] = apply_liger(family)
    if cuda:
        log(f"device: {torch.cuda.get_device_name()}")
        torch.cuda.reset_peak_memory_stats()

    # Weights in bf16 only for "bf16"; fp32 otherwise (the AMP modes cast inside autocast).
    weight_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    amp_dtype = {"fp16-amp": torch.float16, "bf16-amp": torch.bfloat16}.get(args.precision)
    losses = []
    try:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        # Built on the device itself, so an 8B model's random init takes seconds, not minutes.
        with device:
            model = AutoModelForCausalLM.from_config(config, dtype=weight_dtype, attn_implementation="sdpa")
        if args.checkpointing:
            # Non-reentrant checkpointing needs no enable_input_require_grads() for a frozen base.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            modules = target_modules(family, args.targets)
            model = get_peft_model(model, LoraConfig(
                r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=modules,
                task_type="CAUSAL_LM"))
        model.train()
        if cuda:
            torch.cuda.synchronize()
        trainable = [p for p in model.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in trainable)
        flops, n_base = flops_per_token(model, config, args.method, args.seq)
        log(f"model: {args.shape} ({family}), {n_base / 1e9:.3f} B params without input embedding, "
            f"{n_trainable / 1e6:.2f} M trainable, built in {time.perf_counter() - start:.1f} s")

        optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=cuda)
        scaler = torch.amp.GradScaler(args.device) if args.precision == "fp16-amp" else None

        # All the random tokens up front (seeded, made on the CPU so any device sees the same).
        generator = torch.Generator().manual_seed(args.seed)
        total_steps = args.warmup + args.steps
        data = torch.randint(0, config.vocab_size, (total_steps, args.grad_accum, args.batch, args.seq),
                             generator=generator).to(device)

        def step(index: int) -> "torch.Tensor":
            total = torch.zeros((), device=device)
            for micro in range(args.grad_accum):
                tokens = data[index, micro]
                with torch.autocast(args.device, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = model(input_ids=tokens, labels=tokens).loss
                scaled = loss / args.grad_accum
                (scaler.scale(scaled) if scaler else scaled).backward()
                total += loss.detach().float()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return total / args.grad_accum

        for i in range(args.warmup):
            losses.append(float(step(i)))
            log(f"warm-up {i + 1}/{args.warmup}: loss {losses[-1]:.4f}")

        energy = Energy(nvml_index()) if cuda else None
        if cuda:
            torch.cuda.synchronize()
        joules_start = energy.read() if energy else None
        times = []
        for i in range(args.warmup, total_steps):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = step(i)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
            log(f"step {i - args.warmup + 1}/{args.steps}: {times[-1]:.3f} s, loss {losses[-1]:.4f}")
        joules_end = energy.read() if energy else None
    except torch.cuda.OutOfMemoryError as error:
        log(f"out of memory: {str(error).splitlines()[0]}")
        row["oom"] = True
        row.update(versions)
        print(json.dumps(row), flush=True)
        return

    total = sum(times)
    tokens = args.batch * args.seq * args.grad_accum * args.steps
    tokens_per_s = tokens / total
    row["tokens_per_s"] = round(tokens_per_s, 2)
    row["step_s"] = round(total / args.steps, 5)
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        row["reserved_peak_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    if joules_start is not None and joules_end is not None and joules_end > joules_start:
        joules = (joules_end - joules_start) / 1000
        row["joules_per_ktok"] = round(joules / (tokens / 1000), 3)
        row["avg_watts"] = round(joules / total, 1)
    if cuda:
        row["mfu"] = round(flops * tokens_per_s / args.peak_flops, 4)
    row["flops_per_token"] = flops
    row["loss_last"] = losses[-1]
    row["loss_first"] = losses[0]
    row["trainable"] = n_trainable
    row.update(versions)
    if args.dump_losses:
        with open(args.dump_losses, "w") as f:
            json.dump({"row": {k: row[k] for k in ("workload", "system", "model", "method", "precision")},
                       "seed": args.seed, "warmup": args.warmup, "losses": losses}, f)
            f.write("\n")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
