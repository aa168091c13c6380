#!/usr/bin/env python3
"""Checks Frugal's exports against Hugging Face transformers and PEFT.

    /work/oracle/bin/python scripts/check_peft_export.py DIR [DIR ...] [--tolerance 1e-4]

Each DIR holds what Frugal wrote (Tests/FrugalModelsTests/ExportTests.swift makes them):
  frugal_logits.safetensors  `input_ids` (batch, length; stored as float) and Frugal's
                             `logits` (batch, length, vocab) of the adapted model.
  base/      (optional) a Hugging Face model folder: the base model.
  adapter/   (optional, with base/) Frugal's PEFT export of its LoRA adapters.
  merged/    (optional) Frugal's merged export (adapters folded into the weights).
  frugal_tokens.json (optional, with merged/) {"texts": [...], "ids": [[...], ...]}: Frugal's
             tokenization (special tokens added) of each text.

Checks, each printed as PASS or FAIL:
  peft       PeftModel.from_pretrained(base, adapter) loads every adapter tensor (no missing
             or unexpected keys, values equal to the file's) and its logits match Frugal's.
  merged     AutoModelForCausalLM.from_pretrained(merged) gives Frugal's logits.
  tokenizer  AutoTokenizer.from_pretrained(merged) encodes the texts as Frugal does.
Exits 1 when any check fails.
"""

import argparse
import json
import os
import sys

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_model(folder):
    """A float32 causal LM in eval mode, with eager attention (the plain reference)."""
    kwargs = {"attn_implementation": "eager"}
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except TypeError:  # transformers 4 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **kwargs)
    return model.eval()


def logits_of(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits.float()


class Report:
    def __init__(self):
        self.failures = 0

    def check(self, ok, name, detail):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failures += 1


def check_folder(folder, tolerance, report):
    reference = load_file(os.path.join(folder, "frugal_logits.safetensors"))
    input_ids = reference["input_ids"].round().long()
    expected = reference["logits"].reshape(input_ids.shape[0], input_ids.shape[1], -1)
    label = os.path.basename(os.path.normpath(folder))

    base_dir, adapter_dir = os.path.join(folder, "base"), os.path.join(folder, "adapter")
    if os.path.isdir(base_dir) and os.path.isdir(adapter_dir):
        model = PeftModel.from_pretrained(load_model(base_dir), adapter_dir).eval()
        stored = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        loaded = get_peft_model_state_dict(model)
        missing = sorted(set(stored) - set(loaded))
        unexpected = sorted(set(loaded) - set(stored))
        unequal = sorted(k for k in set(stored) & set(loaded) if not torch.equal(stored[k], loaded[k].float().cpu()))
        report.check(not missing and not unexpected and not unequal, f"{label} peft load",
                     f"{len(stored)} tensors; not loaded {missing[:3]}, not in the file {unexpected[:3]}, "
                     f"different values {unequal[:3]}")
        got = logits_of(model, input_ids)
        diff = (got - expected).abs().max().item()
        with model.disable_adapter():
            effect = (logits_of(model, input_ids) - got).abs().max().item()
        report.check(diff <= tolerance and effect > 10 * tolerance, f"{label} peft logits",
                     f"max |PEFT - Frugal| = {diff:.3g} (tolerance {tolerance:g}); the adapter moves logits by {effect:.3g}")

    merged_dir = os.path.join(folder, "merged")
    if os.path.isdir(merged_dir):
        got = logits_of(load_model(merged_dir), input_ids)
        diff = (got - expected).abs().max().item()
        report.check(diff <= tolerance, f"{label} merged logits",
                     f"max |transformers(merged) - Frugal| = {diff:.3g} (tolerance {tolerance:g})")
        tokens_file = os.path.join(folder, "frugal_tokens.json")
        if os.path.exists(tokens_file):
            with open(tokens_file) as f:
                expected_tokens = json.load(f)
            tokenizer = AutoTokenizer.from_pretrained(merged_dir)
            mismatches = []
            for text, ids in zip(expected_tokens["texts"], expected_tokens["ids"]):
                hf = tokenizer(text)["input_ids"]
                if hf != ids:
                    mismatches.append((text, hf[:12], ids[:12]))
            report.check(not mismatches, f"{label} tokenizer",
                         f"{len(expected_tokens['texts'])} texts; first mismatches (text, HF, Frugal): {mismatches[:2]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="DIR")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    args = parser.parse_args()
    torch.manual_seed(0)
    report = Report()
    for folder in args.folders:
        try:
            check_folder(folder, args.tolerance, report)
        except Exception as error:  # a folder that does not load is a failed check, not a crash
            report.check(False, os.path.basename(os.path.normpath(folder)), f"{type(error).__name__}: {error}")
    print("all checks passed" if report.failures == 0 else f"{report.failures} check(s) failed", flush=True)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
