"""A trial's config and what it trains, both ways.

Ray Tune gives every trial one config: the search's constants (``search.assemble.constants``: task, model, seed,
the training configuration ``train``, data, plugins, trainer; a declared task travels as its declaration) merged
with what the searcher suggests for it, or,
for a fixed list of cases run as a grid (confirmation re-runs, a table's added designs, its reference rows), with
the case under the key ``case``. Both the suggestion and a case are made by ``suggestion``; ``read`` turns either
config into a ``TrialConfig``: the design (``None``: full fine-tuning), its budget, seed and training
configuration with the trial's own overrides applied. The trainables, the MLflow recorder and the runner all go
through here, so a new per-trial value is added in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trainers
from peft_space import Design
from search.spec import import_plugins
from trainers import FULL

CASE = "case"  # a grid of cases: Ray Tune's grid_search over this key


@dataclass(frozen=True)
class TrialConfig:
    design: Design | None  # None: full fine-tuning
    budget: float  # % of the pretrained model
    seed: int
    train: Mapping[str, Any]  # ``trainers.train``'s overrides: the search's, then the trial's own; ``steps`` set
    task: str
    model: str
    optuna_trial: int = -1  # the study's trial it trains or re-trains; -1: a case outside the study
    preset: str = ""  # the paper method it was seeded from
    confirmation: bool = False  # a case re-training a trial of the study with another seed
    data_dir: str | None = None
    plugins: tuple[str, ...] = ()
    table: str | None = None  # the tabular trainer's table
    synthetic_delay: float = 0.0  # the synthetic trainer's seconds per report

    @property
    def design_id(self) -> str:
        return design_id(self.design)

    @property
    def steps(self) -> int:
        return int(self.train["steps"])


def design_id(design: Design | None) -> str:
    """The design's content hash; ``trainers.FULL`` for full fine-tuning."""
    return design.id if design is not None else FULL


def suggestion(design: Design | None, budget: float, *, optuna_trial: int = -1, preset: str = "",
               seed: int | None = None, train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What one trial trains, as plain data for Ray Tune: the searcher's answer, or one case of a grid. ``seed``
    and ``train`` (overrides of the search's training configuration) replace the search's where given."""
    chosen: dict[str, Any] = {"design": design.to_dict() if design is not None else None, "budget": budget,
                              "optuna_trial": optuna_trial, "preset": preset}
    if seed is not None:
        chosen["seed"] = seed
    if train:
        chosen["train"] = dict(train)
    return chosen


def read(config: Mapping[str, Any]) -> TrialConfig:
    """A trial's config as Ray Tune hands it over (a case's values lifted to the top), once the user's plugins have
    registered the dimensions and values its design may use, and its task if declared."""
    case = dict(config.get(CASE, {}))
    flat = {**config, **case, "train": {**config.get("train", {}), **case.get("train", {})}}
    import_plugins(flat.get("plugins", ()))
    task = flat["task"]  # a registered task's name, or a declared task (registered here, in the worker)
    design = Design.from_dict(flat["design"]) if flat["design"] is not None else None
    optuna_trial = int(flat.get("optuna_trial", -1))
    return TrialConfig(design=design, budget=float(flat["budget"]), seed=int(flat["seed"]), train=flat["train"],
                       task=trainers.task_of(task).name, model=flat["model"], optuna_trial=optuna_trial,
                       preset=flat.get("preset", ""), confirmation=bool(case) and optuna_trial >= 0,
                       data_dir=flat.get("data_dir"), plugins=tuple(flat.get("plugins", ())), table=flat.get("table"),
                       synthetic_delay=float(flat.get("synthetic_delay", 0.0)))
