"""The search spec: a YAML file (or the same keys from the command line), validated before heavy imports.

Every problem is reported at once, one line each, naming the field, the value and what is allowed::

    name: sst2-minilm
    task: sst2
    model: minilm
    sites: [attn, ffn]
    values: {form: [linear, relu, softmax]}      # per dimension; default: every registered value
    ranges: {bottleneck: [1, 64], scale: [0.5, 8]}
    menus: {attn: {lora_attn: {bottleneck: [4, 16]}, prefix: {}}}   # a site picks one of these presets (or none)
    points_to_evaluate: [lora_attn, pa_ffn, mam]  # presets tried first (sizes may be overridden in ``preset_overrides``)
    budget_cap: 1%                                # designs above it are never trained
    sampler: tpe                                  # tpe | nsga2 | random | gp | grid (every design: menus at every site)
    seeds: 1                                      # grid: each design is trained with seeds seed, seed+1, ...
    scheduler: asha                               # asha | pareto_asha | none (every trial to max_steps)
    asha: {grace_period: 20, reduction_factor: 3, max_steps: 200}
    asha_metric: loss                             # what ASHA compares at its rungs (default: the task's metric)
    trials: 30
    concurrency: 2
    resources: {cpu: 1, gpu: 0}
    storage: sqlite:///peft-search/optuna.db       # or postgresql://…, or journal:///path.log (Optuna's journal file)
    tracking_uri: sqlite:///peft-search/mlflow.db
    ray_address: null                             # null: a local Ray; "auto" or host:port for a cluster
    root: peft-search                             # Ray's experiment folder and the saved spec live here
    seed: 0
    confirm_seeds: 0                              # re-train the front's designs with this many more seeds
    train: {lr: 1e-3, train_examples: 2000}       # TrainConfig overrides (steps come from asha.max_steps)
    data_dir: null                                # the task's local files (default: $PEFT_SEARCH_DATA, shared/data)
    trainer: train                                # train | synthetic (a closed-form learning curve: dry runs)
                                                  # | tabular (replays the recorded curves of ``table``)
    table: benchmarks/tabular/sst2_minilm.csv     # the tabular benchmark the tabular trainer replays
    synthetic_delay: 0                            # seconds per report of the synthetic trainer
    plugins: [my_dimensions]                      # modules imported first (driver and workers) to register values
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

import peft_space
import trainers
from peft_space import FieldError
from peft_space.dimensions import DIMENSIONS, Categorical

SAMPLERS = ("tpe", "nsga2", "random", "gp", "grid")
TRAINERS = ("train", "synthetic", "tabular")
SCHEDULERS = ("asha", "pareto_asha", "none")


class SpecError(ValueError):
    """All the problems of a spec, one ``FieldError`` each."""

    def __init__(self, problems: list[FieldError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Spec:
    name: str = "default"
    task: str = "sst2"
    model: str = "minilm"
    sites: tuple[str, ...] = ("attn", "ffn")
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: {"bottleneck": (1, 512), "scale": (0.5, 8.0)})
    menus: Mapping[str, Mapping[str, Mapping[str, tuple[Any, ...]]]] = field(default_factory=dict)
    points_to_evaluate: tuple[str, ...] = ()
    preset_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    budget_cap: float = 100.0  # % of the pretrained model (analytic count, head excluded)
    sampler: str = "tpe"
    seeds: int = 1
    scheduler: str = "asha"
    asha: Mapping[str, int] = field(default_factory=lambda: {"grace_period": 20, "reduction_factor": 3, "max_steps": 200})
    asha_metric: str | None = None  # None: the task's validation metric
    trials: int = 20
    concurrency: int = 1
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    storage: str = "sqlite:///peft-search/optuna.db"
    tracking_uri: str = "sqlite:///peft-search/mlflow.db"
    ray_address: str | None = None
    root: str = "peft-search"
    seed: int = 0
    confirm_seeds: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    trainer: str = "train"
    table: str | None = None
    synthetic_delay: float = 0.0
    plugins: tuple[str, ...] = ()

    def space(self) -> Any:
        from search.space import Space

        return Space(self.sites, self.values, self.ranges, self.menus)

    @property
    def target(self) -> int:
        """How many designs to train: ``trials``, or every (design, seed) of a grid."""
        if self.sampler != "grid":
            return self.trials
        from search.space import grid

        return len(grid(self.space())) * self.seeds

    @property
    def task_def(self) -> trainers.Task:
        return trainers.TASKS[self.task]

    @property
    def mode(self) -> str:
        """Ray's direction for the task's validation metric."""
        return "max" if self.task_def.higher_is_better else "min"

    @property
    def asha_watch(self) -> tuple[str, str]:
        """The metric ASHA compares at its rungs and its direction. Validation loss (or perplexity) is finer
        than accuracy early on, when most designs still tie at the majority class."""
        metric = self.asha_metric or self.task_def.validation_metric
        return metric, self.mode if metric == self.task_def.validation_metric else "min"

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able data; ``parse(spec.to_dict()) == spec``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Spec:
        """A copy with ``changes`` applied and validated."""
        return parse({**self.to_dict(), **changes})


FIELDS = {f.name for f in fields(Spec)}


def load(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    return parse(read(path))


def read(path: str | Path) -> dict[str, Any]:
    """A spec file's fields, not yet validated (the CLI applies its flags first)."""
    source = Path(path)
    if not source.is_file():
        raise SpecError([FieldError("spec", str(source), "a readable YAML file")])
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError([FieldError("spec", str(source), f"valid YAML ({str(err).splitlines()[0]})")]) from None
    if not isinstance(data, dict):
        raise SpecError([FieldError("spec", type(data).__name__, "a mapping of spec fields")])
    return data


