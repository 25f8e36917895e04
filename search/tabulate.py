"""Build a tabular benchmark (``search.tabular``'s format): every design of a finite spec's grid trained for real,
then read back from MLflow into one CSV. ``peft-search tabulate SPEC`` runs it.

The grid is one search (``runner.run``: the searcher enqueues every (design, seed) case), then full fine-tuning's
reference rows at a learning rate of their own (a PEFT learning rate is far too high for it). Interrupted, it
resumes where it stopped: run the same command again. Designs or seeds added to the spec's menus since are
trained as a grid of their own, and only they: the table grows without retraining.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

import peft_space
from search import runner
from search.assemble import budget_function, cases_tuner, grid_cases
from search.schema import SE, Params, Status, Tags
from search.space import grid, menu_label
from search.spec import Spec, saved_spec
from search.trial_config import suggestion
from trainers import FULL

REFERENCE_NAME = "full fine-tuning"


def build(spec: Spec, out: str | Path, *, full_lr: float, export_only: bool = False, verbose: int = 1) -> pd.DataFrame:
    """Train what the table of ``spec`` lacks (unless ``export_only``) and write the table to ``out``."""
    if not export_only:
        generate(spec, full_lr=full_lr, verbose=verbose)
    return export(spec.tracking_uri, spec.name, spec.task_def.validation_metric, names(spec), out)


def generate(spec: Spec, *, full_lr: float, verbose: int = 1) -> None:
    """Train every (design, seed) of the grid ``spec`` that its records lack, then the reference rows."""
    saved = spec.saved_path
    first = saved_spec(spec.root, spec.name) if saved.exists() else spec
    runner.run(first, resume=saved.exists(), verbose=verbose)
    done, budget_of = _completed(spec.tracking_uri, spec.name), budget_function(spec)
    added = [suggestion(design, budget_of(design), seed=seed)
             for design, seed in grid_cases(spec) if (design.id, seed) not in done]
    if added:  # named by what it trains: a rerun after an interruption trains what is still missing
        digest = hashlib.sha1(repr([(c["design"], c["seed"]) for c in added]).encode()).hexdigest()[:8]
        cases_tuner(spec, f"{spec.name}-added-{digest}", added, verbose).fit()
    references = [suggestion(None, 100.0, preset=FULL, seed=spec.seed + k, train={"lr": full_lr})
                  for k in range(spec.seeds)]
    cases_tuner(spec, f"{spec.name}-reference", references, verbose).fit()


def names(spec: Spec) -> dict[str, str]:
    """Design id -> its readable name in the table (``lora_attn:4 + pa_ffn:16``), for every design of the grid."""
    return {design.id: menu_label(design, spec.space()) for design in grid(spec.space())} | {FULL: REFERENCE_NAME}


def export(tracking_uri: str, search: str, metric: str, named: Mapping[str, str], out: str | Path) -> pd.DataFrame:
    """The table of the completed trials of ``search`` (an MLflow experiment) whose designs ``named`` lists
    (design id -> readable name; a design since removed from the spec's menus stays out), written to ``out``.

    ``metric``: the task's validation metric as logged (``accuracy``)."""
    mlflow = MlflowClient(tracking_uri)
    rows = [row for run in _completed_runs(mlflow, search) if run.data.tags[Tags.DESIGN_ID] in named
            for row in _rows(mlflow, run, metric, named)]
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
    return {(run.data.tags[Tags.DESIGN_ID], int(run.data.params[Params.SEED]))
            for run in _completed_runs(MlflowClient(tracking_uri), search)}


def _rows(mlflow: Any, run: Any, metric: str, named: Mapping[str, str]) -> list[dict[str, Any]]:
    history = {key: {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, key)}
               for key in (metric, f"{metric}{SE}", "loss", "seconds")}
    params, tags, last = run.data.params, run.data.tags, run.data.metrics
    design_id = tags[Tags.DESIGN_ID]
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
                     "seconds": history["seconds"].get(step), "reference": design_id == FULL, **flat})
    return rows
