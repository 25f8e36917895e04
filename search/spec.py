"""The search spec: a YAML file (or the same keys from the command line), validated before heavy imports.

Every problem is reported at once, one line each, naming the field, the value and what is allowed::

    name: sst2-minilm
    task: sst2
    model: minilm
    sites: [attn, ffn]
    values: {form: [linear, relu, softmax]}      # per dimension; default: every registered value
    ranges: {bottleneck: [1, 64], scale: [0.5, 8]}
    points_to_evaluate: [lora_attn, pa_ffn, mam]  # presets tried first (sizes may be overridden in ``preset_overrides``)
    budget_cap: 1%                                # designs above it are never trained
    sampler: tpe                                  # tpe | nsga2 | random | gp
    asha: {grace_period: 20, reduction_factor: 3, max_steps: 200}
    trials: 30
    concurrency: 2
    resources: {cpu: 1, gpu: 0}
    storage: sqlite:///peft-search/optuna.db
    tracking_uri: sqlite:///peft-search/mlflow.db
    ray_address: null                             # null: a local Ray; "auto" or host:port for a cluster
    seed: 0
    train: {lr: 1e-3, train_examples: 2000}       # TrainConfig overrides
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

import peft_space
import trainers
from peft_space import FieldError
from peft_space.dimensions import DIMENSIONS, Categorical

SAMPLERS = ("tpe", "nsga2", "random", "gp")


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
    points_to_evaluate: tuple[str, ...] = ()
    preset_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    budget_cap: float = 100.0  # % of the pretrained model (analytic count, head excluded)
    sampler: str = "tpe"
    asha: Mapping[str, int] = field(default_factory=lambda: {"grace_period": 20, "reduction_factor": 3, "max_steps": 200})
    trials: int = 20
    concurrency: int = 1
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    storage: str = "sqlite:///peft-search/optuna.db"
    tracking_uri: str = "sqlite:///peft-search/mlflow.db"
    ray_address: str | None = None
    seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)

    def space(self) -> Any:
        from search.space import Space

        return Space(self.sites, self.values, self.ranges)


FIELDS = {f.name for f in fields(Spec)}


def load(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    source = Path(path)
    if not source.is_file():
        raise SpecError([FieldError("spec", str(source), "a readable YAML file")])
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError([FieldError("spec", str(source), f"valid YAML ({str(err).splitlines()[0]})")]) from None
    if not isinstance(data, dict):
        raise SpecError([FieldError("spec", type(data).__name__, "a mapping of spec fields")])
    return parse(data)


def parse(data: Mapping[str, Any]) -> Spec:
    """Validate a spec given as a mapping; raises ``SpecError`` listing every problem."""
    problems: list[FieldError] = []

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
    sampler = spec.get("sampler", Spec.sampler)
    check("sampler", sampler in SAMPLERS, sampler, "one of " + ", ".join(SAMPLERS))
    for key in ("trials", "concurrency", "seed"):
        value = spec.get(key, getattr(Spec, key))
        check(key, isinstance(value, int) and not isinstance(value, bool) and value >= (0 if key == "seed" else 1),
              value, "a positive integer" if key != "seed" else "an integer ≥ 0")
    asha = {**Spec().asha, **dict(spec.get("asha", {}))}
    for key, value in asha.items():
        check(f"asha.{key}", key in Spec().asha, key, "grace_period, reduction_factor, max_steps")
        check(f"asha.{key}", isinstance(value, int) and value >= (2 if key == "reduction_factor" else 1), value,
              "an integer ≥ 2" if key == "reduction_factor" else "a positive integer")
    resources = {**Spec().resources, **dict(spec.get("resources", {}))}
    for key, value in resources.items():
        check(f"resources.{key}", key in ("cpu", "gpu"), key, "cpu, gpu")
        check(f"resources.{key}", isinstance(value, (int, float)) and value >= 0, value, "a number ≥ 0 (fractions allowed)")
    for key in ("storage", "tracking_uri"):
        value = spec.get(key, getattr(Spec, key))
        check(key, isinstance(value, str) and "://" in value, value, "a URL such as sqlite:///path.db or postgresql://…")
    try:
        trainers.resolve(trainers.TASKS.get(task, trainers.TASKS[Spec.task]), dict(spec.get("train", {})))
    except FieldError as err:
        problems.append(FieldError(f"train.{err.field}", err.value, err.allowed))
    if problems:
        raise SpecError(problems)
    return Spec(**{**spec, "sites": sites, "budget_cap": cap, "asha": asha, "resources": resources,
                   "points_to_evaluate": tuple(spec.get("points_to_evaluate", ())),
                   "values": {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in dict(spec.get("values", {})).items()},
                   "ranges": {**Spec().ranges, **{k: tuple(v) for k, v in dict(spec.get("ranges", {})).items()}}})


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
