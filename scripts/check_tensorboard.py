#!/usr/bin/env python3
"""Reads a Frugal run's TensorBoard event file with TensorBoard's own reader and prints its scalars.

    /work/oracle/bin/python scripts/check_tensorboard.py runs/train     # a `frugal train --output` folder

Exits 1 when TensorBoard finds no scalars or a step of metrics.jsonl is missing from them.
"""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    folder = sys.argv[1]
    accumulator = EventAccumulator(folder)
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    if not tags:
        sys.exit(f"{folder}: TensorBoard found no scalars")
    for tag in tags:
        events = accumulator.Scalars(tag)
        print(f"{tag}: {len(events)} steps, first {events[0].step}: {events[0].value:.6g}, last {events[-1].step}: {events[-1].value:.6g}")
    steps = [json.loads(line)["step"] for line in open(os.path.join(folder, "metrics.jsonl"))]
    losses = {e.step: e.value for e in accumulator.Scalars("train/loss")}
    missing = [s for s in steps if s not in losses]
    if missing:
        sys.exit(f"steps {missing} of metrics.jsonl are not in TensorBoard's train/loss")
    print(f"every step of metrics.jsonl ({len(steps)}) is in TensorBoard's train/loss")


if __name__ == "__main__":
    main()
