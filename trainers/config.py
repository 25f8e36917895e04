"""Training hyper-parameters: one dataclass, the paper's recipe (Table 8) as each task's defaults.

Each field is declared once, with ``hyperparameter``: its default, its help and what it allows (numeric bounds,
or a set of choices). ``resolve(task, overrides)`` merges field defaults, the task's recipe and the user's
overrides and checks each value against its declaration, so that a typo, NaN or a value out of range is an error
naming the field rather than a silent default or a failed run; ``hyperparameters()`` lists the declarations for
``peft-search fields`` and ``peft-search train --help``.

A field a search may sample also declares what it samples by default, as a design dimension does: a range
(``search``, on a log scale with ``log``) or a list of ``values``. A spec's ``search_train`` picks which to
sample and may narrow them (``search.space``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from peft_space import FieldError
from trainers.tasks import Task


def hyperparameter(default: Any, help: str, *, low: float | None = None, high: float | None = None,
                   open_low: bool = False, open_high: bool = False, choices: Sequence[str] = (),
                   search: tuple[float, float] | None = None, log: bool = False, values: Sequence[Any] = (),
                   unrecorded: Any = None) -> Any:
    """One hyper-parameter, declared once: its default, its help and what it allows — a number from ``low`` (every
    number declares one) up to ``high`` if given (a bound is excluded where ``open_*``), or one of ``choices``; a bool
    allows true or false. NaN and infinity are never allowed. A searchable one says what a search samples by default:
    the range ``search`` (log-uniformly with ``log``), or one of ``values``. ``unrecorded``: the value that applied to
    runs recorded before the field existed, where it differs from ``default`` (``reproduce`` uses it for them)."""
    return dataclasses.field(default=default, metadata={"help": help, "low": low, "high": high, "open_low": open_low,
                                                        "open_high": open_high, "choices": tuple(choices),
                                                        "search": search, "log": log, "values": tuple(values),
                                                        "unrecorded": unrecorded})


@dataclass(frozen=True)
class TrainConfig:
    lr: float = hyperparameter(1e-4, "peak learning rate of AdamW (linear warm-up, then linear decay to 0)",
                               low=0, open_low=True, search=(1e-5, 1e-2), log=True)
    batch_size: int = hyperparameter(32, "sentences per optimiser step (reached by gradient accumulation)", low=1,
                                     values=(8, 16, 32, 64))
    batch_tokens: int = hyperparameter(0, "tokens per optimiser step instead, source and target counted (MT); "
                                          "0: batch_size sentences", low=0)
    micro_batch: int = hyperparameter(16, "sentences per forward pass", low=1)
    eval_batch: int = hyperparameter(0, "examples per evaluation forward pass (no graph kept); 0: micro_batch", low=0)
    group_by_length: bool = hyperparameter(False, "batches of similar lengths: less padding (transformers' "
                                                  "group_by_length)")
    steps: int = hyperparameter(0, "optimiser steps; 0: epochs over the training data", low=0)
    epochs: float = hyperparameter(1.0, "passes over the training data when steps is 0", low=0, open_low=True)
    warmup_ratio: float = hyperparameter(0.0, "share of the steps the learning rate warms up over", low=0, high=1,
                                         open_high=True, search=(0.0, 0.2))
    weight_decay: float = hyperparameter(0.01, "AdamW's decoupled weight decay, on the trained matrices only (LoRA's "
                                               "and adapters' projections, prefix and prompt vectors, a head's weight);"
                                               " never on vectors: biases, BitFit's shifts, norm scales, gates (a "
                                               "model without biases, such as LLaMA, has only its RMSNorm scales "
                                               "there, and those train only in full fine-tuning)",
                                         low=0, high=1, search=(0.0, 0.1))
    label_smoothing: float = hyperparameter(0.0, "label smoothing of the cross-entropy", low=0, high=1,
                                            open_high=True, search=(0.0, 0.2))
    max_grad_norm: float = hyperparameter(1.0, "gradient clipping by global norm; 0: none", low=0)
    dropout: float = hyperparameter(0.1, "probability of every dropout layer, the pretrained model's included; a model "
                                         "without Dropout modules (LLaMA, Qwen, Mistral, Gemma) has attention "
                                         "dropout only (its attention_dropout), set to this", low=0, high=1,
                                    open_high=True, search=(0.0, 0.3))
    max_source_length: int = hyperparameter(512, "input tokens kept (longer inputs are truncated)", low=1)
    max_target_length: int = hyperparameter(128, "target tokens kept (generation tasks)", low=1)
    num_beams: int = hyperparameter(1, "beams of the test split's generation", low=1)
    min_generate: int = hyperparameter(1, "fewest tokens generated", low=0)
    max_generate: int = hyperparameter(60, "most tokens generated", low=1)
    eval_every: int = hyperparameter(0, "optimiser steps between evaluations; 0: five per run", low=0)
    eval_growth: float = hyperparameter(1.0, "> 1: evaluate at eval_every·growth^k (a successive-halving ladder) "
                                             "and at the end", low=1)
    train_examples: int = hyperparameter(0, "train on the first N training examples; 0: all", low=0)
    eval_examples: int = hyperparameter(0, "evaluate on the first N validation (and test) examples; 0: all", low=0)
    test_examples: int = hyperparameter(0, "the first N test examples; 0: as eval_examples", low=0)
    precision: str = hyperparameter("auto", "compute precision; auto: bf16 autocast on a GPU, fp32 on a CPU",
                                    choices=("auto", "fp32", "bf16", "fp16"))
    threads: int = hyperparameter(0, "torch CPU threads; 0: torch's choice", low=0)
    base_dtype: str = hyperparameter("fp32", "dtype of the frozen pretrained weights: bf16 or fp16 halve them "
                                             "(what trains stays fp32)", choices=("fp32", "bf16", "fp16"))
    pooling: str = hyperparameter("mean", "what a classification head reads: mean, the mean over the tokens (how "
                                          "sentence-transformers checkpoints such as MiniLM were trained: its [CLS] "
                                          "output is no sentence summary); cls, the token the checkpoint's own head "
                                          "reads: an encoder's first (BERT's pooler over [CLS]; runs recorded before "
                                          "2026-12 used it), a decoder-only model's last non-padding token (the only "
                                          "one that has seen the whole input; mean puts the mean there)",
                                  choices=("cls", "mean"), unrecorded="cls")
    gradient_checkpointing: bool = hyperparameter(False, "recompute each layer's activations in the backward "
                                                         "pass: less memory, more time")

    def __post_init__(self) -> None:
        if self.base_dtype != "fp32" and self.precision not in ("auto", self.base_dtype):
            raise FieldError("precision", self.precision, f"'auto' or {self.base_dtype!r}: frozen {self.base_dtype} "
                                                          "weights (base_dtype) compute under autocast in their dtype")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in fields(TrainConfig)}


@dataclass(frozen=True)
class Hyperparameter:
    """A ``TrainConfig`` field as help texts show it: ``type`` is what a value becomes (``bool``, ``int``, ``float``,
    ``str``), ``allowed`` the words its errors use."""

    name: str
    type: type
    default: Any
    help: str
    allowed: str
    search: tuple[float, float] | None = None  # the range a search samples by default
    log: bool = False  # sampled on a log scale
    values: tuple[Any, ...] = ()  # or the values it picks among
    unrecorded: Any = None  # the value of runs recorded before it existed (None: its default)

    @property
    def searchable(self) -> bool:
        return self.search is not None or bool(self.values)

    def searched(self) -> str:
        """What a search samples by default, in words ("" for a field no search samples)."""
        if self.values:
            return "one of " + ", ".join(map(str, self.values))
        if self.search is None:
            return ""
        return f"[{self.search[0]:g}, {self.search[1]:g}]" + (", log scale" if self.log else "")


def hyperparameters() -> list[Hyperparameter]:
    """Every hyper-parameter with its default (a task's recipe may change it), help, what it allows and, for one a
    search may sample, what it samples by default."""
    return [Hyperparameter(f.name, _type(f.name), f.default, f.metadata["help"], allowed(f.name), f.metadata["search"],
                           f.metadata["log"], f.metadata["values"], f.metadata["unrecorded"])
            for f in fields(TrainConfig)]


def coerce(name: str, value: Any) -> Any:
    """``value`` as the hyper-parameter ``name`` takes it, or ``FieldError`` saying what it allows."""
    if name not in FIELDS:
        raise FieldError(name, value, "hyper-parameters " + ", ".join(FIELDS))
    return _coerce(name, value)


def allowed(name: str) -> str:
    """What the hyper-parameter ``name`` allows, in words (its error messages and help say the same)."""
    meta, kind = FIELDS[name].metadata, _type(name)
    if meta["choices"]:
        return "one of " + ", ".join(map(repr, meta["choices"]))
    if kind is bool:
        return "true or false"
    low, high, what = meta["low"], meta["high"], "an integer" if kind is int else "a float"
    if high is None:
        return f"{what} {'>' if meta['open_low'] else '≥'} {low:g}"
    return f"{what} in {'(' if meta['open_low'] else '['}{low:g}, {high:g}{')' if meta['open_high'] else ']'}"


def _type(name: str) -> type:
    return type(FIELDS[name].default)


def _coerce(name: str, value: Any) -> Any:
    meta, kind = FIELDS[name].metadata, _type(name)
    if meta["choices"]:
        if value not in meta["choices"]:
            raise FieldError(name, value, allowed(name))
        return value
    if kind is bool:  # YAML and Python give a bool; MLflow records it as "True" or "False"
        flag = value if isinstance(value, bool) else {"true": True, "false": False}.get(str(value).lower())
        if flag is None:
            raise FieldError(name, value, allowed(name))
        return flag
    try:
        if isinstance(value, bool):  # int(True) is 1: a flag given for a number is a mistake, not 1
            raise TypeError
        number = kind(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # int(inf) overflows
        raise FieldError(name, value, allowed(name)) from None
    if not (math.isfinite(number) and _within(number, meta)):
        raise FieldError(name, value, allowed(name))
    return number


def _within(number: float, meta: Mapping[str, Any]) -> bool:
    low, high = meta["low"], meta["high"]
    above = low is None or (number > low if meta["open_low"] else number >= low)
    below = high is None or (number < high if meta["open_high"] else number <= high)
    return above and below


def resolve(task: Task, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The task's recipe with ``overrides`` applied (unknown names and bad values raise ``FieldError``)."""
    values = dict(task.recipe)
    for name, value in (overrides or {}).items():
        if name not in FIELDS:
            raise FieldError(name, value, "hyper-parameters " + ", ".join(FIELDS))
        values[name] = value
    return TrainConfig(**{name: _coerce(name, value) for name, value in values.items()})
