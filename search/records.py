"""MLflow records of a search, written from the Ray driver (one writer: SQLite stays consistent).

A search is a parent run (tag ``peft_search.search``) in the experiment named after it; each Ray trial is a
child run (``mlflow.parentRunId``) found again by its tag ``ray_trial_id``, so a resumed search adds to the
same runs instead of duplicating them. Params are the design's flat, site-namespaced dimensions plus the
search's constants; metrics are every report at its step; tags say how the trial ended.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported anywhere

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray.tune import Callback  # noqa: E402

SEARCH_TAG = "peft_search.search"
TRIAL_TAG = "ray_trial_id"
MAX_PARAM = 6000  # MLflow's limit on a param value


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(mlflow: MlflowClient, name: str, artifacts: Path) -> str:
    """The search's experiment, created with its artifacts beside the stores (not in the working directory)."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def parent_run(mlflow: MlflowClient, experiment: str, name: str, params: Mapping[str, Any]) -> str:
    """The search's parent run: found by its tag (a resumed search keeps it) or created."""
    runs = mlflow.search_runs([experiment], filter_string=f"tags.`{SEARCH_TAG}` = '{name}'", max_results=1)
    if runs:
        return runs[0].info.run_id
    run = mlflow.create_run(experiment, run_name=name, tags={SEARCH_TAG: name})
    mlflow.log_batch(run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    return run.info.run_id


class Recorder(Callback):
    """Tune callback: one child run per trial, every reported metric at its step, the outcome as tags."""

    def __init__(self, tracking_uri: str, search: str, artifacts: Path, constants: Mapping[str, Any],
                 sites: Sequence[str]) -> None:
        self.tracking_uri, self.search, self.artifacts = tracking_uri, search, artifacts
        self.constants, self.sites = dict(constants), tuple(sites)
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.finished: set[str] = set()

    def setup(self, **info: Any) -> None:
        self.mlflow = client(self.tracking_uri)
        self.experiment = experiment_id(self.mlflow, self.search, self.artifacts)
        self.parent = parent_run(self.mlflow, self.experiment, self.search, self.constants)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self._run(trial)
        if run is None:
            return
        step, now = int(result.get("step", 0)), int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if _is_number(v) and k not in NOT_METRICS]
        self.mlflow.log_batch(run, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, {**(trial.last_result or {}), "status": "failed",
                             "error": str(trial.error_file or "the trial raised")})

    def _finish(self, trial: Any, result: dict[str, Any]) -> None:
        run = self._run(trial)
        if run is None:
            return
        step, total = int(result.get("step", 0)), int(result.get("total_steps", 0))
        status = result.get("status", "failed")
        if status != "failed" and step < total:
            status, fidelity = "stopped", f"stopped by ASHA at step {step}"
        else:
            fidelity = "full budget" if status == "completed" else f"{status} at step {step}"
        tags = {"status": status, "fidelity": fidelity, "step_reached": str(step), "node_id": result.get("node_id", "")}
        if result.get("error"):
            tags["error"] = _text(result["error"])
        self.mlflow.log_batch(run, tags=[RunTag(k, v) for k, v in tags.items()])
        self.mlflow.set_terminated(run, RunStatus.to_string(RunStatus.FAILED if status == "failed" else RunStatus.FINISHED))
        self.finished.add(trial.trial_id)

    def _run(self, trial: Any) -> str | None:
        """The trial's child run (created on first use); ``None`` once it is finished: nothing is logged twice."""
        if trial.trial_id in self.finished:
            return None
        if trial.trial_id not in self.runs:
            found = self.mlflow.search_runs([self.experiment], max_results=1,
                                            filter_string=f"tags.`{TRIAL_TAG}` = '{trial.trial_id}'")
            if found and found[0].info.status in ("FINISHED", "FAILED"):
                self.finished.add(trial.trial_id)
                return None
            self.runs[trial.trial_id] = found[0].info.run_id if found else self._create(trial)
        return self.runs[trial.trial_id]

    def _create(self, trial: Any) -> str:
        from search.trainable import unfold

        config = unfold(trial.config)
        tags = {"mlflow.parentRunId": self.parent, TRIAL_TAG: trial.trial_id, "design_id": _design_id(config),
                "optuna_trial": str(config.get("optuna_trial", "")), "status": "running",
                "confirmation": str("case" in trial.config).lower()}
        run = self.mlflow.create_run(self.experiment, run_name=f"{self.search}-{config.get('optuna_trial', trial.trial_id)}",
                                     tags=tags)
        untouched = {f"{site}.form": "none" for site in self.sites}  # a searched site left alone is a value too
        params = {**self.constants, **untouched, **config["design"], "budget": config["budget"], "seed": config["seed"]}
        self.mlflow.log_batch(run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
        return run.info.run_id


NOT_METRICS = {"step", "total_steps", "optuna_trial", "training_iteration", "timestamp", "time_this_iter_s",
               "time_total_s", "time_since_restore", "iterations_since_restore", "pid", "done"}


def _design_id(config: Mapping[str, Any]) -> str:
    from peft_space import Design

    return Design.from_dict(config["design"]).id


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return str(value)[:MAX_PARAM]


def record_front(mlflow: MlflowClient, search: str, summary: Any) -> None:
    """Tag every trial run ``pareto`` true/false and attach the front (JSON, CSV) and hypervolume to the parent."""
    import csv
    import io

    experiment = mlflow.get_experiment_by_name(search)
    parent = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{search}'")[0]
    on_front = {str(row.trial) for row in summary.front}
    children = mlflow.search_runs([experiment.experiment_id], max_results=50_000,
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    for run in children:
        mlflow.set_tag(run.info.run_id, "pareto", str(run.data.tags.get("optuna_trial") in on_front).lower())
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["trial", "design", "budget_pct", summary.metric])
    writer.writerows([row.trial, row.design, row.budget, row.metric] for row in summary.front)
    mlflow.log_text(parent.info.run_id, table.getvalue(), "pareto/front.csv")
    mlflow.log_text(parent.info.run_id, summary.to_json(), "pareto/summary.json")
    mlflow.log_batch(parent.info.run_id, metrics=[Metric("hypervolume", summary.hypervolume, int(time.time() * 1000), 0)]
                     + [Metric(f"trials_{k}", v, int(time.time() * 1000), 0) for k, v in summary.counts.items()])
