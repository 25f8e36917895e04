"""Run, resume and summarise a search: ``peft_space`` × ``trainers`` on Ray Tune, Optuna choosing, ASHA stopping.

Where things live (all under the spec's stores, nothing in Ray's temp folders that matters):
- the Optuna study (``spec.storage``, study name = search name): every design asked and how it ended;
- Ray's experiment folder ``{root}/ray/{name}`` and the spec as run (``{root}/specs/{name}.yaml``): what
  ``Tuner.restore`` needs to resume;
- MLflow (``spec.tracking_uri``): the parent run of the search and a child run per trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import socket
import sqlite3
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

import trainers
from search.schema import Params, Status
from search.spec import Spec, load

log = logging.getLogger(__name__)
SCHEMA_LOCK = int.from_bytes(b"peft-sch")  # PostgreSQL advisory lock key (a bigint) of schema creation
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # a failed trial's last report has no metric
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # small state, saved often


def spec_path(root: str | Path, name: str) -> Path:
    return Path(root) / "specs" / f"{name}.yaml"


def experiment_dir(spec: Spec) -> Path:
    return (Path(spec.root) / "ray").resolve()


def run(spec: Spec, *, resume: bool = False, verbose: int = 1) -> Any:
    """Run ``spec`` and summarise it; ``resume=True`` continues the search of that name where it stopped."""
    from ray import tune

    from peft_space import FieldError

    saved = spec_path(spec.root, spec.name)
    if saved.exists() and not resume:
        raise FieldError("name", spec.name, f"a name not used under {spec.root} (continue this one with "
                                            f"`peft-search resume {spec.name}`)")
    trainers.check_model(spec.model)  # a model transformers cannot resolve, before anything starts or is written
    _connect(spec)  # an unreachable cluster is refused before anything is written
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    _create_stores(spec)
    set_target(spec)
    trainable = _trainable(spec)
    path = experiment_dir(spec) / spec.name
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, param_space=constants(spec))
    else:
        tuner = tune.Tuner(trainable, param_space=constants(spec), tune_config=_tune_config(spec),
                           run_config=_run_config(spec, verbose))
    tuner.fit()
    _recorder(spec).finish_stale(study(spec).trials, spec.asha["max_steps"])
    summary = summarise(spec)
    if spec.confirm_seeds:  # the front and its hypervolume again, from the medians over seeds
        summary = summarise(spec, confirm(spec, summary, verbose))
    try:
        record_summary(spec, summary)
    except Exception as err:  # the tracking store is away: trials are kept (spool); the front is still printed
        log.error("could not record the front in MLflow (%s); `peft-search resume %s` records it later", err, spec.name)
    return summary


def saved_spec(root: str | Path, name: str) -> Spec:
    """The spec a search ``name`` was started with (``peft-search resume``/``pareto``)."""
    from peft_space import FieldError

    saved = spec_path(root, name)
    if not saved.is_file():
        known = sorted(p.stem for p in saved.parent.glob("*.yaml")) if saved.parent.is_dir() else []
        raise FieldError("NAME", name, f"a search started under {root}: " + (", ".join(known) or "none yet"))
    return load(saved)


# -- building blocks -------------------------------------------------------------------------------------
def _connect(spec: Spec) -> None:
    import ray

    if ray.is_initialized():
        return
    address = spec.ray_address
    if address is None:  # a local Ray of this machine's size; its dashboard stays off (nothing listens)
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        return
    if address != "auto" and not _listening(address):  # ray.init would wait minutes before failing
        from peft_space import FieldError

        raise FieldError("ray_address", address, "the host:port of a running Ray head (`ray start --head` "
                                                 "prints it), or 'auto' on a node of the cluster")
    ray.init(address=address, configure_logging=False, log_to_driver=False)


def set_target(spec: Spec) -> None:
    """The number of designs to train, kept in the study (a resume may raise it), and the objectives' names
    (optuna-dashboard labels its axes with them)."""
    import warnings

    from search.searcher import BUDGET, TARGET, open_study

    study = open_study(spec.name, spec.storage, spec.mode)
    study.set_user_attr(TARGET, spec.target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is experimental in Optuna
        study.set_metric_names([spec.task_def.validation_metric, BUDGET])


def _listening(address: str) -> bool:
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return True
    except (OSError, ValueError):
        return False


def _create_stores(spec: Spec) -> None:
    """Create the stores' schemas once, under a lock: two searches starting at the same time on one store must not
    both run its schema migrations (both Optuna's and MLflow's fail on PostgreSQL when they race)."""
    from mlflow.tracking import MlflowClient

    from search.searcher import open_storage

    schemas = {spec.storage: open_storage,  # the storage this process keeps for the URL is the one made here
               spec.tracking_uri: lambda url: MlflowClient(url).search_experiments(max_results=1)}
    for url, create in schemas.items():
        if (lock := schema_lock(url)) is not None:
            with lock:
                create(url)


def schema_lock(url: str) -> contextlib.AbstractContextManager | None:
    """The lock a process holds while it creates a store's schema; None where there is no schema to create
    (journal files, MLflow servers)."""
    for prefix, lock in (("sqlite:///", _sqlite_lock), ("postgresql", _postgres_lock)):
        if url.startswith(prefix):
            return lock(url)
    return None


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """A file lock next to the database. Write-ahead-log mode lets ``peft-search pareto`` or the MLflow UI read
    while a search writes."""
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        yield


@contextlib.contextmanager
def _postgres_lock(url: str) -> Iterator[None]:
    """The server's advisory lock of this database, held on a connection of its own (released if we die)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
            yield
    finally:
        engine.dispose()


