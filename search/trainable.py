"""The Ray Tune trainables: one trial trains one design and reports after every evaluation.

A trial's config (the searcher's suggestion or a grid's case with the search's constants) is read by
``search.trial_config.read``: the design, its budget and seed, the training configuration. Intermediate reports
carry ``step`` (ASHA's time attribute) and ``total_steps``; the last report, after training, carries the
final validation and test metrics and ``status``, and what the worker holds once the trial is released
(``trainers.release``: ``memory_rss_mb``; on a GPU ``cuda_allocated_mb`` and ``cuda_reserved_mb``), so that a reused
actor is seen to come back to its baseline after every trial. A trial that diverges or raises (out of memory, a broken
plugin) reports ``status=Status.FAILED`` with the reason instead of raising: it is recorded as failed and not
retried; a trial whose worker is lost (a node dies) is retried by Ray's failure config. A completed trial's
last report carries its trained modification as a Ray checkpoint (``peft_space.save``'s files); the first and
the last report carry the resolved training configuration (``resolved``), so that a trial stopped by ASHA
can be reproduced too.

``synthetic`` stands in for training with a closed-form learning curve per design: it exercises the whole
stack (searcher, ASHA, storage, MLflow) in seconds, for dry runs of a spec or a cluster and for benchmarks.
``tabular`` replays a tabular benchmark (``search.tabular``): the trial reports the curve the real trainer
recorded for its design and seed, step by step, so a whole search runs on the table in seconds and spends
exactly the steps a real one would.

A config whose ``design`` is ``None`` is full fine-tuning (a reference row of a tabular benchmark).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

import ray
from ray import tune
from ray.tune import Checkpoint

import trainers
from search import tabular
from search.schema import Status
from search.trial_config import TrialConfig, read
from trainers import SE


def train_design(config: dict[str, Any]) -> None:
    """Train the trial's design with ``trainers.train`` (the base model stays loaded in a reused actor)."""
    hide_unassigned_gpus()
    trial = read(config)
    total = trial.steps
    common = _common(trial)
    resolved: dict[str, Any] = {}  # hyper-parameters, data source, threads, versions: sent with the first report

    reached, start = [0], time.perf_counter()
    failure: str | None = None
    stopped: tuple[Any, ...] = ()

    def report(step: int, metrics: dict[str, float]) -> None:
        reached[0] = step
        if step < total:  # the final evaluation is reported below, with the test metrics
            tune.report({**metrics, **common, "step": step, "status": Status.RUNNING, "resolved": dict(resolved),
                         "seconds": time.perf_counter() - start})
            resolved.clear()

    with tempfile.TemporaryDirectory() as weights:
        try:
            result = trainers.train(trial.task, trial.design, model=trial.model, seed=trial.seed,
                                    data_dir=trial.data_dir, report=report, progress=False, save_dir=weights,
                                    on_start=lambda values: resolved.update({k: v for k, v in values.items() if k != "design"}),
                                    **trial.train)
        except Exception as err:  # out of memory, a broken plugin...: this trial fails with the reason, the search goes on
            failure = f"{type(err).__name__}: {err}"
        except SystemExit as stop:  # how Ray ends a trial it stops (ASHA): raised inside tune.report, nothing to add
            stopped = (stop.code,)
        # the actor serves the next trial: what this one left goes now (a failed or stopped trial's traceback, with the
        # frames holding its optimiser and batches, is unreferenced once its except block is left); its last report
        # says what the worker holds after it
        held = trainers.release(collect=not stopped)  # Ray waits only 2 s for a stopped trial's thread
        if stopped:
            raise SystemExit(*stopped)
        if failure is not None:
            tune.report({**common, "step": reached[0], "status": Status.FAILED, "error": failure,
                         "resolved": dict(resolved), **held})
            return
        budget = {f"budget_{k}": v for k, v in result.budget.items()}  # counts and % (analytic, actual), head, new
        saved = Checkpoint.from_directory(weights) if result.status == Status.COMPLETED else None
        tune.report({**result.validation, **{f"test_{k}": v for k, v in result.test.items()}, **common, **budget,
                     **held, "step": result.step, "status": result.status, "error": result.error or "",
                     "seconds": time.perf_counter() - start,
                     "train_seconds": result.train_seconds, "examples_per_second": result.examples_per_second,
                     "resolved": {k: v for k, v in result.config.items() if k != "design"}}, checkpoint=saved)


def hide_unassigned_gpus() -> None:
    """A trial given no GPU trains on the CPU. Ray points CUDA_VISIBLE_DEVICES at the GPU it assigns (so the
    trainer's "cuda" is the trial's GPU, shared when the trial asked for a fraction) but Ray 2.60 leaves the
    variable alone for a trial given none, which would then see, and use, every GPU of its node."""
    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def synthetic(config: dict[str, Any]) -> None:
    """A learning curve that rises with the design's budget, with a per-design offset; no model, no data.

    ``synthetic_delay`` seconds pass before each report."""
    trial = read(config)
    task = trainers.TASKS[trial.task]
    total = trial.steps
    every = int(trial.train.get("eval_every") or max(1, total // 5))
    offset = int(hashlib.sha1(f"{trial.design_id}-{trial.seed}".encode()).hexdigest()[:8], 16) / 16**8 - 0.5
    final = 0.55 + 0.3 * (1 - math.exp(-4 * trial.budget)) + 0.1 * offset
    common = _common(trial)
    for step in (*range(every, total, every), total):
        time.sleep(trial.synthetic_delay)
        metric = 0.5 + (final - 0.5) * (1 - math.exp(-3 * step / total))
        tune.report({task.validation_metric: metric, "loss": 1.0 - metric, **common, "step": step,
                     "status": Status.COMPLETED if step == total else Status.RUNNING})


def replay_table(config: dict[str, Any]) -> None:
    """The table's recorded curve for this configuration (the design and the trial's values of the hyper-parameters
    the table varies) and seed (``tabular.replica``), reported evaluation by evaluation."""
    trial = read(config)
    task = trainers.TASKS[trial.task]
    total = trial.steps
    common = _common(trial)
    table = tabular.load(trial.table)
    config_id = tabular.lookup(table, trial.design_id, asdict(trainers.resolve(task, dict(trial.train))))
    curve = tabular.curve(table, config_id, trial.seed)
    if curve.empty or int(curve["step"].max()) != total:
        steps = sorted(set(curve["step"])) if not curve.empty else []
        tune.report({**common, "step": 0, "status": Status.FAILED,
                     "error": f"configuration {config_id} is not in the table {trial.table} with {total} steps "
                              f"(recorded steps: {steps or 'none'})"})
        return
    for row in curve.itertuples():
        last = row.step == total
        final = {f"test_{task.validation_metric}": row.test_metric, f"test_{task.validation_metric}{SE}": row.test_metric_se,
                 "train_seconds": row.seconds} if last else {}
        tune.report({task.validation_metric: row.valid_metric, f"{task.validation_metric}{SE}": row.valid_metric_se,
                     "loss": row.valid_loss, **final, **common, "step": int(row.step),
                     "status": Status.COMPLETED if last else Status.RUNNING})


def _common(trial: TrialConfig) -> dict[str, Any]:
    """What every report of a trial carries (``node_id``: which Ray node ran it)."""
    return {"budget": trial.budget, "design_id": trial.design_id, "total_steps": trial.steps,
            "node_id": ray.get_runtime_context().get_node_id()}
