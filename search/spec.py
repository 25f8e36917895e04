"""The search spec: a YAML file (or the same keys from the command line), validated before heavy imports.

Every field is declared once, in ``Spec``, with its default and help (``spec_field``); the parser's field
list, ``peft-search run``'s options and ``peft-search fields`` (every field with its default and meaning) come
from those declarations. Every problem is reported at once, one line each, naming the field, the value and what
is allowed::

    name: sst2-minilm
    sites: [attn, ffn]
    menus: {attn: {lora_attn: {bottleneck: [4, 16]}, prefix: {}}}
    budget_cap: 1%
    sampler: tpe
    scheduler: asha
    asha: {grace_period: 20, reduction_factor: 3, max_steps: 200}
    trials: 30
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

import peft_space
import trainers
from peft_space import DIMENSIONS, Categorical, FieldError, Float, Integer

DEFAULT = Path(__file__).parent / "specs" / "default.yaml"  # the embedded default: `peft-search run` with no spec
SAMPLERS = ("tpe", "nsga2", "random", "gp", "grid")
TRAINERS = ("train", "synthetic", "tabular")
SCHEDULERS = ("asha", "pareto_asha", "none")


class SpecError(ValueError):
    """All the problems of a spec, one ``FieldError`` each."""

    def __init__(self, problems: list[FieldError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def spec_field(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None,
               flag: str | bool = False, choices: Sequence[str] | Callable[[], Sequence[str]] = ()) -> Any:
    """One spec field, declared once: its default, its help (``--help``, ``describe``, the docs), the ``peft-search
    run`` option it gets (``flag=True``: ``--field-name``; a string: that name; otherwise only ``--set``) and, for
    a field that names one of a fixed set, its ``choices`` (checked by ``parse``, listed in the help)."""
    metadata = {"help": help, "flag": flag, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Spec:
    name: str = spec_field("default", "search name: the Optuna study, the MLflow experiment, Ray's folder", flag=True)
    task: str = spec_field("sst2", "task", flag=True, choices=lambda: list(trainers.TASKS))
    model: str = spec_field("minilm", "base model: 'minilm' (shipped) or a transformers name or path", flag=True)
    sites: tuple[str, ...] = spec_field(("attn", "ffn"), "sites a design may modify", choices=lambda: list(peft_space.SITES))
    values: Mapping[str, tuple[Any, ...]] = spec_field(
        factory=dict, help="allowed values per dimension, e.g. {form: [linear, relu]} (default: every registered value)")
    ranges: Mapping[str, tuple[float, float]] = spec_field(
        factory=lambda: declared_ranges(), help="numeric search ranges, e.g. {bottleneck: [1, 64]} (default: each "
                                                "dimension's declared range)")
    menus: Mapping[str, Mapping[str, Mapping[str, tuple[Any, ...]]]] = spec_field(
        factory=dict, help="a site picks one of these presets (or none) at the listed values instead of every "
                           "dimension, e.g. {attn: {lora_attn: {bottleneck: [4, 16]}, prefix: {}}}")
    points_to_evaluate: tuple[str, ...] = spec_field((), "presets tried first (sizes set in preset_overrides)")
    preset_overrides: Mapping[str, Mapping[str, Any]] = spec_field(
        factory=dict, help="per preset of points_to_evaluate, e.g. {lora_attn: {attn.bottleneck: 8}}")
    budget_cap: float = spec_field(100.0, "largest budget to train, % of the pretrained model (analytic count, head "
                                          "excluded), e.g. '1%'; designs above it are never trained", flag=True)
    sampler: str = spec_field("tpe", "Optuna sampler (grid: every design of a menu space, `seeds` times)", flag=True,
                              choices=SAMPLERS)
    seeds: int = spec_field(1, "grid: each design is trained with seeds seed, seed+1, ...")
    scheduler: str = spec_field("asha", "early stopping: asha (one metric), pareto_asha (metric and budget), none "
                                        "(every trial to asha.max_steps)", flag=True, choices=SCHEDULERS)
    asha: Mapping[str, int] = spec_field(
        factory=lambda: {"grace_period": 20, "reduction_factor": 3, "max_steps": 200},
        help="rungs: grace_period, reduction_factor, max_steps (every trial's steps)")
    asha_metric: str | None = spec_field(None, "what the scheduler compares at its rungs: the task's metric (default) "
                                               "or loss, which separates designs earlier")
    trials: int = spec_field(20, "designs to train (designs over the budget cap do not count)", flag=True)
    concurrency: int = spec_field(1, "trials at once", flag=True)
    resources: Mapping[str, float] = spec_field(
        factory=lambda: {"cpu": 1, "gpu": 0}, help="per trial: cpu, gpu (a fraction packs trials onto one GPU)")
    storage: str = spec_field("sqlite:///peft-search/optuna.db", "Optuna storage URL: sqlite:///…, postgresql://…, "
                                                                 "journal:///path.log", flag=True)
    tracking_uri: str = spec_field("sqlite:///peft-search/mlflow.db", "MLflow tracking URI: sqlite:///…, "
                                                                      "http://host:5000", flag=True)
    ray_address: str | None = spec_field(None, "Ray cluster: 'auto' on a cluster node, or host:port; null: a local "
                                               "Ray", flag="address")
    root: str = spec_field("peft-search", "folder of Ray's experiment state and the saved spec", flag=True)
    seed: int = spec_field(0, "sampler and training seed", flag=True)
    confirm_seeds: int = spec_field(0, "re-train the front's designs with this many more seeds; report the median",
                                    flag=True)
    train: Mapping[str, Any] = spec_field(
        factory=dict, help="training overrides, e.g. {lr: 1e-3, train_examples: 2000} (steps: asha.max_steps)")
    data_dir: str | None = spec_field(None, "the task's local files (default: $PEFT_SEARCH_DATA, shared/data)")
    trainer: str = spec_field("train", "train; synthetic (a closed-form learning curve: a dry run of the whole stack "
                                       "in seconds); tabular (replays the curves recorded in `table`)", flag=True,
                              choices=TRAINERS)
    table: str | None = spec_field(None, "the tabular benchmark file the tabular trainer replays")
    synthetic_delay: float = spec_field(0.0, "seconds per report of the synthetic trainer")
    plugins: tuple[str, ...] = spec_field((), "modules imported first (driver and workers) to register dimensions "
                                              "and values")

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


def field_choices(declared: Field) -> list[str]:
    """The values a field declared with ``choices`` allows."""
    allowed = declared.metadata["choices"]
    return list(allowed() if callable(allowed) else allowed)


def flags() -> dict[str, Field]:
    """The spec fields that ``peft-search run`` takes as options, by option name (the others: ``--set``)."""
    return {(f.metadata["flag"] if isinstance(f.metadata["flag"], str) else f.name): f
            for f in fields(Spec) if f.metadata["flag"]}


def field_help(declared: Field) -> str:
    """A field's help, with its choices where it has them."""
    allowed = field_choices(declared)
    return declared.metadata["help"] + (f" (one of {', '.join(allowed)})" if allowed else "")


