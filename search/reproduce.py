"""Re-train a recorded trial, or export its trained modification, from what its MLflow run holds.

A trial's run records everything ``trainers.train`` needs: the design (``design.json``), task (a declared one with
its declaration and its data files' hashes), model, seed, data source and every resolved hyper-parameter (thread
count included). ``reproduce`` trains it again here,
logs the new run beside the original (tag ``peft_search.reproduces``) and returns both metric sets; on a CPU
with the shipped data they are equal. ``export`` writes the front trial's weights for inference (and HF peft's
format where the design is LoRA).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from peft_space import DESIGN_FILE, Design, DesignError, FieldError
from search.mlflow_runs import client
from search.schema import Artifacts, Params, Status, Tags


TRAINING_FILE = "training.json"  # beside an exported modification: what trained it


def _run(tracking_uri: str, run_id: str) -> Any:
    mlflow = client(tracking_uri)
    try:
        return mlflow, mlflow.get_run(run_id)
    except Exception:  # MLflow raises its own error type for an unknown id
        raise FieldError("RUN_ID", run_id, f"the id of a trial run in {tracking_uri}") from None


def recorded_inputs(run: Any) -> dict[str, Any]:
    """``trainers.train``'s arguments as the run recorded them; a hyper-parameter added since the run was recorded
    takes the value that applied then (its declaration's ``unrecorded``). A declared task is registered from the
    record; a data file whose content has changed since the run is an error naming it, not silently used."""
    from trainers import DeclarationError, changed_data, coerce, hyperparameters, register_declared

    params = run.data.params
    missing = [k for k in ("task", "model", Params.SEED, "data") if k not in params]
    if missing:
        raise FieldError("RUN_ID", run.info.run_id, f"a finished trial run (this one lacks {', '.join(missing)})")
    hyper = {h.name: coerce(h.name, params.get(h.name, h.unrecorded)) for h in hyperparameters()
             if h.name in params or h.unrecorded is not None}
    data = params["data"]
    task = params["task"]
    if Params.TASK_DECLARATION in params:  # a declared task: registered here from the record, on the same data
        declaration = json.loads(params[Params.TASK_DECLARATION])
        changed = changed_data(declaration, json.loads(params.get(Params.DATA_SHA256, "{}")))
        if changed:
            raise DeclarationError(changed)
        task = register_declared(declaration).name
    return {"task": task, "model": params["model"], "seed": int(params[Params.SEED]),
            "data_dir": None if data.startswith("hub:") else data, **hyper}


def reproduce(tracking_uri: str, run_id: str, seed: int | None = None) -> tuple[dict[str, float], dict[str, float], str]:
    """Re-train run ``run_id`` (with another ``seed`` if given): (recorded metrics, new metrics, new run id)."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    import trainers

    mlflow, run = _run(tracking_uri, run_id)
    inputs = recorded_inputs(run)
    if seed is not None:
        inputs["seed"] = seed
    with tempfile.TemporaryDirectory() as folder:
        design = Design.from_json(Path(mlflow.download_artifacts(run_id, DESIGN_FILE, folder)).read_text())
    history: list[tuple[int, dict[str, float]]] = []
    result = trainers.train(inputs.pop("task"), design, report=lambda step, m: history.append((step, m)),
                            progress=True, **inputs)
    new = {**result.validation, **{f"test_{k}": v for k, v in result.test.items()}}
    recorded = {k: v for k, v in run.data.metrics.items() if k in new}
    tags = {Tags.REPRODUCES: run_id, Tags.STATUS: str(result.status), Tags.DESIGN_ID: design.id,
            Tags.PARENT: run.data.tags.get(Tags.PARENT, "")}
    copy = mlflow.create_run(run.info.experiment_id, run_name=f"{run.info.run_name}-reproduced", tags=tags)
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for step, values in history for k, v in values.items()]
    metrics += [Metric(k, float(v), now, result.step) for k, v in new.items() if k.startswith("test_")]
    params = {**run.data.params, Params.SEED: str(inputs["seed"])}
    mlflow.log_batch(copy.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(Tags.STEP_REACHED, str(result.step))])
    mlflow.log_text(copy.info.run_id, design.to_json(), "design.json")
    ended = RunStatus.FINISHED if result.status == Status.COMPLETED else RunStatus.FAILED
    mlflow.set_terminated(copy.info.run_id, RunStatus.to_string(ended))
    return recorded, new, copy.info.run_id


def _weights_run(mlflow: Any, run: Any) -> str:
    """The run holding ``run``'s trained weights: itself, or for a confirmation of a front trial the trial's own run
    (tag ``Tags.WEIGHTS``); otherwise the error names what would have them."""
    if any(a.path == Artifacts.WEIGHTS for a in mlflow.list_artifacts(run.info.run_id)):
        return run.info.run_id
    holder = run.data.tags.get(Tags.WEIGHTS)
    if holder:
        return holder
    raise FieldError("RUN_ID", run.info.run_id, "a run on a search's Pareto front (tag pareto=true), or a "
                                                "confirmation of one: only those keep trained weights")


def export(tracking_uri: str, run_id: str, out: str | Path) -> Path:
    """Write run ``run_id``'s trained modification to ``out`` (``peft_space.load`` reads it back) with what it was
    trained with (``TRAINING_FILE``: task, model, seed, hyper-parameters, the sampled ones included); LoRA designs
    are also written in HF peft's format under ``out/peft``."""
    import peft_space
    import trainers
    from trainers import prepare

    mlflow, run = _run(tracking_uri, run_id)
    holder = _weights_run(mlflow, run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(mlflow.download_artifacts(holder, Artifacts.WEIGHTS, folder))
        for file in source.iterdir():
            (out / file.name).write_bytes(file.read_bytes())
    inputs = recorded_inputs(run)
    (out / TRAINING_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True))
    task = trainers.TASKS[inputs["task"]]
    base = trainers.load_base(inputs["model"], task.kind, task.num_labels)
    design = Design.from_json((out / DESIGN_FILE).read_text())
    model = peft_space.load(prepare(base, design, 0), out)
    try:
        peft_space.export_peft(model, out / "peft")
    except DesignError:  # not a LoRA design: peft_space's own format only
        pass
    return out
