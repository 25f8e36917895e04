"""Ray Tune's parts for a spec: the trainable, the Optuna searcher, the scheduler, the MLflow recorder, and the
tuners that run a search or a fixed list of cases with them.

Which implementation a name of the spec means is ``search.implementations``' tables; what one trial trains is
``search.trial_config``'s. Nothing here runs anything: ``search.runner`` fits the tuners."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peft_space
import trainers
from search.implementations import SCHEDULERS, TRAINERS, load
from search.records import Recorder
from search.samplers import make_sampler
from search.schema import Params
from search.spec import Spec
from search.trial_config import CASE


def constants(spec: Spec) -> dict[str, Any]:
    """What every trial's config shares; the searcher (or a case) adds the design, budget, seed and overrides."""
    train = {**dict(spec.train), "steps": spec.asha["max_steps"]}
    if spec.resources["gpu"] == 0 and "threads" not in train:
        train["threads"] = max(1, int(spec.resources["cpu"]))  # one trial per CPU, not all of torch's threads
    data_dir = str(Path(spec.data_dir).resolve()) if spec.data_dir else None  # workers run elsewhere
    return {"task": spec.task, "model": spec.model, "seed": spec.seed, "train": train, "data_dir": data_dir,
            "plugins": list(spec.plugins), "trainer": spec.trainer, "synthetic_delay": spec.synthetic_delay,
            "table": str(Path(spec.table).resolve()) if spec.table else None}


def trainable(spec: Spec) -> Any:
    """The spec's trainer, asking Ray for the spec's CPU and GPU share per trial."""
    from ray import tune

    resources = {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    return tune.with_resources(load(TRAINERS, spec.trainer), resources)


def budget_function(spec: Spec) -> Callable[[peft_space.Design], float]:
    """A design's budget in % of the spec's model, as the search caps and records it."""
    task = spec.task_def
    return functools.partial(trainers.budget_pct, spec.model, task.kind, task.num_labels)


def grid_cases(spec: Spec) -> list[tuple[peft_space.Design, dict[str, Any], int]]:
    """A grid spec's (design, hyper-parameters, seed) cases, in the order its search trains them."""
    from search.space import configurations

    return [(design, train, spec.seed + k) for design, train in configurations(spec.space())
            for k in range(spec.seeds)]


def searcher(spec: Spec) -> Any:
    from search.searcher import DesignSearcher

    points = {name: peft_space.preset(name, **dict(spec.preset_overrides.get(name, {})))
              for name in spec.points_to_evaluate}
    cases = grid_cases(spec) if spec.sampler == "grid" else []
    return DesignSearcher(spec.space(), metric=spec.task_def.validation_metric, mode=spec.mode,
                          budget_of=budget_function(spec), cap=spec.budget_cap, study_name=spec.name,
                          storage=spec.storage, sampler=functools.partial(make_sampler, spec.sampler, spec.concurrency),
                          seed=spec.seed, points=points, cases=cases)


def scheduler(spec: Spec) -> Any:
    """The spec's early stopping: Ray's ASHA on one metric, its Pareto-aware variant on (metric, budget), or
    none (every trial runs to ``max_steps``)."""
    kind = load(SCHEDULERS, spec.scheduler)
    if spec.scheduler == "none":
        return kind()
    metric, mode = spec.asha_watch
    return kind(time_attr="step", metric=metric, mode=mode, max_t=spec.asha["max_steps"],
                grace_period=spec.asha["grace_period"], reduction_factor=spec.asha["reduction_factor"])


def recorder(spec: Spec) -> Recorder:
    return Recorder(spec.tracking_uri, spec.name, spec.artifacts, params(spec), spec.sites)


def params(spec: Spec) -> dict[str, Any]:
    """The search's constants as flat MLflow params (``train.lr``, ``asha.max_steps``, ...)."""
    flat: dict[str, Any] = {}
    for key, value in spec.to_dict().items():
        if key == "task" and isinstance(value, dict):  # a declared task: its name, declaration and data's hashes
            flat |= {"task": value["name"], Params.TASK_DECLARATION: Params.declaration(value),
                     Params.DATA_SHA256: json.dumps(trainers.data_hashes(value), sort_keys=True)}
        elif isinstance(value, dict):
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            flat[key] = value
    flat |= {Params.METRIC: spec.task_def.validation_metric, Params.HIGHER_IS_BETTER: spec.task_def.higher_is_better}
    return {k: v for k, v in flat.items() if k not in ("storage", "tracking_uri")}  # where records live, not what ran


def search_tuner(spec: Spec, *, resume: bool, verbose: int) -> Any:
    """The search's tuner: restored from its experiment folder to resume, else new."""
    from ray import tune

    path = spec.experiment_dir / spec.name
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable(spec), resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, param_space=constants(spec))
    return tune.Tuner(trainable(spec), param_space=constants(spec),
                      tune_config=tune.TuneConfig(search_alg=searcher(spec), scheduler=scheduler(spec),
                                                  num_samples=-1,  # the searcher counts
                                                  max_concurrent_trials=spec.concurrency, reuse_actors=True,
                                                  trial_dirname_creator=trial_dirname),
                      run_config=tune.RunConfig(name=spec.name, storage_path=str(spec.experiment_dir),
                                                callbacks=[recorder(spec)], verbose=verbose,
                                                failure_config=tune.FailureConfig(max_failures=2),
                                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def cases_tuner(spec: Spec, name: str, cases: Sequence[dict[str, Any]], verbose: int = 1) -> Any:
    """A tuner that trains a fixed list of cases (``search.trial_config.suggestion``s) as one Ray Tune grid
    named ``name``, with the spec's trainer and resources, recorded in MLflow like a search's trials; an
    interrupted grid of that name resumes."""
    from ray import tune

    path = spec.experiment_dir / name
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable(spec), resume_unfinished=True, resume_errored=True)
    return tune.Tuner(trainable(spec), param_space={**constants(spec), CASE: tune.grid_search(list(cases))},
                      tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrency, reuse_actors=True,
                                                  trial_dirname_creator=trial_dirname),
                      run_config=tune.RunConfig(name=name, storage_path=str(spec.experiment_dir),
                                                callbacks=[recorder(spec)], verbose=verbose))


def trial_dirname(trial: Any) -> str:
    """Ray's default folder name spells out the whole config; the trial id is enough (MLflow has the rest)."""
    return f"trial_{trial.trial_id}"
