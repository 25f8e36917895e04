"""The MLflow runs of a search: its experiment, its parent run, and one child run per trial.

A search is a parent run (tag ``Tags.SEARCH``) in the experiment named after it; each Ray trial is a child run
(``Tags.PARENT``) found again by its tag ``Tags.TRIAL``, so a resumed search adds to the same runs instead of
duplicating them. Params are the design's flat, site-namespaced dimensions plus the search's constants; metrics
are every report at its step; tags say how the trial ended. A run starts and ends at the trial's own times (taken
when Ray Tune told the driver, and journalled with the record), so a run written late, after an outage or by a
replay, still shows how long its trial trained.

``TrialRuns.apply`` applies one record operation (``start``, ``log`` or ``finish`` of a trial); ``search.records``
queues them from Ray Tune's callbacks, and ``finish_stale`` from Optuna's record after a search.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported anywhere
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the writer retries with its own back-off
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from search.journal import Writer  # noqa: E402
from search.schema import OUTCOMES, Attrs, Params, Status, Tags, flag  # noqa: E402
from search.trial_config import TrialConfig, read  # noqa: E402

ENDED = (RunStatus.to_string(RunStatus.FINISHED), RunStatus.to_string(RunStatus.FAILED))
NOT_METRICS = {"step", "total_steps", "optuna_trial", "training_iteration", "timestamp", "time_this_iter_s",
               "time_total_s", "time_since_restore", "iterations_since_restore", "pid", "done"}


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(mlflow: MlflowClient, name: str, artifacts: Path) -> str:
    """The search's experiment, created with its artifacts beside the stores (not in the working directory)."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    tags = {"mlflow.experimentKind": "custom_model_development",
            "mlflow.note.content": f"peft-search `{name}`: the parent run holds the Pareto plot (artifacts/pareto); "
                                   "each child run is one trial."}
    return mlflow.create_experiment(name, artifact_location=artifacts.resolve().as_uri(), tags=tags)


def parent_run(mlflow: MlflowClient, experiment: str, name: str, params: Mapping[str, Any]) -> str:
    """The search's parent run: found by its tag (a resumed search keeps it) or created."""
    runs = mlflow.search_runs([experiment], filter_string=f"tags.`{Tags.SEARCH}` = '{name}'", max_results=1)
    run = runs[0].info.run_id if runs else mlflow.create_run(experiment, run_name=name, tags={Tags.SEARCH: name}).info.run_id
    mlflow.log_batch(run, params=new_params(mlflow, run, params))  # again if found: a killed driver may have left it bare
    return run


def new_params(mlflow: MlflowClient, run: str, values: Mapping[str, Any]) -> list[Param]:
    """The params a run does not hold yet (MLflow params are write-once; a resumed search may have raised one)."""
    if not values:
        return []
    logged = set(mlflow.get_run(run).data.params)
    return [Param(k, _text(v)) for k, v in values.items() if k not in logged]


def journal_path(artifacts: Path, search: str) -> Path:
    """The write-ahead journal of a search's records (``search.journal.Writer``)."""
    return artifacts / f"pending-{search}.jsonl"


