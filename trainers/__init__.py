"""trainers: train and evaluate one design on a task (SST-2, MNLI, XSum, WMT16 en-ro); knows nothing of search.

    from trainers import train
    result = train("sst2", peft_space.preset("mam"), steps=200, seed=1, report=lambda step, m: print(step, m))
    result.status, result.validation, result.test, result.budget, result.config

Tasks are registered (``register_task``); data come through ``datasets`` from local files or the hub;
the base model is loaded once per process and a fresh design applied per call. Task and
hyper-parameter declarations import without torch; ``train`` and ``load_base`` import it on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainers.config import Hyperparameter, TrainConfig, coerce, hyperparameters, resolve
from trainers.defaults import DEFAULT_MODEL, FULL
from trainers.declared import (DeclarationError, changed_data, data_hashes, declaration_fields, load_declaration,
                               parse_declaration, register_declared, resolve_declared_files, task_of)
from trainers.metrics import PREDICTED_SHARE, SE
from trainers.status import Status
from trainers.tasks import TASKS, Task, TaskKind, register_task, validation_metrics

_LAZY = {"train": "trainers.loop", "evaluate": "trainers.loop", "Result": "trainers.loop",
         "load_base": "trainers.models", "budget_pct": "trainers.models", "check_model": "trainers.models",
         "prepare": "trainers.models", "model_path": "trainers.models", "check_data": "trainers.data",
         "release": "trainers.memory"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")


__all__ = ["DEFAULT_MODEL", "FULL", "PREDICTED_SHARE", "SE", "TASKS", "DeclarationError", "Hyperparameter", "Result",
           "Status", "Task", "changed_data", "data_hashes", "declaration_fields", "load_declaration", "parse_declaration",
           "register_declared", "resolve_declared_files", "task_of",
           "TaskKind", "TrainConfig", "budget_pct", "check_data", "check_model", "coerce", "evaluate", "hyperparameters",
           "load_base", "model_path", "prepare", "register_task", "release", "resolve", "train", "validation_metrics"]