def describe() -> str:
    """Every spec field as a YAML line with its default and help: what ``peft-search fields`` prints."""
    lines = []
    for declared in fields(Spec):
        default = declared.default_factory() if declared.default_factory is not MISSING else declared.default
        text = yaml.safe_dump(_plain(default), default_flow_style=True, width=1_000, sort_keys=False).strip().removesuffix("\n...")
        lines.append(f"{declared.name}: {text}  # {field_help(declared)}")
    return "\n".join(lines)


def declared_ranges() -> dict[str, tuple[float, float]]:
    """Each numeric dimension's default search range, as its declaration says (plugins' included)."""
    return {dim.name: tuple(dim.search) for dim in DIMENSIONS.values() if isinstance(dim, (Integer, Float))}


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
    for declared in fields(Spec):  # a field naming one of a fixed set (each of a list's items)
        if allowed := field_choices(declared):
            value = spec.get(declared.name, declared.default)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                check(declared.name, item in allowed, item, "one of " + ", ".join(allowed))
    check("name", isinstance(spec.get("name", "x"), str) and spec.get("name", "x") != "", spec.get("name"),
          "a non-empty string")
    task = spec.get("task", Spec.task)
    sites = tuple(spec.get("sites", Spec.sites)) if isinstance(spec.get("sites", ()), (list, tuple)) else None
    check("sites", sites is not None, spec.get("sites"), "a list of sites")
    for name, chosen in dict(spec.get("values", {})).items():
        dim = DIMENSIONS.get(name)
        check(f"values.{name}", dim is not None, name, "dimensions " + ", ".join(DIMENSIONS))
        if isinstance(dim, Categorical):
            for value in chosen if isinstance(chosen, (list, tuple)) else [chosen]:
                check(f"values.{name}", value in dim.choices(), value, dim.allowed())
    for name, bounds in dict(spec.get("ranges", {})).items():
        dim = DIMENSIONS.get(name)
        numeric = isinstance(dim, (Integer, Float))
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
    uncovered = [site for site in sites or () if site not in menus]
    check("sampler", sampler != "grid" or not uncovered, sampler,
          f"a sampler other than 'grid' unless menus name every site (none for {', '.join(uncovered)})")
    for key in ("trials", "concurrency", "seed", "confirm_seeds", "seeds"):
        value = spec.get(key, getattr(Spec, key))
        positive = key in ("trials", "concurrency", "seeds")
        check(key, isinstance(value, int) and not isinstance(value, bool) and value >= positive, value,
              "a positive integer" if positive else "an integer ≥ 0")
    trainer = spec.get("trainer", Spec.trainer)
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
                   "ranges": {**declared_ranges(), **{k: tuple(v) for k, v in dict(spec.get("ranges", {})).items()}}})


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
