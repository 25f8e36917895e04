"""Read searches back from MLflow: every trial as a row, the front rebuilt, searches compared, Table 6's layout.

Only what the runs hold is used (params, metrics, tags), so any recorded search — finished, running or
from another machine's tracking server — reads the same way::

    trials = dashboards.trials("sqlite:///peft-search/mlflow.db", "default")
    dashboards.front(trials)            # the non-dominated full-budget trials
    dashboards.table6(trials)           # method, % params, metric (median over seeds), as the paper's Table 6
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from search import pareto
from search.schema import SE, Params, Status, Tags
from trainers import validation_metrics

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

COLUMNS = ["search", "run_id", "run_name", "trial", "preset", "design_id", "budget", "metric", "test", "test_se",
           "status", "step", "confirmation", "seed"]


def trials(tracking_uri: str, search: str) -> Any:
    """One row per trial run of ``search`` (confirmation runs included, flagged), as a pandas DataFrame: ``metric``
    on the validation split (what the search selected on), ``test`` and its standard error ``test_se`` on the test
    split (what to report; full-budget runs only)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(search)
    if experiment is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ValueError(f"search: {search!r} is not recorded in {tracking_uri}; recorded: {names}")
    parent = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{Tags.SEARCH}` = '{search}'")
    recorded = parent[0].data.params if parent else {}
    metric = recorded.get(Params.METRIC, "")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{Tags.TRIAL} != ''", max_results=50_000)
    rows = []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        metric = metric or next((m for m in validation_metrics() if m in metrics), "")  # a parent left bare
        rows.append({"search": search, "run_id": run.info.run_id, "run_name": run.info.run_name,
                     "trial": int(tags.get(Tags.OPTUNA_TRIAL) or -1), "preset": tags.get(Tags.PRESET, ""),
                     "design_id": tags.get(Tags.DESIGN_ID, ""), "budget": float(params.get(Params.BUDGET, "nan")),
                     "metric": metrics.get(metric, float("nan")),
                     "test": metrics.get(f"test_{metric}", float("nan")),
                     "test_se": metrics.get(f"test_{metric}{SE}", float("nan")), "status": tags.get(Tags.STATUS, ""),
                     "step": int(tags.get(Tags.STEP_REACHED, 0)), "confirmation": tags.get(Tags.CONFIRMATION) == "true",
                     "seed": int(params.get(Params.SEED, 0))})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs.update(metric=metric, higher_is_better=recorded.get(Params.HIGHER_IS_BETTER, "True") == "True")
    return frame


def front(frame: Any) -> Any:
    """The Pareto front of the search's full-budget trials, by budget. A trial re-trained with more seeds
    (``--confirm-seeds``: its confirmation runs) counts with the median over its seeds, as the search chose it."""
    higher_is_better = frame.attrs.get("higher_is_better", True)
    done = frame[frame.status == Status.COMPLETED]
    complete = done[~done.confirmation].reset_index(drop=True)
    seeds = done.groupby("trial").metric.median()  # a trial's own run and its confirmations share its number
    complete["metric"] = [seeds[t] if t >= 0 else m for t, m in zip(complete.trial, complete.metric)]
    sign = 1.0 if higher_is_better else -1.0
    keep = pareto.front([(sign * m, b) for m, b in zip(complete.metric, complete.budget)])
    return complete.iloc[keep].reset_index(drop=True)


def compare(tracking_uri: str, searches: Sequence[str]) -> Any:
    """The fronts of several searches in one table (column ``search``), e.g. one space on two tasks."""
    import pandas as pd

    return pd.concat([front(trials(tracking_uri, name)) for name in searches], ignore_index=True)


def table6(frame: Any) -> Any:
    """The paper's Table 6 layout: method (preset name, or design id), % params, metric (median over seeds of
    the full-budget runs), how many runs, and whether the method is on the front; sorted by budget."""
    complete = frame[frame.status == Status.COMPLETED].copy()
    complete["method"] = [p or d for p, d in zip(complete.preset, complete.design_id)]
    complete["on_front"] = complete.run_id.isin(front(frame).run_id)
    table = complete.groupby("method").agg(params_pct=("budget", "first"), metric=("metric", "median"),
                                           runs=("metric", "size"), on_front=("on_front", "any"))
    return table.sort_values("params_pct").reset_index()
