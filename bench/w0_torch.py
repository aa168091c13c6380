#!/usr/bin/env python3
"""W0 on PyTorch + PEFT, CPU: LoRA training throughput of a SmolLM2-135M-shaped model.

The baseline row of BENCH.md's W0: a LlamaForCausalLM with SmolLM2-135M's shape (30 layers,
hidden 576, MLP 1536, 9/3 heads, vocab 49152, tied embeddings) and random fp32 weights, LoRA
r=16 (alpha 32, dropout 0) on the given targets, AdamW (lr 1e-4), random tokens, batch × seq.
Warm-up steps are not timed. Prints one JSON object: tokens/s, step time, peak RSS (getrusage
ru_maxrss, the whole process) and the last loss.

    python bench/w0_torch.py --targets q,k,v --batch 8 --seq 256 --steps 5 --warmup 2 --threads 2
"""
import argparse
import json
import resource
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="q,k,v", help="q,k,v,o,gate,up,down or all-linear")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, hidden_act="silu",
        attention_bias=False, mlp_bias=False, torch_dtype="float32")
    model = LlamaForCausalLM(config).float()
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
             "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    if args.targets in ("all-linear", "all"):
        modules = list(names.values())
    else:
        modules = [names[t.strip()] for t in args.targets.split(",")]
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=modules,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(args.seed)

    def step() -> float:
        tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator)
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    loss = 0.0
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        print(f"step: {times[-1]:.2f} s (CPU {cpu[-1]:.2f} s)", file=sys.stderr)
    total = sum(times)
    # Tokens that carry a loss: HF shifts the labels, so seq - 1 per sequence.
    tokens = args.batch * args.seq * args.steps
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "system": "torch-cpu",
        "torch": torch.__version__,
        "targets": "all-linear" if args.targets in ("all-linear", "all") else args.targets,
        "batch": args.batch, "seq": args.seq, "steps_timed": args.steps, "threads": args.threads,
        "tokens_per_s": tokens / total,
        "step_s": total / args.steps,
        "step_s_all": times,
        "cpu_s_per_step": sum(cpu) / len(cpu),
        "peak_rss_gib": peak_kib / 2**20,
        "loss_last": loss,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
