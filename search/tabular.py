"""A tabular benchmark of the design space: every design of a finite space trained, its whole curve recorded.

As NAS-Bench-201, HPOBench or Syne Tune's blackbox repository do for architectures and hyper-parameters, the
table holds one row per (design, seed, evaluation step) of real training runs, so that a search can be replayed
against it in seconds (the ``tabular`` trainer) and judged against the table's known true front.

The file is a CSV with the columns ``COLUMNS`` and the flat design keys (``attn.form``, ``ffn.bottleneck``, ...).
``valid_*`` are measured on the split a search selects on, ``test_*`` on the reported test split (at the last
step only), each with its standard error; ``seconds`` is the trial's wall time up to that step. Rows with
``reference`` true (full fine-tuning) are outside the searched space and never on its front.

``export`` builds the table from a finished grid search's MLflow records (``benchmarks/make_table.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from search.pareto import front, hypervolume
from search.schema import Params, Status, Tags
from trainers import SE

COLUMNS = ("design_id", "name", "seed", "step", "budget_pct", "valid_metric", "valid_metric_se", "valid_loss",
           "test_metric", "test_metric_se", "seconds", "reference")


@functools.lru_cache(maxsize=4)
def load(path: str | Path) -> pd.DataFrame:
    """The table (read once per process: replayed trials reuse their worker)."""
    table = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a tabular benchmark (missing columns {', '.join(missing)})")
    return table


def seeds(table: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in table["seed"].unique())


def replica(table: pd.DataFrame, seed: int) -> int:
    """The table seed a replayed trial of ``seed`` sees: seeds cycle through the table's recorded seeds."""
    recorded = seeds(table)
    return recorded[seed % len(recorded)]


def curve(table: pd.DataFrame, design_id: str, seed: int) -> pd.DataFrame:
    """The recorded evaluations of one design under the table seed that ``seed`` maps to, by step."""
    rows = table[(table["design_id"] == design_id) & (table["seed"] == replica(table, seed))]
    return rows.sort_values("step")


def final(table: pd.DataFrame) -> pd.DataFrame:
    """Per design: budget, and the seed-mean and seed spread (min, max) of every metric at the last step."""
    last = table[table["step"] == table.groupby(["design_id", "seed"])["step"].transform("max")]
    grouped = last.groupby("design_id")
    out = grouped.agg(name=("name", "first"), budget_pct=("budget_pct", "first"), reference=("reference", "first"),
                      seeds=("seed", "nunique"), step=("step", "max"),
                      valid_metric=("valid_metric", "mean"), test_metric=("test_metric", "mean"),
                      test_min=("test_metric", "min"), test_max=("test_metric", "max"),
                      test_metric_se=("test_metric_se", "mean"), seconds=("seconds", "mean"))
    return out.reset_index()


