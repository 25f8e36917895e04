"""The Ray Tune trainables: one trial trains one design and reports after every evaluation.

A trial's config is the searcher's suggestion (``design``, ``budget``, ``optuna_trial``) merged with the
search's constants (``task``, ``model``, ``seed``, ``data_dir``, ``train``, ``plugins``). Intermediate reports
carry ``step`` (ASHA's time attribute) and ``total_steps``; the last report, after training, carries the
final validation and test metrics and ``status``. A trial that diverges or raises (out of memory, a broken
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
from typing import Any

import ray
from ray import tune
from ray.tune import Checkpoint

import trainers
from peft_space import Design
from search import tabular
from search.schema import Status
from search.spec import import_plugins
from trainers import FULL, SE


def train_design(config: dict[str, Any]) -> None:
    """Train ``config["design"]`` with ``trainers.train`` (the base model stays loaded in a reused actor)."""
    hide_unassigned_gpus()
    config, design = _start(config)
    total = int(config["train"]["steps"])
    common = _common(config, design, total)
    resolved: dict[str, Any] = {}  # hyper-parameters, data source, threads, versions: sent with the first report

    reached, start = [0], time.perf_counter()

    def report(step: int, metrics: dict[str, float]) -> None:
        reached[0] = step
        if step < total:  # the final evaluation is reported below, with the test metrics
            tune.report({**metrics, **common, "step": step, "status": Status.RUNNING, "resolved": dict(resolved),
                         "seconds": time.perf_counter() - start})
            resolved.clear()

    with tempfile.TemporaryDirectory() as weights:
        try:
            result = trainers.train(config["task"], design, model=config["model"], seed=config["seed"],
                                    data_dir=config.get("data_dir"), report=report, progress=False, save_dir=weights,
                                    on_start=lambda values: resolved.update({k: v for k, v in values.items() if k != "design"}),
                                    **config["train"])
        except Exception as err:  # out of memory, a broken plugin...: this trial fails with the reason, the search goes on
            tune.report({**common, "step": reached[0], "status": Status.FAILED, "error": f"{type(err).__name__}: {err}",
                         "resolved": dict(resolved)})
            return
        budget = {f"budget_{k}": v for k, v in result.budget.items()}  # counts and % (analytic, actual), head, new
        saved = Checkpoint.from_directory(weights) if result.status == Status.COMPLETED else None
        tune.report({**result.validation, **{f"test_{k}": v for k, v in result.test.items()}, **common, **budget,
                     "step": result.step, "status": result.status, "error": result.error or "",
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
    config, design = _start(config)
    task = trainers.TASKS[config["task"]]
    total = int(config["train"]["steps"])
    every = int(config["train"].get("eval_every") or max(1, total // 5))
    delay = float(config.get("synthetic_delay", 0.0))
    budget = float(config["budget"])
    offset = int(hashlib.sha1(f"{design_id(design)}-{config['seed']}".encode()).hexdigest()[:8], 16) / 16**8 - 0.5
    final = 0.55 + 0.3 * (1 - math.exp(-4 * budget)) + 0.1 * offset
    common = _common(config, design, total)
    for step in (*range(every, total, every), total):
        time.sleep(delay)
        metric = 0.5 + (final - 0.5) * (1 - math.exp(-3 * step / total))
        tune.report({task.validation_metric: metric, "loss": 1.0 - metric, **common, "step": step,
                     "status": Status.COMPLETED if step == total else Status.RUNNING})


def replay_table(config: dict[str, Any]) -> None:
    """The table's recorded curve for this design and seed (``tabular.replica``), reported evaluation by evaluation."""
    config, design = _start(config)
    task = trainers.TASKS[config["task"]]
    total = int(config["train"]["steps"])
    common = _common(config, design, total)
    curve = tabular.curve(tabular.load(config["table"]), design_id(design), config["seed"])
    if curve.empty or int(curve["step"].max()) != total:
        steps = sorted(set(curve["step"])) if not curve.empty else []
        tune.report({**common, "step": 0, "status": Status.FAILED,
                     "error": f"design {design_id(design)} is not in the table {config['table']} with {total} steps "
                              f"(recorded steps: {steps or 'none'})"})
        return
    for row in curve.itertuples():
        last = row.step == total
        final = {f"test_{task.validation_metric}": row.test_metric, f"test_{task.validation_metric}{SE}": row.test_metric_se,
                 "train_seconds": row.seconds} if last else {}
        tune.report({task.validation_metric: row.valid_metric, f"{task.validation_metric}{SE}": row.valid_metric_se,
                     "loss": row.valid_loss, **final, **common, "step": int(row.step),
                     "status": Status.COMPLETED if last else Status.RUNNING})


def _start(config: dict[str, Any]) -> tuple[dict[str, Any], Design | None]:
    """The trial's config unfolded and its design, once the user's plugins have registered their values."""
    config = unfold(config)
    import_plugins(config.get("plugins", ()))
    return config, Design.from_dict(config["design"]) if config["design"] is not None else None


def design_id(design: Design | None) -> str:
    return design.id if design is not None else FULL


def _common(config: dict[str, Any], design: Design | None, total: int) -> dict[str, Any]:
    """What every report of a trial carries (``node_id``: which Ray node ran it)."""
    return {"budget": config["budget"], "design_id": design_id(design), "total_steps": total,
            "node_id": ray.get_runtime_context().get_node_id()}


def unfold(config: dict[str, Any]) -> dict[str, Any]:
    """A confirmation run grids over ``case`` = {design, budget, seed, ...}: lift it to the top level."""
    return {**config, **config.get("case", {})}


TRAINABLES = {"train": train_design, "synthetic": synthetic, "tabular": replay_table}
