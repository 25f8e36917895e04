"""After a search has trained its trials: the summary (front, hypervolume, importance) from its Optuna study, the
confirmation of the front with more seeds, and publishing both to MLflow with the front's trained weights."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import publish, report
from search.assemble import cases_tuner
from search.mlflow_runs import client
from search.schema import Attrs, Status
from search.spec import Spec
from search.stores import open_storage
from search.trial_config import CASE, suggestion

log = logging.getLogger(__name__)


def study(spec: Spec) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))


def reference(spec: Spec) -> tuple[float, float]:
    """The hypervolume's reference point, (worst metric, largest budget): the validation metric of a model that
    learned nothing, and the budget cap. Its perplexity is a uniform guess's over the model's output vocabulary, the
    vocabulary's size (lower is better: a front below it has a positive hypervolume); other metrics' is the task's
    ``chance_metric``."""
    task = spec.task_def
    if task.validation_metric == "perplexity":
        import transformers as T

        from trainers import model_path

        return float(T.AutoConfig.from_pretrained(model_path(spec.model)).get_text_config().vocab_size), spec.budget_cap
    return task.chance_metric, spec.budget_cap


def summarise(spec: Spec, confirmed: dict[int, float] | None = None) -> report.Summary:
    task = spec.task_def
    return report.summarise(study(spec), task.validation_metric, task.higher_is_better, reference(spec), confirmed)


def confirm(spec: Spec, summary: report.Summary, verbose: int) -> dict[int, float]:
    """Re-train every front configuration (its design and sampled hyper-parameters) with ``confirm_seeds`` more
    seeds: each one's median metric over its seeds."""
    from peft_space import Design

    metric, front = spec.task_def.validation_metric, summary.front
    cases = [suggestion(Design.from_json(row.design_json), row.budget, optuna_trial=row.trial, seed=spec.seed + k,
                        preset=row.design if row.design in spec.points_to_evaluate else "", train=row.train)
             for row in front for k in range(1, spec.confirm_seeds + 1)]
    results = cases_tuner(spec, f"{spec.name}-confirm", cases, verbose).fit()
    by_trial: dict[int, list[float]] = {}
    for result in results:
        if result.metrics and result.metrics.get("status") == Status.COMPLETED:
            by_trial.setdefault(result.config[CASE]["optuna_trial"], []).append(result.metrics[metric])
    return {row.trial: statistics.median([row.metric, *by_trial.get(row.trial, [])]) for row in front}


def publish_summary(spec: Spec, summary: report.Summary) -> None:
    """Tag the trials' runs on or off the front; attach the front's weights (each front trial's last checkpoint),
    tables and plots. The tracking store being away costs the front's record, not the search: trials are kept in
    the journal, and ``peft-search resume`` records the front later."""
    trials = spec.experiment_dir / spec.name
    weights: dict[int, Path] = {}
    for row in summary.front:
        checkpoints = sorted(trials.glob(f"trial_{row.ray_trial_id}/checkpoint_*"))
        if checkpoints:
            weights[row.trial] = checkpoints[-1]
    try:
        publish.record_summary(client(spec.tracking_uri), spec.name, summary, weights)
    except Exception as err:
        log.error("could not record the front in MLflow (%s); `peft-search resume %s` records it later", err, spec.name)


def first_failure(spec: Spec) -> FrozenTrial | None:
    """The first trial that failed in training (not one refused for the budget cap or cut short by a stopped
    driver), or None."""
    failed = [t for t in study(spec).trials if t.state == TrialState.FAIL and Attrs.INFEASIBLE not in t.user_attrs
              and Attrs.INTERRUPTED not in t.user_attrs]
    return failed[0] if failed else None