def _trainable(spec: Spec) -> Any:
    from ray import tune

    from search.trainable import TRAINABLES

    resources = {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    return tune.with_resources(TRAINABLES[spec.trainer], resources)


def constants(spec: Spec) -> dict[str, Any]:
    """What every trial's config shares; the searcher adds ``design``, ``budget`` and ``optuna_trial``."""
    train = {**dict(spec.train), "steps": spec.asha["max_steps"]}
    if spec.resources["gpu"] == 0 and "threads" not in train:
        train["threads"] = max(1, int(spec.resources["cpu"]))  # one trial per CPU, not all of torch's threads
    data_dir = str(Path(spec.data_dir).resolve()) if spec.data_dir else None  # workers run elsewhere
    return {"task": spec.task, "model": spec.model, "seed": spec.seed, "train": train, "data_dir": data_dir,
            "plugins": list(spec.plugins), "trainer": spec.trainer, "synthetic_delay": spec.synthetic_delay,
            "table": str(Path(spec.table).resolve()) if spec.table else None}


def grid_cases(spec: Spec) -> list[tuple[Any, int]]:
    """A grid spec's (design, seed) cases, in the order its search trains them."""
    from search.space import grid

    return [(design, spec.seed + k) for design in grid(spec.space()) for k in range(spec.seeds)]


def budget_function(spec: Spec) -> Callable[[Any], float]:
    """A design's budget in % of the spec's model, as the search caps and records it."""
    task = spec.task_def
    return functools.partial(trainers.budget_pct, spec.model, task.kind, task.num_labels)


def searcher(spec: Spec) -> Any:
    import peft_space
    from search.searcher import DesignSearcher

    task = spec.task_def
    points = {name: peft_space.preset(name, **dict(spec.preset_overrides.get(name, {}))) for name in spec.points_to_evaluate}
    cases = grid_cases(spec) if spec.sampler == "grid" else []
    return DesignSearcher(spec.space(), metric=task.validation_metric, mode=spec.mode,
                          budget_of=budget_function(spec), cap=spec.budget_cap, study_name=spec.name, storage=spec.storage,
                          sampler=functools.partial(make_sampler, spec.sampler, spec.concurrency), seed=spec.seed,
                          points=points, cases=cases)


def make_sampler(kind: str, concurrency: int, seed: int) -> Any:
    """The spec's Optuna sampler, seeded (TPE: multivariate over groups of dimensions that occur together,
    with a constant liar when trials run at once; a grid enqueues its cases, the sampler never draws)."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=concurrency > 1)
    return {"nsga2": optuna.samplers.NSGAIISampler, "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.RandomSampler,
            "gp": optuna.samplers.GPSampler}[kind](seed=seed)


def scheduler(spec: Spec) -> Any:
    """The spec's early stopping: Ray's ASHA on one metric, its Pareto-aware variant on (metric, budget), or
    none (every trial runs to ``max_steps``)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from search.pareto_asha import ParetoASHAScheduler

    if spec.scheduler == "none":
        return FIFOScheduler()
    metric, mode = spec.asha_watch
    kind = ASHAScheduler if spec.scheduler == "asha" else ParetoASHAScheduler
    return kind(time_attr="step", metric=metric, mode=mode, max_t=spec.asha["max_steps"],
                grace_period=spec.asha["grace_period"], reduction_factor=spec.asha["reduction_factor"])


def _tune_config(spec: Spec) -> Any:
    from ray import tune

    return tune.TuneConfig(search_alg=searcher(spec), scheduler=scheduler(spec), num_samples=-1,  # the searcher counts
                           max_concurrent_trials=spec.concurrency, reuse_actors=True,
                           trial_dirname_creator=_trial_dirname)


def _trial_dirname(trial: Any) -> str:
    """Ray's default folder name spells out the whole config; the trial id is enough (MLflow has the rest)."""
    return f"trial_{trial.trial_id}"


def _run_config(spec: Spec, verbose: int) -> Any:
    from ray import tune

    return tune.RunConfig(name=spec.name, storage_path=str(experiment_dir(spec)), callbacks=[_recorder(spec)],
                          failure_config=tune.FailureConfig(max_failures=2), verbose=verbose,
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _recorder(spec: Spec) -> Any:
    from search.records import Recorder

    return Recorder(spec.tracking_uri, spec.name, Path(spec.root) / "artifacts", _params(spec), spec.sites)


def _params(spec: Spec) -> dict[str, Any]:
    """The search's constants as flat MLflow params (``train.lr``, ``asha.max_steps``, ...)."""
    flat: dict[str, Any] = {}
    for key, value in spec.to_dict().items():
        if isinstance(value, dict):
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            flat[key] = value
    flat |= {Params.METRIC: spec.task_def.validation_metric, Params.HIGHER_IS_BETTER: spec.task_def.higher_is_better}
    return {k: v for k, v in flat.items() if k not in ("storage", "tracking_uri")}  # where records live, not what ran


# -- after the search --------------------------------------------------------------------------------------
def study(spec: Spec) -> Any:
    import optuna

    from search.searcher import open_storage

    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))


