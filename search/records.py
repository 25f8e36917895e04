"""MLflow records of a search, written from the Ray driver by one background thread (one writer: SQLite stays
consistent, and the Tune loop never waits on the store).

A search is a parent run (tag ``peft_search.search``) in the experiment named after it; each Ray trial is a
child run (``mlflow.parentRunId``) found again by its tag ``ray_trial_id``, so a resumed search adds to the
same runs instead of duplicating them. Params are the design's flat, site-namespaced dimensions plus the
search's constants; metrics are every report at its step; tags say how the trial ended.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported anywhere
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # the writer retries with its own back-off
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from ray.tune import Callback  # noqa: E402

from search.schema import Params, Status, Tags  # noqa: E402

log = logging.getLogger(__name__)

MAX_PARAM = 6000  # MLflow's limit on a param value


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(mlflow: MlflowClient, name: str, artifacts: Path) -> str:
    """The search's experiment, created with its artifacts beside the stores (not in the working directory)."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    tags = {"mlflow.experimentKind": "custom_model_development",  # the UI opens on training runs, not GenAI views
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


class Writer:
    """Applies record operations in order on one background thread, so the Tune loop never waits on the store.

    Every operation is first appended to a journal file (write-ahead), so a driver killed with operations still
    queued loses none: the next run or resume of the search replays the journal first. Replaying is harmless
    because every operation is idempotent (finished runs are skipped, metrics carry the trial's own timestamp and
    MLflow drops exact duplicates, params are write-once). An operation that fails because the store is
    unreachable (a tracking server restarting, SQLite locked by another search) is retried with back-off until
    the store has been away for ``patience`` seconds, also when the search is ending; past that, each later
    operation is tried once (a store gone for good must not hold the driver for ``patience`` per record). The
    journal is removed once everything in it has been written; what failed (or was pending when the user pressed
    Ctrl-C) keeps it for the next run."""

    def __init__(self, apply: Callable[[dict[str, Any]], None], journal: Path, patience: float = 600.0) -> None:
        self.apply, self.journal, self.patience = apply, journal, patience
        self.closing, self.kept = False, False
        self.away_since: float | None = None  # when the store stopped answering
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        if journal.exists():  # left over from a search that was killed or ended while the store was down
            for line in journal.read_text().splitlines():
                self.queue.put(json.loads(line))
        self.file = open(journal, "a")
        self.thread = threading.Thread(target=self._drain, name="mlflow-writer", daemon=True)
        self.thread.start()

    def submit(self, operation: dict[str, Any]) -> None:
        self.file.write(json.dumps(operation, default=str) + "\n")
        self.file.flush()  # in the OS's hands before the driver can be killed
        self.queue.put(operation)

    def close(self) -> None:
        """Write what is queued, waiting for an unreachable store up to ``patience``; on Ctrl-C, keep the rest."""
        self.queue.put(None)
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=1.0)
        except KeyboardInterrupt:
            self.closing = True
            self.thread.join()
        self.file.close()
        if not self.kept:
            self.journal.unlink(missing_ok=True)

    def _drain(self) -> None:
        while (operation := self.queue.get()) is not None:
            if self.closing:
                self.kept = True
            else:
                self._write(operation)

    def _write(self, operation: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                self.apply(operation)
                self.away_since = None
                return
            except Exception as err:
                self.away_since = self.away_since or time.monotonic()
                if not _transient(err) or self.closing or time.monotonic() - self.away_since > self.patience:
                    log.error("MLflow refused a record (%s); kept in %s for the next run or resume", err, self.journal)
                    self.kept = True
                    return
                log.warning("MLflow unreachable (%s); retrying in %.0f s", str(err).splitlines()[0][:200], delay)
                time.sleep(delay)
                delay = min(2 * delay, 15.0)


def _transient(err: Exception) -> bool:
    """The store is away or busy (worth waiting for), as opposed to a record it will never take."""
    text = f"{type(err).__name__}: {err}".lower()
    signs = ("connection", "max retries", "refused", "database is locked", "temporarily unavailable", "timed out",
             "503", "502", "operationalerror")
    return isinstance(err, (ConnectionError, TimeoutError)) or any(sign in text for sign in signs)


class Recorder(Callback):
    """Tune callback: one child run per trial, every reported metric at its step, the outcome as tags.

    Callbacks copy what they need from the trial into an operation; the writer thread applies it, waiting up to
    ``patience`` seconds for a store that went away (``Writer``)."""

    patience: float = 600.0  # also for a recorder pickled by an older version, resumed by this one

    def __init__(self, tracking_uri: str, search: str, artifacts: Path, constants: Mapping[str, Any],
                 sites: Sequence[str], patience: float = 600.0) -> None:
        self.tracking_uri, self.search, self.artifacts = tracking_uri, search, artifacts
        self.constants, self.sites, self.patience = dict(constants), tuple(sites), patience

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment: no live client
        kept = ("tracking_uri", "search", "artifacts", "constants", "sites", "patience")
        return {k: v for k, v in self.__dict__.items() if k in kept}

    def setup(self, **info: Any) -> None:
        self.mlflow = client(self.tracking_uri)
        self.parent: str | None = None  # found or created by the writer on first use: the store may be away now
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.finished: set[str] = set()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(self._apply, self.artifacts / f"pending-{self.search}.jsonl", self.patience)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.writer.submit({"op": "log", "trial": trial.trial_id, "config": trial.config, "result": dict(result)})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit({"op": "finish", "trial": trial.trial_id, "config": trial.config,
                            "result": dict(trial.last_result or {})})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = {**(trial.last_result or {}), "status": Status.FAILED, "error": str(trial.error_file or "the trial raised")}
        self.writer.submit({"op": "finish", "trial": trial.trial_id, "config": trial.config, "result": result})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.close()

    def finish_stale(self, trials: Sequence[Any], total_steps: int) -> int:
        """Finish the child runs MLflow still holds as running for trials Optuna holds as ended, as Optuna's
        record says they ended. Ray tells the searcher (Optuna) before its callbacks (this recorder), so a
        driver killed between the two leaves such a run (found by ``benchmarks/soak.py``). Returns how many."""
        from search.report import OUTCOMES

        ended = {t.user_attrs["ray_trial_id"]: t for t in sorted(trials, key=lambda t: t.number)
                 if "ray_trial_id" in t.user_attrs and t.state in OUTCOMES}  # a re-run trial: its latest record
        self.setup()
        experiment = experiment_id(self.mlflow, self.search, self.artifacts)
        running = self.mlflow.search_runs([experiment], max_results=50_000, filter_string="attributes.status = 'RUNNING'")
        stale = [run.data.tags[Tags.TRIAL] for run in running if run.data.tags.get(Tags.TRIAL) in ended]
        for trial_id in stale:
            trial = ended[trial_id]
            status = OUTCOMES[trial.state]
            result = {"status": status, "total_steps": total_steps,
                      "step": trial.user_attrs.get("step", total_steps if status == Status.COMPLETED else 0)}
            if reason := trial.user_attrs.get("error") or trial.user_attrs.get("interrupted"):
                result["error"] = reason
            self.writer.submit({"op": "finish", "trial": trial_id, "config": {}, "result": result})
        self.writer.close()
        return len(stale)

    def _apply(self, operation: dict[str, Any]) -> None:
        if self.parent is None:
            self.experiment = experiment_id(self.mlflow, self.search, self.artifacts)
            self.parent = parent_run(self.mlflow, self.experiment, self.search, self.constants)
        write = self._log if operation["op"] == "log" else self._finish
        write(operation["trial"], dict(operation["config"]), operation["result"])

    # -- on the writer thread ----------------------------------------------------------------------------
    def _log(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        run = self._run(trial_id, config)
        if run is None:
            return
        step, when = int(result.get("step", 0)), int(1000 * result.get("timestamp", time.time()))  # replay-safe
        metrics = [Metric(k, float(v), when, step) for k, v in result.items() if _is_number(v) and k not in NOT_METRICS]
        where = [RunTag(Tags.NODE_ID, str(result["node_id"]))] if "node_id" in result else []  # where it runs now
        self.mlflow.log_batch(run, metrics=metrics, params=new_params(self.mlflow, run, _resolved(result)), tags=where)

    def _finish(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        run = self._run(trial_id, config)
        if run is None:
            return
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
        self.mlflow.set_terminated(run, RunStatus.to_string(RunStatus.FAILED if status == Status.FAILED else RunStatus.FINISHED))
        self.finished.add(trial_id)

    def _run(self, trial_id: str, config: dict[str, Any]) -> str | None:
        """The trial's child run (created on first use); ``None`` once it is finished: nothing is logged twice."""
        if trial_id in self.finished:
            return None
        if trial_id not in self.runs:
            found = self.mlflow.search_runs([self.experiment], max_results=1,
                                            filter_string=f"tags.`{Tags.TRIAL}` = '{trial_id}'")
            if found and found[0].info.status in ("FINISHED", "FAILED"):
                self.finished.add(trial_id)
                return None
            self.runs[trial_id] = found[0].info.run_id if found else self._create(trial_id, config)
            if config:  # again if found: a driver killed between creating and describing it left a bare run
                self._describe(self.runs[trial_id], config)
        return self.runs[trial_id]

    def _create(self, trial_id: str, config: dict[str, Any]) -> str:
        from search.trainable import design_id, unfold

        confirmation = "case" in config
        config = unfold(config)
        tags = {Tags.PARENT: self.parent, Tags.TRIAL: trial_id, Tags.DESIGN_ID: design_id(_design(config)),
                Tags.OPTUNA_TRIAL: str(config.get("optuna_trial", "")), Tags.PRESET: config.get("preset", ""),
                Tags.STATUS: Status.RUNNING, Tags.CONFIRMATION: str(confirmation).lower()}
        run = self.mlflow.create_run(self.experiment, run_name=f"{self.search}-{config.get('optuna_trial', trial_id)}",
                                     tags=tags)
        return run.info.run_id

    def _describe(self, run: str, config: dict[str, Any]) -> None:
        """The trial's params (the search's constants, the design, budget, seed) and its design.json."""
        from search.trainable import unfold

        config = unfold(config)
        design = _design(config)
        untouched = {f"{site}.form": "none" for site in self.sites}  # a searched site left alone is a value too
        params = {**self.constants, **untouched, **(config["design"] or {}), Params.BUDGET: config["budget"],
                  Params.SEED: config["seed"]}
        self.mlflow.log_batch(run, params=new_params(self.mlflow, run, params))
        if design is not None:  # full fine-tuning has no design to save
            self.mlflow.log_text(run, design.to_json(), "design.json")


NOT_METRICS = {"step", "total_steps", "optuna_trial", "training_iteration", "timestamp", "time_this_iter_s",
               "time_total_s", "time_since_restore", "iterations_since_restore", "pid", "done"}


def _design(config: Mapping[str, Any]) -> Any:
    from peft_space import Design

    return Design.from_dict(config["design"]) if config["design"] is not None else None


def _resolved(result: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's resolved configuration from a final report (nested, or flattened by Ray as ``resolved/…``)."""
    if isinstance(result.get("resolved"), Mapping):
        return dict(result["resolved"])
    return {k.removeprefix("resolved/"): v for k, v in result.items() if k.startswith("resolved/")}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return str(value)[:MAX_PARAM]


def record_summary(mlflow: MlflowClient, search: str, summary: Any, weights: Mapping[int, Path]) -> None:
    """After a search: tag every trial run ``pareto`` true/false, attach each front trial's trained modification
    (``weights``: Optuna trial -> the folder ``peft_space.save`` wrote), and give the parent run the front
    (CSV, JSON), the importance table, the hypervolume and the Pareto plot (HTML with hover, PNG)."""
    from search.plots import pareto_html, pareto_png
    from search.report import describe

    experiment = mlflow.get_experiment_by_name(search).experiment_id
    parent = mlflow.search_runs([experiment], filter_string=f"tags.`{Tags.SEARCH}` = '{search}'")[0].info.run_id
    children = mlflow.search_runs([experiment], max_results=50_000, filter_string=f"tags.`{Tags.PARENT}` = '{parent}'")
    on_front = {str(row.trial) for row in summary.front}
    for run in children:
        trial = run.data.tags.get(Tags.OPTUNA_TRIAL)
        mlflow.set_tag(run.info.run_id, Tags.PARETO, str(trial in on_front).lower())
        if trial in on_front and run.data.tags.get(Tags.CONFIRMATION) == "false" and int(trial) in weights:
            mlflow.log_artifacts(run.info.run_id, str(weights[int(trial)]), "modification")
    rows = [{**asdict(row), "description": describe(row.design_json) if row.design_json else ""}
            for row in [*summary.rows, *summary.stopped]]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        columns = ["trial", "design", "description", "budget", "metric", "status", "step", "on_front"]
        with open(out / "trials.csv", "w", newline="") as table:
            writer = csv.DictWriter(table, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        with open(out / "importance.csv", "w", newline="") as table:
            csv.writer(table).writerows([("dimension", "importance"), *summary.importance.items()])
        (out / "summary.json").write_text(summary.to_json())
        title = f"{search}: {summary.metric} against budget"
        pareto_html(rows, summary.metric, title, out / "pareto.html")
        pareto_png(rows, summary.metric, title, out / "pareto.png")
        mlflow.log_artifacts(parent, folder, "pareto")
    now = int(time.time() * 1000)
    mlflow.log_batch(parent, metrics=[Metric("hypervolume", summary.hypervolume, now, 0)]
                     + [Metric(f"trials_{k}", v, now, 0) for k, v in summary.counts.items()])
