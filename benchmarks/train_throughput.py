"""Training throughput (examples/s) per task: MAM against full fine-tuning, side by side in one run.

    .venv/bin/python -m benchmarks.train_throughput                       # every task, 3 rounds
    .venv/bin/python -m benchmarks.train_throughput --tasks sst2 --steps 20

The shipped MiniLM (BERT2BERT for XSum and en-ro) on the shipped data, micro-batch = batch = 16, the task's
lengths capped at --max-length; rounds interleave full and MAM (full, MAM, full, MAM, ...) in one process,
each trial preceded by a warm-up step. Reported: median examples/s over rounds, and MAM ÷ full.
"""

from __future__ import annotations

import argparse
import statistics

import peft_space
import trainers

MAM = peft_space.preset("mam", **{"attn.bottleneck": 30, "ffn.bottleneck": 192})  # the paper's sizes × 384/1024


def measure(task: str, design: peft_space.Design | None, args: argparse.Namespace) -> float:
    common = dict(micro_batch=16, batch_size=16, batch_tokens=0, train_examples=16 * (args.steps + 1), eval_examples=1,
                  max_source_length=args.max_length, max_target_length=args.max_length // 2, eval_every=10**9,
                  num_beams=1, min_generate=1, max_generate=2, progress=False)
    return trainers.train(task, design, steps=args.steps, **common).examples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(trainers.TASKS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    print("| task | full FT ex/s | MAM ex/s | MAM ÷ full (median, min–max) |")
    print("|---|---:|---:|---:|")
    for task in args.tasks:
        measure(task, MAM, args)  # load the base model and warm up before timing
        full, mam = [], []
        for _ in range(args.rounds):
            full.append(measure(task, None, args))
            mam.append(measure(task, MAM, args))
        ratios = [m / f for m, f in zip(mam, full)]
        print(f"| {task} | {statistics.median(full):.1f} | {statistics.median(mam):.1f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
