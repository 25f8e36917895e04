"""The same search with and without ASHA: hypervolume against cumulative training steps, in one run.

    .venv/bin/python benchmarks/asha_vs_full.py                   # 27 trials of up to 90 steps each
    .venv/bin/python benchmarks/asha_vs_full.py --trials 9 --max-steps 45

The shipped MiniLM on the shipped SST-2 sample, 2 trials at once on a local Ray. Optuna's random sampler with
one seed draws the same designs in the same order for both searches whatever the results, and each design
trains with the same seed, so the only difference is ASHA (grace period max/9, reduction factor 3, comparing
validation loss by default) against no early stopping (grace period = max steps). After each finished trial the front's hypervolume (reference:
chance accuracy 0.5, the budget cap) is plotted against the optimiser steps spent so far, stopped trials'
steps included. Reported: each search's final hypervolume and steps, and the steps ASHA needed to reach the
full search's final hypervolume (or the share of it ASHA reached).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from search import runner
from search.pareto import hypervolume
from search.spec import parse


def search(root: str, name: str, args: argparse.Namespace, grace: int) -> list[tuple[int, float]]:
    spec = parse({"name": name, "task": "sst2", "sampler": "random", "seed": 0, "trials": args.trials,
                  "concurrency": 2, "budget_cap": args.cap, "ranges": {"bottleneck": [1, 64], "scale": [0.5, 8.0]},
                  "asha": {"grace_period": grace, "reduction_factor": 3, "max_steps": args.max_steps},
                  "asha_metric": args.asha_metric,
                  "train": {"lr": 1e-3, "batch_size": 16, "micro_batch": 16, "eval_every": args.max_steps // 9,
                            "train_examples": 4000, "eval_examples": args.eval_examples},
                  "root": root, "storage": f"sqlite:///{Path(root) / 'optuna.db'}",
                  "tracking_uri": f"sqlite:///{Path(root) / 'mlflow.db'}"})
    runner.run(spec, verbose=0)
    return curve(runner.study(spec), (0.5, args.cap))


def curve(study, reference: tuple[float, float]) -> list[tuple[int, float]]:
    """(cumulative steps, hypervolume of the complete trials so far) after each trained trial, in finishing order."""
    from optuna.trial import TrialState

    trained = sorted((t for t in study.trials if "step" in t.user_attrs), key=lambda t: t.datetime_complete)
    points, spent, out = [], 0, []
    for t in trained:
        spent += t.user_attrs["step"]
        if t.state == TrialState.COMPLETE:
            points.append((t.values[0], t.values[1]))
        out.append((spent, hypervolume(points, reference)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--max-steps", type=int, default=90)
    parser.add_argument("--eval-examples", type=int, default=300)
    parser.add_argument("--cap", type=float, default=2.0, help="budget cap, %% of MiniLM")
    parser.add_argument("--asha-metric", default="loss", help="what ASHA compares at its rungs: loss or accuracy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        full = search(root, "full", args, grace=args.max_steps)
        asha = search(root, "asha", args, grace=args.max_steps // 9)
    target = full[-1][1]
    reached = next((steps for steps, area in asha if area >= target - 1e-12), None)
    print("| search | trials | steps spent | final hypervolume |")
    print("|---|---:|---:|---:|")
    for name, points in (("no early stopping", full), ("ASHA", asha)):
        print(f"| {name} | {len(points)} | {points[-1][0]} | {points[-1][1]:.5f} |")
    if reached:
        print(f"\nASHA reached the full search's final hypervolume after {reached} steps: "
              f"{full[-1][0] / reached:.2f}× fewer than the full search's {full[-1][0]}")
    else:
        print(f"\nASHA did not reach the full search's final hypervolume: {100 * asha[-1][1] / target:.1f}% of it "
              f"with {full[-1][0] / asha[-1][0]:.2f}× fewer steps")
    print("\nhypervolume against cumulative steps (steps: full / ASHA):")
    for name, points in (("full", full), ("asha", asha)):
        print(name, " ".join(f"{s}:{a:.4f}" for s, a in points))


if __name__ == "__main__":
    main()