SMOKE = {"trials": 4, "concurrency": 2, "confirm_seeds": 0, "budget_cap": 100,
         "asha": {"grace_period": 2, "reduction_factor": 2, "max_steps": 4},
         "train": {"eval_every": 2, "train_examples": 64, "eval_examples": 32, "batch_size": 8, "micro_batch": 8}}


def smoke(data: Mapping[str, Any]) -> dict[str, Any]:
    """The same search, tiny: 4 trials of 4 steps on a few examples (``--smoke``: does everything run?)."""
    points = list(data.get("points_to_evaluate", ()))[:2]
    train = {**dict(data.get("train", {})), **SMOKE["train"]}
    return {**data, **SMOKE, "train": train, "points_to_evaluate": points,
            "name": f"{data.get('name', Spec.name)}-smoke"}


def parse(data: Mapping[str, Any]) -> Spec:
    """Validate a spec given as a mapping; raises ``SpecError`` listing every problem."""
    problems: list[FieldError] = []
    plugins = data.get("plugins", ())
    try:
        import_plugins(plugins)  # before anything is validated: plugins register dimensions and values
    except (ImportError, TypeError) as err:
        problems.append(FieldError("plugins", plugins, f"importable module names ({err})"))

    def check(name: str, ok: bool, value: Any, allowed: str) -> None:
        if not ok:
            problems.append(FieldError(name, value, allowed))

    for key in data:
        check(key, key in FIELDS, data[key], "spec fields " + ", ".join(sorted(FIELDS)))
    spec = {k: v for k, v in data.items() if k in FIELDS}
    check("name", isinstance(spec.get("name", "x"), str) and spec.get("name", "x") != "", spec.get("name"),
          "a non-empty string")
    task = spec.get("task", Spec.task)
    check("task", task in trainers.TASKS, task, "one of " + ", ".join(trainers.TASKS))
    sites = tuple(spec.get("sites", Spec.sites)) if isinstance(spec.get("sites", ()), (list, tuple)) else None
    check("sites", sites is not None, spec.get("sites"), "a list of sites")
    for site in sites or ():
        check("sites", site in peft_space.SITES, site, "sites " + ", ".join(peft_space.SITES))
    for name, chosen in dict(spec.get("values", {})).items():
        dim = DIMENSIONS.dimensions.get(name)
        check(f"values.{name}", dim is not None, name, "dimensions " + ", ".join(DIMENSIONS.names()))
        if isinstance(dim, Categorical):
            for value in chosen if isinstance(chosen, (list, tuple)) else [chosen]:
                check(f"values.{name}", value in dim.choices(), value, dim.allowed())
    for name, bounds in dict(spec.get("ranges", {})).items():
        dim = DIMENSIONS.dimensions.get(name)
        numeric = dim is not None and hasattr(dim, "low")
        check(f"ranges.{name}", numeric, name, "numeric dimensions")
        if numeric:
            ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(
                isinstance(b, (int, float)) and dim.low <= b <= dim.high for b in bounds) and bounds[0] <= bounds[1]
            check(f"ranges.{name}", ok, bounds, f"[low, high] within {dim.allowed()}")
    for preset in spec.get("points_to_evaluate", ()):
        check("points_to_evaluate", preset in peft_space.PRESETS, preset, "presets " + ", ".join(peft_space.PRESETS))
    for preset, overrides in dict(spec.get("preset_overrides", {})).items():
        try:
            peft_space.preset(preset, **dict(overrides))
        except FieldError as err:
            problems.append(FieldError(f"preset_overrides.{preset}.{err.field}", err.value, err.allowed))
    cap = _percent(spec.get("budget_cap", Spec.budget_cap))
    check("budget_cap", cap is not None and 0 < cap <= 100, spec.get("budget_cap"), "a percentage in (0, 100], e.g. '1%'")
    menus = _menus(spec.get("menus", {}), sites or (), problems)
    sampler = spec.get("sampler", Spec.sampler)
    check("sampler", sampler in SAMPLERS, sampler, "one of " + ", ".join(SAMPLERS))
    uncovered = [site for site in sites or () if site not in menus]
    check("sampler", sampler != "grid" or not uncovered, sampler,
          f"a sampler other than 'grid' unless menus name every site (none for {', '.join(uncovered)})")
    scheduler = spec.get("scheduler", Spec.scheduler)
    check("scheduler", scheduler in SCHEDULERS, scheduler, "one of " + ", ".join(SCHEDULERS))
    for key in ("trials", "concurrency", "seed", "confirm_seeds", "seeds"):
        value = spec.get(key, getattr(Spec, key))
        positive = key in ("trials", "concurrency", "seeds")
        check(key, isinstance(value, int) and not isinstance(value, bool) and value >= positive, value,
              "a positive integer" if positive else "an integer ≥ 0")
    trainer = spec.get("trainer", Spec.trainer)
    check("trainer", trainer in TRAINERS, trainer, "one of " + ", ".join(TRAINERS))
    table = spec.get("table")
    check("table", (table is None) == (trainer != "tabular") and (table is None or Path(table).is_file()), table,
          "the path of a tabular benchmark file with trainer: tabular (and only then)")
    delay = spec.get("synthetic_delay", 0.0)
    check("synthetic_delay", isinstance(delay, (int, float)) and not isinstance(delay, bool) and delay >= 0, delay,
          "a number of seconds ≥ 0")
    for key in ("root", "data_dir", "ray_address"):
        value = spec.get(key)
        check(key, value is None or (isinstance(value, str) and value != ""), value, "a non-empty string or null")
    check("train.steps", "steps" not in dict(spec.get("train", {})), dict(spec.get("train", {})).get("steps"),
          "no steps here: a trial's steps are asha.max_steps")
    watch = spec.get("asha_metric")
    allowed = asha_metrics(trainers.TASKS.get(task, trainers.TASKS[Spec.task]))
    check("asha_metric", watch is None or watch in allowed, watch, "one of " + ", ".join(allowed))
    asha = {**Spec().asha, **dict(spec.get("asha", {}))}
    for key, value in asha.items():
        check(f"asha.{key}", key in Spec().asha, key, "grace_period, reduction_factor, max_steps")
        check(f"asha.{key}", isinstance(value, int) and value >= (2 if key == "reduction_factor" else 1), value,
              "an integer ≥ 2" if key == "reduction_factor" else "a positive integer")
    resources = {**Spec().resources, **dict(spec.get("resources", {}))}
    for key, value in resources.items():
        check(f"resources.{key}", key in ("cpu", "gpu"), key, "cpu, gpu")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "cpu":
            check("resources.cpu", number and value > 0, value, "a number of CPUs > 0 (fractions allowed)")
        elif key == "gpu":  # as Ray: a fraction packs trials onto one GPU; more than one GPU comes whole
            check("resources.gpu", number and (0 <= value <= 1 or (value > 1 and float(value).is_integer())), value,
                  "a fraction of one GPU in [0, 1] (trials share it) or a whole number of GPUs")
    for key in ("storage", "tracking_uri"):
        value = spec.get(key, getattr(Spec, key))
        check(key, isinstance(value, str) and "://" in value, value, "a URL such as sqlite:///path.db or postgresql://…"
              + (" or journal:///path.log" if key == "storage" else ""))
    try:
        trainers.resolve(trainers.TASKS.get(task, trainers.TASKS[Spec.task]), dict(spec.get("train", {})))
    except FieldError as err:
        problems.append(FieldError(f"train.{err.field}", err.value, err.allowed))
    if problems:
        raise SpecError(problems)
    return Spec(**{**spec, "sites": sites, "budget_cap": cap, "menus": menus, "asha": asha, "resources": resources,
                   "plugins": tuple(plugins), "synthetic_delay": float(delay),
                   "points_to_evaluate": tuple(spec.get("points_to_evaluate", ())),
                   "values": {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in dict(spec.get("values", {})).items()},
                   "ranges": {**Spec().ranges, **{k: tuple(v) for k, v in dict(spec.get("ranges", {})).items()}}})


