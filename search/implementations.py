"""Every implementation a spec can name, one table per kind: name -> ``"module:attribute"``, imported only when a
search builds it (``load``), as ``peft_space`` does with its lazy names.

The spec's choices are these tables' keys, so parsing a spec imports neither Ray nor torch, and a new sampler,
trainer or scheduler is one line here plus its code."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

SAMPLERS = {  # (seed, concurrency) -> an Optuna sampler
    "tpe": "search.samplers:tpe",
    "nsga2": "search.samplers:nsga2",
    "random": "search.samplers:random",
    "gp": "search.samplers:gp",
    "grid": "search.samplers:random",  # a grid enqueues its cases: the sampler never draws
}
TRAINERS = {  # Ray Tune function trainables
    "train": "search.trainable:train_design",
    "synthetic": "search.trainable:synthetic",
    "tabular": "search.trainable:replay_table",
}
SCHEDULERS = {  # Ray Tune trial schedulers
    "asha": "ray.tune.schedulers:ASHAScheduler",
    "pareto_asha": "search.pareto_asha:ParetoASHAScheduler",
    "none": "ray.tune.schedulers:FIFOScheduler",
}


def load(table: Mapping[str, str], name: str) -> Any:
    """The implementation ``name`` of ``table``, imported now."""
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
