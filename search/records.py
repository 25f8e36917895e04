"""The Ray Tune callback that records a search's trials in MLflow, from the Ray driver.

Each callback copies what it needs from the trial into a record operation (``start``, ``log``, ``finish``,
stamped with the time it happened) and hands it to one background writer (``search.journal.Writer``: one
writer keeps SQLite consistent, the Tune loop never waits on the store, and a journal keeps what a killed driver
had queued); the writer applies it with ``search.mlflow_runs.TrialRuns``.

Ray pickles this callback by its module path into a search's experiment state (``Tuner.restore`` needs it), so
``search.records.Recorder`` stays where it is and keeps the attributes older searches pickled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.journal import Writer
from search.mlflow_runs import TrialRuns
from search.schema import Status


class Recorder(Callback):
    """Tune callback: one child run per trial, every reported metric at its step, the outcome as tags, the run's
    start and end at the trial's own times."""

    patience: float = 600.0  # also for a recorder pickled by an older version, resumed by this one

    def __init__(self, tracking_uri: str, search: str, artifacts: Path, constants: Mapping[str, Any],
                 sites: Sequence[str], patience: float = 600.0) -> None:
        self.tracking_uri, self.search, self.artifacts = tracking_uri, search, artifacts
        self.constants, self.sites, self.patience = dict(constants), tuple(sites), patience

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment: no live client
        kept = ("tracking_uri", "search", "artifacts", "constants", "sites", "patience")
        return {k: v for k, v in self.__dict__.items() if k in kept}

    def trial_runs(self) -> TrialRuns:
        """The search's runs, as this recorder writes them."""
        return TrialRuns(self.tracking_uri, self.search, self.artifacts, self.constants, self.sites)

    def setup(self, **info: Any) -> None:
        runs = self.trial_runs()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(runs.apply, runs.journal, self.patience)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("start", trial, {})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._submit("log", trial, dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("finish", trial, dict(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = str(trial.error_file or "the trial raised")
        self._submit("finish", trial, {**(trial.last_result or {}), "status": Status.FAILED, "error": error})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.close()

    def _submit(self, op: str, trial: Any, result: dict[str, Any]) -> None:
        self.writer.submit({"op": op, "trial": trial.trial_id, "config": trial.config, "result": result,
                            "time": time.time()})
