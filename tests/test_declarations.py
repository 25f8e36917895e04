"""Declarations that import without torch: the trainer's hyper-parameters (``TrainConfig``'s field metadata), what a
task's kind decides (``Task``'s properties), and the kinds a functional form may be built as (``FormKind``)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import get_args

import pytest

import peft_space
import trainers
from peft_space import DesignError, FieldError, FormKind
from trainers import TASKS, TrainConfig, hyperparameters, resolve

SST2 = TASKS["sst2"]
DECLARED = {h.name: h for h in hyperparameters()}
NUMBERS = [name for name, h in DECLARED.items() if h.type in (int, float)]


def refused(name: str, value: object) -> FieldError:
    """The error ``resolve`` raises for ``name: value``; it must name the field and say what the declaration allows."""
    with pytest.raises(FieldError) as err:
        resolve(SST2, {name: value})
    assert str(err.value) == f"{name}: {value!r} is not allowed; allowed: {DECLARED[name].allowed}"
    return err.value


# -- TrainConfig's declarations ---------------------------------------------------------------------------------------
def test_every_field_is_declared_with_its_help_and_what_it_allows():
    assert list(DECLARED) == [f.name for f in dataclasses.fields(TrainConfig)]  # none left undeclared
    for h in DECLARED.values():
        assert h.help and h.allowed, h
        assert h.type is type(h.default) and h.default == getattr(TrainConfig(), h.name)


def test_the_allowed_text_says_what_each_kind_of_field_takes():
    assert DECLARED["lr"].allowed == "a float > 0"
    assert DECLARED["dropout"].allowed == DECLARED["label_smoothing"].allowed == "a float in [0, 1)"
    assert DECLARED["eval_growth"].allowed == "a float ≥ 1"
    assert DECLARED["batch_size"].allowed == DECLARED["micro_batch"].allowed == "an integer ≥ 1"
    assert DECLARED["precision"].allowed == "one of 'auto', 'fp32', 'bf16', 'fp16'"
    assert DECLARED["gradient_checkpointing"].allowed == "true or false"


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "inf"])
def test_nan_and_infinity_are_refused_for_every_number(name, value):
    # a NaN learning rate passed "≥ 0" once, and every trial of the search then failed
    refused(name, value)


@pytest.mark.parametrize("name, bad, edge", [
    ("lr", 0.0, 1e-9), ("epochs", 0, 0.5), ("warmup_ratio", 1.0, 0.99), ("warmup_ratio", -0.1, 0.0),
    ("dropout", 1.0, 0.0), ("label_smoothing", 1.0, 0.0), ("weight_decay", 1.5, 1.0), ("eval_growth", 0.5, 1.0),
    ("batch_size", 0, 1), ("micro_batch", 0, 1), ("num_beams", 0, 1), ("max_source_length", 0, 1), ("steps", -1, 0),
])
def test_a_value_out_of_bounds_is_refused_and_the_bound_itself_is_not(name, bad, edge):
    refused(name, bad)
    assert getattr(resolve(SST2, {name: edge}), name) == edge


@pytest.mark.parametrize("name", [name for name, h in DECLARED.items() if "0: " in h.help])
def test_a_zero_that_means_off_or_the_default_stays_allowed(name):
    assert getattr(resolve(SST2, {name: 0}), name) == 0


def test_values_are_coerced_as_mlflow_records_them_and_a_flag_is_no_number():
    config = resolve(SST2, {"lr": "0.001", "steps": "3", "eval_growth": 3, "group_by_length": "False"})
    assert (config.lr, config.steps, config.eval_growth, config.group_by_length) == (0.001, 3, 3.0, False)
    assert type(config.eval_growth) is float and type(config.steps) is int
    refused("steps", True)  # int(True) would be 1
    refused("steps", 2.5)
    refused("lr", "fast")
    refused("base_dtype", "int8")


def test_every_default_and_every_task_s_recipe_pass_their_declarations():
    for task in TASKS.values():
        assert resolve(task, {name: h.default for name, h in DECLARED.items()}) == TrainConfig()
        config = resolve(task)
        assert all(getattr(config, name) == value for name, value in task.recipe.items())


# -- Task --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, classifies, loss, chance, generates", [
    ("sst2", True, "loss", 1 / 2, False),
    ("mnli", True, "loss", 1 / 3, False),
    ("xsum", False, "perplexity", 0.0, True),  # ROUGE-2 is scored on generated summaries
    ("wmt16_en_ro", False, "perplexity", 0.0, False),  # validated on perplexity; BLEU only on the test split
])
def test_what_each_task_s_kind_decides(name, classifies, loss, chance, generates):
    task = TASKS[name]
    assert task.kind in get_args(trainers.TaskKind)
    assert (task.is_classification, task.loss_metric, task.validation_generates) == (classifies, loss, generates)
    assert task.chance_metric == pytest.approx(chance)


def test_validation_metrics_list_each_registered_task_s_once():
    assert trainers.validation_metrics() == ["accuracy", "rouge2", "perplexity"]
    with TASKS.scratch():
        trainers.register_task(dataclasses.replace(TASKS["sst2"], name="sst2_f1", validation_metric="f1"))
        assert trainers.validation_metrics() == ["accuracy", "rouge2", "perplexity", "f1"]


def test_declarations_and_shared_names_import_without_torch():
    code = ("import sys, trainers, peft_space; trainers.hyperparameters(), trainers.validation_metrics(); "
            "print(trainers.DEFAULT_MODEL, trainers.FULL, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["minilm", "full", "False"]


# -- FormKind ----------------------------------------------------------------------------------------------------------
def test_every_registered_form_is_of_a_declared_kind_and_another_is_refused():
    forms = peft_space.dimension("form")
    assert {forms[name].kind for name in forms} == set(get_args(FormKind))
    with pytest.raises(DesignError, match=re.escape("form 'tanh' kind: 'adapter' is not allowed; allowed: one of "
                                                    "'bottleneck', 'prefix', 'prompt', 'bias'")):
        peft_space.Form("tanh", kind="adapter")