class TrialRuns:
    """Applies a search's record operations to MLflow: each names a Ray trial, carries the trial's config (empty
    when the run exists already) and a result, and the time it happened (seconds since the epoch)."""

    def __init__(self, tracking_uri: str, search: str, artifacts: Path, constants: Mapping[str, Any],
                 sites: Sequence[str]) -> None:
        self.mlflow, self.search, self.artifacts = client(tracking_uri), search, artifacts
        self.constants, self.sites = dict(constants), tuple(sites)
        self.parent: str | None = None  # found or created on first use: the store may be away now
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.finished: set[str] = set()

    @property
    def journal(self) -> Path:
        return journal_path(self.artifacts, self.search)

    def apply(self, operation: dict[str, Any]) -> None:
        if self.parent is None:
            self.experiment = experiment_id(self.mlflow, self.search, self.artifacts)
            self.parent = parent_run(self.mlflow, self.experiment, self.search, self.constants)
        when = int(1000 * operation.get("time", time.time()))  # journalled: a replay keeps the trial's own time
        run = self._run(operation["trial"], dict(operation["config"]), when)
        if run is not None and operation["op"] == "log":
            self._log(run, operation["result"])
        elif run is not None and operation["op"] == "finish":
            self._finish(run, operation["trial"], operation["result"], when)

    def _log(self, run: str, result: dict[str, Any]) -> None:
        step, when = int(result.get("step", 0)), int(1000 * result.get("timestamp", time.time()))  # replay-safe
        metrics = [Metric(k, float(v), when, step) for k, v in result.items() if _is_number(v) and k not in NOT_METRICS]
        where = [RunTag(Tags.NODE_ID, str(result["node_id"]))] if "node_id" in result else []  # where it runs now
        self.mlflow.log_batch(run, metrics=metrics, params=new_params(self.mlflow, run, _resolved(result)), tags=where)

    def _finish(self, run: str, trial_id: str, result: dict[str, Any], when: int) -> None:
        step, total = int(result.get("step", 0)), int(result.get("total_steps", 0))
        status = Status(result.get("status", Status.FAILED))
        if status != Status.FAILED and step < total:
            status, fidelity = Status.STOPPED, f"stopped by ASHA at step {step}"
        else:
            fidelity = "full budget" if status == Status.COMPLETED else f"{status} at step {step}"
        tags = {Tags.STATUS: status, Tags.FIDELITY: fidelity, Tags.STEP_REACHED: str(step),
                Tags.NODE_ID: result.get("node_id", "")}
        if result.get("error"):
            tags[Tags.ERROR] = _text(result["error"])
        self.mlflow.log_batch(run, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                              params=new_params(self.mlflow, run, _resolved(result)))
        ended = RunStatus.FAILED if status == Status.FAILED else RunStatus.FINISHED
        self.mlflow.set_terminated(run, RunStatus.to_string(ended), end_time=when)
        self.finished.add(trial_id)

    def _run(self, trial_id: str, config: dict[str, Any], when: int) -> str | None:
        """The trial's child run (created on first use); ``None`` once it is finished: nothing is logged twice."""
        if trial_id in self.finished:
            return None
        if trial_id not in self.runs:
            found = self.mlflow.search_runs([self.experiment], max_results=1,
                                            filter_string=f"tags.`{Tags.TRIAL}` = '{trial_id}'")
            if found and found[0].info.status in ENDED:
                self.finished.add(trial_id)
                return None
            if not found and not config:  # a finish of a run never created: nothing to attach it to
                return None
            self.runs[trial_id] = found[0].info.run_id if found else self._create(trial_id, read(config), when)
            if config:  # again if found: a driver killed between creating and describing it left a bare run
                self._describe(self.runs[trial_id], read(config))
        return self.runs[trial_id]

    def _create(self, trial_id: str, trial: TrialConfig, when: int) -> str:
        tags = {Tags.PARENT: self.parent, Tags.TRIAL: trial_id, Tags.DESIGN_ID: trial.design_id,
                Tags.OPTUNA_TRIAL: str(trial.optuna_trial) if trial.optuna_trial >= 0 else "",
                Tags.PRESET: trial.preset, Tags.STATUS: Status.RUNNING, Tags.CONFIRMATION: flag(trial.confirmation)}
        if trial.confirmation and (original := self._original(trial.optuna_trial)) is not None:
            tags[Tags.CONFIRMS] = original.info.run_id
            tags["mlflow.note.content"] = (f"Confirmation of trial {trial.optuna_trial} (run "
                                           f"`{original.info.run_name}`): the same configuration with seed {trial.seed}.")
        run = self.mlflow.create_run(self.experiment, start_time=when, run_name=self._name(trial_id, trial), tags=tags)
        return run.info.run_id

    def _name(self, trial_id: str, trial: TrialConfig) -> str:
        """``default-16`` for a trial of the study, ``default-16-confirm-seed1`` for its confirmation, and a
        case outside the study by what it trains (``default-full-seed0``)."""
        if trial.confirmation:
            return f"{self.search}-{trial.optuna_trial}-confirm-seed{trial.seed}"
        if trial.optuna_trial >= 0:
            return f"{self.search}-{trial.optuna_trial}"
        return f"{self.search}-{trial.preset or trial.design_id}-seed{trial.seed}"

    def _original(self, optuna_trial: int) -> Any:
        """The run of the study's trial ``optuna_trial`` (not a confirmation of it), if recorded."""
        found = self.mlflow.search_runs([self.experiment], max_results=1, filter_string=(
            f"tags.`{Tags.OPTUNA_TRIAL}` = '{optuna_trial}' and tags.`{Tags.CONFIRMATION}` = '{flag(False)}'"))
        return found[0] if found else None

    def _describe(self, run: str, trial: TrialConfig) -> None:
        """The trial's params (the search's constants, the design, budget, seed, its hyper-parameters) and its
        design.json. A hyper-parameter has one name, its own (``lr``: the trainer logs the resolved value under
        it too), not also the spec's ``train.lr`` (the parent run keeps the spec's)."""
        untouched = {f"{site}.form": "none" for site in self.sites}  # a searched site left alone is a value too
        design = trial.design.to_dict() if trial.design is not None else {}
        constants = {k: v for k, v in self.constants.items() if not k.startswith("train.")}
        params = {**constants, **untouched, **design, Params.BUDGET: trial.budget, Params.SEED: trial.seed,
                  **{k: v for k, v in trial.train.items() if k != "steps"}}
        self.mlflow.log_batch(run, params=new_params(self.mlflow, run, params))
        if trial.design is not None:  # full fine-tuning has no design to save
            self.mlflow.log_text(run, trial.design.to_json(), "design.json")