def _menus(data: Any, sites: tuple[str, ...], problems: list[FieldError]) -> dict[str, dict[str, dict[str, tuple]]]:
    """``menus`` checked: known sites, presets that modify the site, values the design space allows."""
    from search.space import menu_options

    if not isinstance(data, Mapping):
        problems.append(FieldError("menus", data, "a mapping site -> {preset: {dimension: [values]}}"))
        return {}
    menus: dict[str, dict[str, dict[str, tuple]]] = {}
    for site, menu in data.items():
        if site not in sites or not isinstance(menu, Mapping):
            problems.append(FieldError("menus", site, "a searched site (" + ", ".join(sites) + ") mapped to presets"))
            continue
        menus[site] = {}
        for name, varied in menu.items():
            if name not in peft_space.PRESETS or site not in peft_space.PRESETS[name].sites:
                problems.append(FieldError(f"menus.{site}", name, "presets that modify " + site + ": " + ", ".join(
                    p for p, preset in peft_space.PRESETS.items() if site in preset.sites)))
                continue
            menus[site][name] = {dim: tuple(v) if isinstance(v, (list, tuple)) else (v,) for dim, v in dict(varied or {}).items()}
            try:
                for _, mod in menu_options(site, {name: menus[site][name]})[1:]:
                    peft_space.Design({site: mod})
            except FieldError as err:
                problems.append(FieldError(f"menus.{site}.{name}.{err.field.split('.')[-1]}", err.value, err.allowed))
    return menus


def asha_metrics(task: trainers.Task) -> tuple[str, ...]:
    """Validation metrics every evaluation reports: the task's own, and its loss (perplexity for generation)."""
    return tuple(dict.fromkeys((task.validation_metric, "loss" if task.kind == "classification" else "perplexity")))


def import_plugins(modules: Any) -> None:
    """Import user modules that register dimensions, values, sites or tasks (a list of module names)."""
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f"a list of module names, not {modules!r}")
    for module in modules:
        importlib.import_module(module)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _percent(value: Any) -> float | None:
    """'1%', '0.5 %', 1 or 1.0 -> 1.0 (percent); anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("%").strip())
        except ValueError:
            return None
    return None
