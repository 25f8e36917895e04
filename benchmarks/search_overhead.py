"""Per-trial overhead of the whole search stack against plain Ray Tune + OptunaSearch + ASHA, in one run.

    .venv/bin/python -m benchmarks.search_overhead              # 20 and 100 trials of each stack, 3 rounds
    .venv/bin/python -m benchmarks.search_overhead --small 5 --large 20 --rounds 1

Both stacks run a trivial trainer (one report, no work) on the same local Ray, 2 trials at once, actors reused.
"Ours" is ``search.runner.run`` with the synthetic trainer: our Optuna searcher on a SQLite study (and on
Optuna's journal file), ASHA, the
MLflow recorder on SQLite, the design's budget counted on MiniLM's meta skeleton, the summary at the end.
"Plain" is Ray's ``OptunaSearch`` (in-memory study) with ``ASHAScheduler`` over the same space with the same
TPE settings.
Per-trial overhead is the slope between a small and a large search, so start-up costs (Ray, the SQLite
schemas) cancel out: (time(large) - time(small)) / (large - small); rounds interleave the stacks and the
median slope is reported.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from search.space import Space, suggest


def plain_trainable(config: dict) -> None:
    tune.report({"accuracy": 0.5, "step": 1})


def space(trial: Any) -> None:
    """The same design space, define-by-run (module level: Ray pickles the searcher with it)."""
    suggest(trial, Space())


def plain(trials: int) -> float:
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, constant_liar=True)  # as ours
    searcher = OptunaSearch(space, metric="accuracy", mode="max", sampler=sampler)
    scheduler = ASHAScheduler(time_attr="step", metric="accuracy", mode="max", max_t=1, grace_period=1)
    with tempfile.TemporaryDirectory() as root:
        tuner = tune.Tuner(tune.with_resources(plain_trainable, {"cpu": 1}),
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials,
                                                       max_concurrent_trials=2, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=root, verbose=0))
        start = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - start


def ours(trials: int, storage: str = "sqlite:///{root}/optuna.db") -> float:
    from search import runner
    from search.spec import parse

    with tempfile.TemporaryDirectory() as root:
        spec = parse({"name": f"overhead-{trials}", "trainer": "synthetic", "trials": trials, "concurrency": 2,
                      "asha": {"grace_period": 1, "reduction_factor": 2, "max_steps": 1}, "root": root,
                      "storage": storage.format(root=root), "tracking_uri": f"sqlite:///{Path(root) / 'mlflow.db'}"})
        start = time.perf_counter()
        runner.run(spec, verbose=0)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    plain(2)  # warm up: worker processes, imports
    stacks = {"plain": plain, "ours (SQLite)": ours,
              "ours (journal)": functools.partial(ours, storage="journal:///{root}/optuna.log")}
    times: dict[str, list[dict[int, float]]] = {name: [] for name in stacks}
    for _ in range(args.rounds):
        for name, stack in stacks.items():
            times[name].append({n: stack(n) for n in (args.small, args.large)})
    slope = {name: statistics.median((t[args.large] - t[args.small]) / (args.large - args.small) for t in runs)
             for name, runs in times.items()}
    print(f"| stack | {args.small} trials (s, median) | {args.large} trials (s, median) | per-trial overhead (s) |")
    print("|---|---:|---:|---:|")
    for name, runs in times.items():
        small, large = (statistics.median(t[n] for t in runs) for n in (args.small, args.large))
        print(f"| {name} | {small:.1f} | {large:.1f} | {slope[name]:.3f} |")
    print()
    for name in list(stacks)[1:]:
        print(f"{name} ÷ plain per-trial overhead: {slope[name] / slope['plain']:.2f}×; "
              f"as a share of a 60-second trial: {100 * slope[name] / 60:.2f}%")


if __name__ == "__main__":
    main()
