"""Training hyper-parameters: one dataclass, the paper's recipe (Table 8) as each task's defaults.

``resolve(task, overrides)`` merges field defaults, the task's recipe and the user's overrides, checking
each override's name and type, so that a typo is an error naming the field rather than a silent default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from peft_space import FieldError
from trainers.tasks import Task


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 32  # sentences per optimiser step (reached by gradient accumulation)
    batch_tokens: int = 0  # if > 0: tokens per optimiser step instead (MT), source and target counted
    micro_batch: int = 16  # sentences per forward pass
    eval_batch: int = 0  # examples per evaluation forward pass (no graph is kept); 0: micro_batch
    group_by_length: bool = False  # batches of similar lengths (less padding; transformers' group_by_length)
    steps: int = 0  # optimiser steps; 0 means ``epochs`` over the training data
    epochs: float = 1.0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    max_source_length: int = 512
    max_target_length: int = 128
    num_beams: int = 1
    min_generate: int = 1
    max_generate: int = 60
    eval_every: int = 0  # optimiser steps between evaluations; 0: five times per run
    eval_growth: float = 1.0  # > 1: evaluate at eval_every·growth^k (a successive-halving ladder) and at the end
    train_examples: int = 0  # use only the first N training examples (0: all)
    eval_examples: int = 0  # evaluate on the first N validation/test examples (0: all)
    test_examples: int = 0  # the first N test examples (0: as eval_examples)
    precision: str = "auto"  # "fp32", "bf16", "fp16"; auto: bf16 autocast on a GPU, fp32 on a CPU
    threads: int = 0  # torch CPU threads; 0: leave torch's choice
    base_dtype: str = "fp32"  # the frozen pretrained weights' dtype: "bf16", "fp16" halve them (what trains stays fp32)
    gradient_checkpointing: bool = False  # recompute each layer's activations in the backward pass: less memory

    def __post_init__(self) -> None:
        if self.base_dtype != "fp32" and self.precision not in ("auto", self.base_dtype):
            raise FieldError("precision", self.precision, f"'auto' or {self.base_dtype!r}: frozen {self.base_dtype} "
                                                          "weights (base_dtype) compute under autocast in their dtype")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in fields(TrainConfig)}
CHOICES = {"precision": ("auto", "fp32", "bf16", "fp16"), "base_dtype": ("fp32", "bf16", "fp16")}


def _coerce(name: str, value: Any) -> Any:
    kind = type(getattr(TrainConfig, name))
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise FieldError(name, value, "one of " + ", ".join(map(repr, CHOICES[name])))
        return value
    if kind is bool:  # YAML and Python give a bool; MLflow records it as "True" or "False"
        flag = value if isinstance(value, bool) else {"true": True, "false": False}.get(str(value).lower())
        if flag is None:
            raise FieldError(name, value, "true or false")
        return flag
    try:
        number = kind(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise FieldError(name, value, f"a {kind.__name__}") from None
    if number < 0:
        raise FieldError(name, value, f"a {kind.__name__} ≥ 0")
    return number


def resolve(task: Task, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The task's recipe with ``overrides`` applied (unknown names and bad values raise ``DesignError``)."""
    values = dict(task.recipe)
    for name, value in (overrides or {}).items():
        if name not in FIELDS:
            raise FieldError(name, value, "hyper-parameters " + ", ".join(FIELDS))
        values[name] = value
    return TrainConfig(**{name: _coerce(name, value) for name, value in values.items()})