def reference(spec: Spec) -> tuple[float, float]:
    """The hypervolume's reference point: chance accuracy (classification) or 0 metric, and the budget cap."""
    task = spec.task_def
    floor = 1.0 / task.num_labels if task.kind == "classification" else 0.0
    return floor, spec.budget_cap


def summarise(spec: Spec, confirmed: dict[int, float] | None = None) -> Any:
    from search import report

    task = spec.task_def
    return report.summarise(study(spec), task.validation_metric, task.higher_is_better, reference(spec), confirmed)


def confirm(spec: Spec, summary: Any, verbose: int) -> dict[int, float]:
    """Re-train every front design with ``confirm_seeds`` more seeds: each one's median metric over its seeds."""
    task = spec.task_def
    front = summary.front
    configs = [{"design": _design_dict(row), "budget": row.budget, "optuna_trial": row.trial, "seed": spec.seed + k,
                "preset": row.design if row.design in spec.points_to_evaluate else ""}
               for row in front for k in range(1, spec.confirm_seeds + 1)]
    results = run_cases(spec, f"{spec.name}-confirm", configs, verbose)
    by_trial: dict[int, list[float]] = {}
    for result in results:
        if result.metrics and result.metrics.get("status") == Status.COMPLETED:
            by_trial.setdefault(result.config["case"]["optuna_trial"], []).append(result.metrics[task.validation_metric])
    return {row.trial: statistics.median([row.metric, *by_trial.get(row.trial, [])]) for row in front}


def run_cases(spec: Spec, name: str, cases: list[dict[str, Any]], verbose: int = 1) -> Any:
    """Train a fixed list of cases (``design``, ``budget``, ``seed``, ...; ``design: None`` is full fine-tuning)
    as one Ray Tune grid with the spec's trainer and resources, recorded in MLflow like a search's trials; an
    interrupted grid of that name resumes."""
    from ray import tune

    path = experiment_dir(spec) / name
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), _trainable(spec), resume_unfinished=True, resume_errored=True).fit()
    tuner = tune.Tuner(_trainable(spec), param_space={**constants(spec), "case": tune.grid_search(cases)},
                       tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrency, reuse_actors=True,
                                                   trial_dirname_creator=_trial_dirname),
                       run_config=tune.RunConfig(name=name, storage_path=str(experiment_dir(spec)),
                                                 callbacks=[_recorder(spec)], verbose=verbose))
    return tuner.fit()


def _design_dict(row: Any) -> dict[str, Any]:
    from peft_space import Design

    return Design.from_json(row.design_json).to_dict()


def record_summary(spec: Spec, summary: Any) -> None:
    """Tag the trials' runs on or off the front; attach the front's weights, tables and plots (``records``)."""
    from search import records

    trials = experiment_dir(spec) / spec.name
    weights = {}
    for row in summary.front:
        checkpoints = sorted(trials.glob(f"trial_{row.ray_trial_id}/checkpoint_*"))
        if checkpoints:
            weights[row.trial] = checkpoints[-1]
    records.record_summary(records.client(spec.tracking_uri), spec.name, summary, weights)
