#!/usr/bin/env python3
"""Merges benchmark rows (one JSON object per line, from `frugal bench train --json` and
bench/hf_train.py) into one BENCH.md result file, adding vs_hf and vs_liger to Frugal's rows:
Frugal's tokens/s over the hf-peft (hf-peft-liger) row of the same workload in the same file.

    python3 bench/merge_rows.py rows.jsonl --device "NVIDIA H100 80GB HBM3, driver 580" \\
        --git-rev abc1234 --command "bench/run-gpu" --output bench/results/2026-11-22-h100-perf.json
"""
import argparse
import datetime
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", help="file of JSON rows, one per line (other lines are ignored)")
    parser.add_argument("--device", required=True)
    parser.add_argument("--git-rev", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    rows = []
    with open(args.rows) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    by_system = {}
    for row in rows:
        by_system[(row["workload"], row["system"])] = row
    for row in rows:
        if row["system"] != "frugal" or row.get("oom"):
            continue
        for system, key in (("hf-peft", "vs_hf"), ("hf-peft-liger", "vs_liger")):
            other = by_system.get((row["workload"], system))
            if other and not other.get("oom") and other.get("tokens_per_s"):
                row[key] = round(row["tokens_per_s"] / other["tokens_per_s"], 3)
    result = {"date": datetime.date.today().isoformat(), "device": args.device, "git_rev": args.git_rev,
              "command": args.command, "rows": rows}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"{'workload':<12} {'system':<14} {'tokens/s':>9} {'step s':>7} {'peak GiB':>8} {'J/ktok':>7} {'MFU':>6} {'vs HF':>6} {'vs Liger':>8}")
    for row in rows:
        if row.get("oom"):
            print(f"{row['workload']:<12} {row['system']:<14} {'out of memory':>9}")
            continue
        print(f"{row['workload']:<12} {row['system']:<14} {row['tokens_per_s']:>9.0f} {row['step_s']:>7.3f} "
              f"{row.get('peak_gib', 0):>8.2f} {row.get('joules_per_ktok', 0):>7.1f} {row.get('mfu', 0):>6.1%} "
              f"{row.get('vs_hf', ''):>6} {row.get('vs_liger', ''):>8}")


if __name__ == "__main__":
    main()