def true_front(table: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front of seed-mean test metric (higher is better) against budget, over the searchable designs."""
    designs = final(table)
    designs = designs[~designs["reference"].astype(bool)].reset_index(drop=True)
    keep = front(list(zip(designs["test_metric"], designs["budget_pct"])))
    return designs.iloc[keep].reset_index(drop=True)


def scored_hypervolume(table: pd.DataFrame, design_ids: list[str], reference: tuple[float, float]) -> float:
    """The hypervolume of a returned set of designs, each scored with the table's seed-mean test metric."""
    designs = final(table).set_index("design_id")
    points = [(designs.at[d, "test_metric"], designs.at[d, "budget_pct"]) for d in design_ids if d in designs.index]
    return hypervolume(points, reference)


def generate(spec: Any, *, full_lr: float, verbose: int = 1) -> None:
    """Train every (design, seed) of a grid ``spec`` that its records lack, then full fine-tuning's reference rows
    (at ``full_lr``: a PEFT learning rate is far too high for it). Interrupted, it resumes where it stopped.

    The grid as first started is one search (``runner.run``: the searcher enqueues every case). Designs or seeds
    added to the spec's menus since are trained as a grid of their own: the table grows without retraining."""
    import hashlib

    from search import runner

    saved = runner.spec_path(spec.root, spec.name)
    first = runner.saved_spec(spec.root, spec.name) if saved.exists() else spec
    runner.run(first, resume=saved.exists(), verbose=verbose)
    done, budget_of = _completed(spec.tracking_uri, spec.name), runner.budget_function(spec)
    added = [{"design": design.to_dict(), "budget": budget_of(design), "optuna_trial": -1, "seed": seed, "preset": ""}
             for design, seed in runner.grid_cases(spec) if (design.id, seed) not in done]
    if added:  # named by what it trains: a rerun after an interruption trains what is still missing
        digest = hashlib.sha1(repr([(c["design"], c["seed"]) for c in added]).encode()).hexdigest()[:8]
        runner.run_cases(spec, f"{spec.name}-added-{digest}", added, verbose)
    train = {**runner.constants(spec)["train"], "lr": full_lr}
    references = [{"design": None, "budget": 100.0, "optuna_trial": -1, "seed": spec.seed + k, "preset": "full",
                   "train": train} for k in range(spec.seeds)]
    runner.run_cases(spec, f"{spec.name}-reference", references, verbose)


def export(tracking_uri: str, search: str, metric: str, names: Mapping[str, str], out: str | Path) -> pd.DataFrame:
    """The table of the completed trials of ``search`` (an MLflow experiment) whose designs ``names`` lists
    (design id -> readable name; a design since removed from the spec's menus stays out), written to ``out``.

    ``metric``: the task's validation metric as logged (``accuracy``)."""
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri)
    rows = [row for run in _completed_runs(mlflow, search) if run.data.tags[Tags.DESIGN_ID] in names
            for row in _rows(mlflow, run, metric, names)]
    table = pd.DataFrame(rows).sort_values(["reference", "budget_pct", "design_id", "seed", "step"])
    table.to_csv(out, index=False, float_format="%.6g")
    return table


def _completed_runs(mlflow: Any, search: str) -> list[Any]:
    experiment = mlflow.get_experiment_by_name(search)
    if experiment is None:
        return []
    runs = mlflow.search_runs([experiment.experiment_id], max_results=10_000,
                              filter_string=f"tags.{Tags.STATUS} = '{Status.COMPLETED}'")
    return [run for run in runs if Tags.TRIAL in run.data.tags]


def _completed(tracking_uri: str, search: str) -> set[tuple[str, int]]:
    """The (design id, seed) cases ``search`` has completed, from its MLflow records."""
    from mlflow.tracking import MlflowClient

    return {(run.data.tags[Tags.DESIGN_ID], int(run.data.params[Params.SEED]))
            for run in _completed_runs(MlflowClient(tracking_uri), search)}


def _rows(mlflow: Any, run: Any, metric: str, names: Mapping[str, str]) -> list[dict[str, Any]]:
    import peft_space

    history = {key: {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, key)}
               for key in (metric, f"{metric}{SE}", "loss", "seconds")}
    params, tags, last = run.data.params, run.data.tags, run.data.metrics
    design_id = tags[Tags.DESIGN_ID]
    flat = {k: v for k, v in params.items() if k.split(".", 1)[0] in peft_space.SITES}
    rows = []
    final_step = max(history[metric])
    for step in sorted(history[metric]):
        is_last = step == final_step
        rows.append({"design_id": design_id, "name": names.get(design_id, design_id), "seed": int(params[Params.SEED]),
                     "step": step, "budget_pct": float(params[Params.BUDGET]), "valid_metric": history[metric][step],
                     "valid_metric_se": history[f"{metric}{SE}"].get(step), "valid_loss": history["loss"].get(step),
                     "test_metric": last.get(f"test_{metric}") if is_last else None,
                     "test_metric_se": last.get(f"test_{metric}{SE}") if is_last else None,
                     "seconds": history["seconds"].get(step), "reference": design_id == "full", **flat})
    return rows
