"""Per-trial overhead of the whole search stack against plain Ray Tune + OptunaSearch + ASHA, in one run.

    .venv/bin/python benchmarks/search_overhead.py              # 10 and 40 trials of each stack
    .venv/bin/python benchmarks/search_overhead.py --small 5 --large 20

Both stacks run a trivial trainer (one report, no work) on the same local Ray, 2 trials at once, actors reused.
"Ours" is ``search.runner.run`` with the synthetic trainer: our Optuna searcher on a SQLite study, ASHA, the
MLflow recorder on SQLite, the design's budget counted on MiniLM's meta skeleton, the summary at the end.
"Plain" is Ray's ``OptunaSearch`` (in-memory study) with ``ASHAScheduler`` over a comparable space.
Per-trial overhead is the slope between a small and a large search, so start-up costs (Ray, the SQLite
schemas) cancel out: (time(large) - time(small)) / (large - small).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
from ray import tune


def plain_trainable(config: dict) -> None:
    tune.report({"accuracy": 0.5 + config["x"] / 100, "step": 1})


def plain(trials: int) -> float:
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    def space(trial: optuna.Trial) -> None:
        trial.suggest_categorical("form", ["linear", "relu", "softmax"])
        trial.suggest_int("x", 1, 50)

    searcher = OptunaSearch(space, metric="accuracy", mode="max", seed=0)
    scheduler = ASHAScheduler(time_attr="step", metric="accuracy", mode="max", max_t=1, grace_period=1)
    with tempfile.TemporaryDirectory() as root:
        tuner = tune.Tuner(tune.with_resources(plain_trainable, {"cpu": 1}),
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials,
                                                       max_concurrent_trials=2, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=root, verbose=0))
        start = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - start


def ours(trials: int) -> float:
    from search import runner
    from search.spec import parse

    with tempfile.TemporaryDirectory() as root:
        spec = parse({"name": f"overhead-{trials}", "trainer": "synthetic", "trials": trials, "concurrency": 2,
                      "asha": {"grace_period": 1, "reduction_factor": 2, "max_steps": 1}, "root": root,
                      "storage": f"sqlite:///{Path(root) / 'optuna.db'}", "tracking_uri": f"sqlite:///{Path(root) / 'mlflow.db'}"})
        start = time.perf_counter()
        runner.run(spec, verbose=0)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=40)
    args = parser.parse_args()
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    plain(2)  # warm up: worker processes, imports
    times = {name: {n: stack(n) for n in (args.small, args.large)} for name, stack in (("plain", plain), ("ours", ours))}
    slope = {name: (t[args.large] - t[args.small]) / (args.large - args.small) for name, t in times.items()}
    print(f"| stack | {args.small} trials (s) | {args.large} trials (s) | per-trial overhead (s) |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t[args.small]:.1f} | {t[args.large]:.1f} | {slope[name]:.3f} |")
    print(f"\nours ÷ plain per-trial overhead: {slope['ours'] / slope['plain']:.2f}×; "
          f"ours as a share of a 60-second trial: {100 * slope['ours'] / 60:.2f}%")


if __name__ == "__main__":
    main()
