#!/usr/bin/env python3
"""Frugal and Hugging Face transformers train the same weights on the same tokens, and their
losses are compared step by step (issue #9: "losses of Frugal and HF after the same steps from
the same weights and data agree within bf16 noise").

A Llama-shaped Hugging Face folder with random weights (scripts/make_train_check_model.py) is
fine-tuned in full — no adapter initialization to differ — by `frugal bench train --model` and
by transformers with torch's AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay, no
clipping, constant rate), both on the tokens `frugal bench train` draws: SplitMix64 seeded 3,
2 × batch sequences of seq + 1 tokens (input = the first seq, targets = the last seq), taken in
order, the loss the mean cross-entropy over every target. fp32 runs plain; bf16 keeps f32
weights and runs the model under torch.autocast(bfloat16) (Frugal: f32 masters, bf16 compute
copies of the weights and bf16 activations, as autocast leaves them). Prints a table and writes
one JSON file.

    python3 bench/loss_agreement.py --frugal .build/release/frugal --device cpu --precision fp32 --steps 10
    python3 bench/loss_agreement.py --frugal .devbin/frugal --device cuda --precision bf16 --steps 20 --output $OUT/loss-agreement.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

MASK = (1 << 64) - 1


def splitmix64(seed: int):
    """Frugal's SplitMix64 (Sources/FrugalModels/LoRA.swift): the same stream of 64-bit values."""
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def sequences(count: int, seq: int, vocabulary: int):
    stream = splitmix64(3)
    return [[next(stream) % vocabulary for _ in range(seq + 1)] for _ in range(count)]


def hf_losses(folder: str, args) -> list:
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                  foreach=False)
    data = torch.tensor(sequences(2 * args.batch, args.seq, model.config.vocab_size), device=device)
    losses = []
    for step in range(args.steps):
        rows = data[(step * args.batch) % len(data):][:args.batch]
        inputs, targets = rows[:, :-1], rows[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def frugal_losses(folder: str, args) -> list:
    command = [args.frugal, "bench", "train", "--model", folder, "--device", args.device, "--method", "full",
               "--precision", args.precision, "--batch", str(args.batch), "--seq", str(args.seq),
               "--steps", str(args.steps), "--warmup", "0", "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"frugal failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["losses"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frugal", default=".build/release/frugal")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--output", help="write the result here as JSON")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "model")
        subprocess.run([sys.executable, os.path.join(root, "scripts", "make_train_check_model.py"), folder], check=True,
                       stdout=subprocess.DEVNULL)
        frugal = frugal_losses(folder, args)
        hf = hf_losses(folder, args)
    rows = [{"step": i + 1, "frugal": a, "transformers": b, "relative_difference": abs(a - b) / abs(b)}
            for i, (a, b) in enumerate(zip(frugal, hf))]
    worst = max(r["relative_difference"] for r in rows)
    print(f"{'step':>4}  {'Frugal':>10}  {'transformers':>12}  {'rel. diff':>9}")
    for r in rows:
        print(f"{r['step']:>4}  {r['frugal']:>10.6f}  {r['transformers']:>12.6f}  {r['relative_difference']:>9.2e}")
    print(f"largest relative difference over {len(rows)} steps: {worst:.2e}")
    result = {"device": args.device, "precision": args.precision, "batch": args.batch, "seq": args.seq,
              "torch": torch.__version__, "rows": rows, "max_relative_difference": worst}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