def finish_stale(runs: TrialRuns, trials: Sequence[Any], total_steps: int, patience: float = 600.0) -> int:
    """Finish the child runs MLflow still holds as running for trials Optuna holds as ended (``trials``: the
    study's frozen trials), as Optuna's record says they ended. Ray tells the searcher (Optuna) before its
    callbacks (the recorder), so a driver killed between the two leaves such a run (found by
    ``benchmarks/soak.py``). The records go through the search's journal. Returns how many."""
    ended = {t.user_attrs[Attrs.RAY_TRIAL_ID]: t for t in sorted(trials, key=lambda t: t.number)
             if Attrs.RAY_TRIAL_ID in t.user_attrs and t.state.name in OUTCOMES}  # a re-run trial: its latest record
    runs.artifacts.mkdir(parents=True, exist_ok=True)
    writer = Writer(runs.apply, runs.journal, patience)
    experiment = experiment_id(runs.mlflow, runs.search, runs.artifacts)
    running = runs.mlflow.search_runs([experiment], max_results=50_000, filter_string="attributes.status = 'RUNNING'")
    stale = [run.data.tags[Tags.TRIAL] for run in running if run.data.tags.get(Tags.TRIAL) in ended]
    for trial_id in stale:
        writer.submit(_stale_finish(trial_id, ended[trial_id], total_steps))
    writer.close()
    return len(stale)


def _stale_finish(trial_id: str, trial: Any, total_steps: int) -> dict[str, Any]:
    """The finish record of a trial as Optuna's record of it says it ended."""
    status = OUTCOMES[trial.state.name]
    result = {"status": status, "total_steps": total_steps,
              "step": trial.user_attrs.get(Attrs.STEP, total_steps if status == Status.COMPLETED else 0)}
    if reason := trial.user_attrs.get(Attrs.ERROR) or trial.user_attrs.get(Attrs.INTERRUPTED):
        result["error"] = reason
    ended = trial.datetime_complete.timestamp() if trial.datetime_complete else time.time()
    return {"op": "finish", "trial": trial_id, "config": {}, "result": result, "time": ended}


def _resolved(result: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's resolved configuration from a final report (nested, or flattened by Ray as ``resolved/…``)."""
    if isinstance(result.get("resolved"), Mapping):
        return dict(result["resolved"])
    return {k.removeprefix("resolved/"): v for k, v in result.items() if k.startswith("resolved/")}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return str(value)[:Params.MAX_LENGTH]
