"""Build a tabular benchmark (``search.tabular``'s format): every configuration of a finite spec's grid (each design
with each combination of the values ``search_train`` lists) trained for real, then read back from MLflow into
one CSV. ``peft-search tabulate SPEC`` runs it.

The grid is one search (``runner.run``: the searcher enqueues every (design, hyper-parameters, seed) case), then full
fine-tuning's reference rows at learning rates of their own (a PEFT learning rate is far too high for it). It
resumes from what is recorded: the table's CSV (committed, so a fresh clone without the MLflow store resumes) and
the search's own records. A rerun trains only the cases neither holds, as a grid of their own; so do designs or
values added to the spec since: the table grows without retraining.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

import peft_space
import trainers
from peft_space import FieldError
from search import runner, tabular
from search.assemble import budget_function, cases_tuner, grid_cases
from search.schema import SE, Params, Status, Tags, configuration_id
from search.space import grid, menu_label
from search.spec import Spec, saved_spec
from search.trial_config import suggestion
from trainers import FULL, PREDICTED_SHARE

REFERENCE_NAME = "full fine-tuning"
Case = tuple[str, int]  # (configuration id, seed)


def build(spec: Spec, out: str | Path, *, full_lrs: Sequence[float], export_only: bool = False,
          verbose: int = 1) -> pd.DataFrame:
    """Train what the table of ``spec`` lacks (unless ``export_only``) and write the table to ``out``."""
    if len(full_lrs) > 1 and "lr" not in spec.search_train:
        raise FieldError("full_lr", list(full_lrs), "one learning rate unless the grid varies lr (search_train)")
    if not export_only:
        generate(spec, out, full_lrs=full_lrs, verbose=verbose)
    return export(spec, out)


def generate(spec: Spec, out: str | Path, *, full_lrs: Sequence[float], verbose: int = 1) -> None:
    """Train every case of the grid ``spec`` and every reference row that neither the table ``out`` nor the records
    hold."""
    varied, saved = list(spec.search_train), spec.saved_path
    recorded = _in_table(out)
    if saved.exists() or not recorded:  # the grid search, or its continuation on this machine
        runner.run(saved_spec(spec.root, spec.name) if saved.exists() else spec, resume=saved.exists(),
                   verbose=verbose)
    done, budget_of = recorded | _completed(spec.tracking_uri, spec.name, varied), budget_function(spec)
    missing = [suggestion(design, budget_of(design), seed=seed, train=train) for design, train, seed in grid_cases(spec)
               if (configuration_id(design.id, train), seed) not in done]
    references = [suggestion(None, 100.0, preset=FULL, seed=spec.seed + k, train={"lr": lr})
                  for lr in full_lrs for k in range(spec.seeds)]
    missing += [case for case in references
                if (configuration_id(FULL, {n: case["train"][n] for n in varied}), case["seed"]) not in done]
    if missing:  # named by what it trains: a rerun after an interruption trains what is still missing
        digest = hashlib.sha1(repr([(c["design"], c.get("train"), c["seed"]) for c in missing]).encode()).hexdigest()
        cases_tuner(spec, f"{spec.name}-added-{digest[:8]}", missing, verbose).fit()


def names(spec: Spec) -> dict[str, str]:
    """Design id -> its readable name in the table (``lora_attn:4 + pa_ffn:16``), for every design of the grid."""
    return {design.id: menu_label(design, spec.space()) for design in grid(spec.space())} | {FULL: REFERENCE_NAME}


def export(spec: Spec, out: str | Path) -> pd.DataFrame:
    """The table of ``spec``'s grid, written to ``out``: the completed trials of its search (an MLflow experiment)
    whose designs the grid holds (a design since removed from the menus stays out), and the rows of the table
    already at ``out`` that the records lack (trained on another machine)."""
    metric, varied, named = spec.task_def.validation_metric, list(spec.search_train), names(spec)
    mlflow = MlflowClient(spec.tracking_uri)
    rows = [row for run in _completed_runs(mlflow, spec.name) if run.data.tags[Tags.DESIGN_ID] in named
            for row in _rows(mlflow, run, metric, named, varied)]
    table = pd.DataFrame(rows)
    if Path(out).exists():
        before = tabular.read(out)
        fresh = set(zip(table["config_id"], table["seed"])) if rows else set()
        keep = [d in named and case not in fresh for d, case in zip(before["design_id"], zip(before["config_id"], before["seed"]))]
        table = pd.concat([before[keep], table], ignore_index=True)
    table = table.sort_values(["reference", "budget_pct", "config_id", "seed", "step"])
    table.to_csv(out, index=False, float_format="%.6g")
    return table


def _in_table(out: str | Path) -> set[Case]:
    """The cases the table at ``out`` holds (it holds completed runs only)."""
    if not Path(out).exists():
        return set()
    table = tabular.read(out)
    return set(zip(table["config_id"], table["seed"].astype(int)))


def _completed_runs(mlflow: Any, search: str) -> list[Any]:
    experiment = mlflow.get_experiment_by_name(search)
    if experiment is None:
        return []
    runs = mlflow.search_runs([experiment.experiment_id], max_results=10_000,
                              filter_string=f"tags.{Tags.STATUS} = '{Status.COMPLETED}'")
    return [run for run in runs if Tags.TRIAL in run.data.tags]


def _configuration(run: Any, varied: Sequence[str]) -> dict[str, Any]:
    """The values a run trained with of the hyper-parameters the grid varies (MLflow keeps params as text)."""
    return {name: trainers.coerce(name, run.data.params[name]) for name in varied}


def _completed(tracking_uri: str, search: str, varied: Sequence[str]) -> set[Case]:
    """The cases ``search`` has completed, from its MLflow records."""
    return {(configuration_id(run.data.tags[Tags.DESIGN_ID], _configuration(run, varied)),
             int(run.data.params[Params.SEED])) for run in _completed_runs(MlflowClient(tracking_uri), search)}


def _rows(mlflow: Any, run: Any, metric: str, named: Mapping[str, str], varied: Sequence[str]) -> list[dict[str, Any]]:
    history = {key: {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, key)}
               for key in (metric, f"{metric}{SE}", "loss", "seconds", PREDICTED_SHARE)}
    params, tags, last = run.data.params, run.data.tags, run.data.metrics
    design_id, hyper = tags[Tags.DESIGN_ID], _configuration(run, varied)
    flat = {k: v for k, v in params.items() if k.split(".", 1)[0] in peft_space.SITES}
    rows = []
    final_step = max(history[metric])
    for step in sorted(history[metric]):
        is_last = step == final_step
        rows.append({"design_id": design_id, "name": named.get(design_id, design_id), "seed": int(params[Params.SEED]),
                     "step": step, "budget_pct": float(params[Params.BUDGET]), "valid_metric": history[metric][step],
                     "valid_metric_se": history[f"{metric}{SE}"].get(step), "valid_loss": history["loss"].get(step),
                     "test_metric": last.get(f"test_{metric}") if is_last else None,
                     "test_metric_se": last.get(f"test_{metric}{SE}") if is_last else None,
                     "seconds": history["seconds"].get(step), "reference": design_id == FULL,
                     "config_id": configuration_id(design_id, hyper), **hyper,
                     f"valid_{PREDICTED_SHARE}": history[PREDICTED_SHARE].get(step),
                     f"test_{PREDICTED_SHARE}": last.get(f"test_{PREDICTED_SHARE}") if is_last else None, **flat})
    return rows
