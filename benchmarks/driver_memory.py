"""Where a search driver's memory goes as trials accumulate: ``tracemalloc`` snapshots of this process while it
runs a replayed search (the soak's spec, a local Ray), compared between two finished-trial counts.

    python -m benchmarks.driver_memory                       # 400 trials, snapshots after 100 and 380 (~20 min)
    python -m benchmarks.driver_memory --trials 200 --at 50 180

Prints the traced growth per 100 trials and the allocation sites that grew most (tracing starts after 30 trials,
past the driver's start-up, and slows the driver several-fold)."""

from __future__ import annotations

import argparse
import gc
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from benchmarks.soak import finished_trials, spec


def watch(data: dict, marks: list[int], snapshots: dict[int, tracemalloc.Snapshot]) -> None:
    while len(finished_trials(data)) < 30:
        time.sleep(2)
    tracemalloc.start(8)
    while marks:
        done = len(finished_trials(data))
        if done >= marks[0]:
            marks.pop(0)
            gc.collect()
            snapshots[done] = tracemalloc.take_snapshot()
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--at", type=int, nargs=2, default=[100, 380], help="finished-trial counts to compare")
    parser.add_argument("--top", type=int, default=8, help="allocation sites to print")
    args = parser.parse_args()
    from search import runner
    from search.spec import parse

    root = Path(tempfile.mkdtemp(prefix="peft-search-memory-"))
    data = {**spec(root, None, args.trials, "memory", None), "ray_address": None}
    snapshots: dict[int, tracemalloc.Snapshot] = {}
    threading.Thread(target=watch, args=(data, list(args.at), snapshots), daemon=True).start()
    runner.run(parse(data), verbose=0)
    (first, a), (last, b) = sorted(snapshots.items())
    growth = b.compare_to(a, "traceback")
    total = sum(stat.size_diff for stat in growth) / 2**20
    print(f"traced growth from {first} to {last} finished trials: {total:.1f} MB ({100 * total / (last - first):.1f} MB "
          "per 100 trials)")
    for stat in growth[:args.top]:
        print(f"\n{stat.size_diff / 2**20:6.2f} MB in {stat.count_diff} blocks, allocated at:")
        print("\n".join(stat.traceback.format()[-6:]))


if __name__ == "__main__":
    main()
