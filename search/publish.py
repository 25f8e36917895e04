"""What a finished search leaves on its MLflow records: every trial run tagged on or off the front, each front
trial's trained modification, and on the parent run the front (CSV, JSON), the importance table, the hypervolume
and the Pareto plot (HTML with hover, PNG)."""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from search.plots import pareto_html, pareto_png
from search.report import Summary, describe, hyperparameters
from search.schema import Artifacts, Tags, flag

COLUMNS = ["trial", "design", "description", "hyperparameters", "budget", "metric", "status", "step", "on_front"]


def record_summary(mlflow: MlflowClient, search: str, summary: Summary, weights: Mapping[int, Path]) -> None:
    """Tag the trial runs ``pareto`` true/false and attach each front trial's trained modification (``weights``:
    Optuna trial -> the folder ``peft_space.save`` wrote) to its run; a confirmation run of a front trial points
    to that run (tag ``Tags.WEIGHTS``), so an export from either finds the weights. Then the parent run's files."""
    experiment = mlflow.get_experiment_by_name(search).experiment_id
    parent = mlflow.search_runs([experiment], filter_string=f"tags.`{Tags.SEARCH}` = '{search}'")[0].info.run_id
    children = mlflow.search_runs([experiment], max_results=50_000, filter_string=f"tags.`{Tags.PARENT}` = '{parent}'")
    on_front = {str(row.trial) for row in summary.front}
    holders = {run.data.tags[Tags.OPTUNA_TRIAL]: run.info.run_id for run in children
               if run.data.tags.get(Tags.CONFIRMATION) == flag(False) and run.data.tags.get(Tags.OPTUNA_TRIAL)}
    for run in children:
        trial = run.data.tags.get(Tags.OPTUNA_TRIAL)
        mlflow.set_tag(run.info.run_id, Tags.PARETO, flag(trial in on_front))
        if trial not in on_front or int(trial) not in weights or trial not in holders:
            continue
        if run.info.run_id == holders[trial]:
            mlflow.log_artifacts(run.info.run_id, str(weights[int(trial)]), Artifacts.WEIGHTS)
        mlflow.set_tag(run.info.run_id, Tags.WEIGHTS, holders[trial])
    _parent_files(mlflow, parent, search, summary)


def _parent_files(mlflow: MlflowClient, parent: str, search: str, summary: Summary) -> None:
    rows = [{**asdict(row), "description": describe(row.design_json) if row.design_json else "",
             "hyperparameters": hyperparameters(row.train)} for row in [*summary.rows, *summary.stopped]]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        _csv(out / "trials.csv", [COLUMNS, *([row.get(c, "") for c in COLUMNS] for row in rows)])
        _csv(out / "importance.csv", [("dimension", "importance", "method"),
                                      *((k, v, summary.importance_method) for k, v in summary.importance.items())])
        (out / "summary.json").write_text(summary.to_json())
        title = f"{search}: {summary.metric} against budget"
        pareto_html(rows, summary.metric, title, out / "pareto.html")
        pareto_png(rows, summary.metric, title, out / "pareto.png")
        mlflow.log_artifacts(parent, folder, Artifacts.FRONT)
    now = int(time.time() * 1000)
    mlflow.log_batch(parent, metrics=[Metric("hypervolume", summary.hypervolume, now, 0)]
                     + [Metric(f"trials_{k}", v, now, 0) for k, v in summary.counts.items()])


def _csv(path: Path, rows: Any) -> None:
    with open(path, "w", newline="") as table:
        csv.writer(table).writerows(rows)
