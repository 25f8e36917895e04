"""The record format of a search, declared once: every MLflow tag and param name and every Optuna user attribute
that the writers (``search.searcher``, ``search.records``, ``search.publish``) set and the readers (``dashboards``,
``search.report``, ``search.tabulate``, ``search.reproduce``, the benchmarks) look up, and the ``Status``
vocabulary they share.

A search is an MLflow experiment named after it, holding one parent run (tag ``Tags.SEARCH``; params: the spec,
flattened, with ``Params.METRIC`` and ``Params.HIGHER_IS_BETTER``) and one child run per trial (tag
``Tags.TRIAL``; params: the design's flat keys, ``Params.BUDGET``, ``Params.SEED`` and the resolved training
configuration; metrics: every report at its step). Its Optuna study holds one trial per design asked, with the
user attributes ``Attrs``."""

import json
from collections.abc import Mapping
from typing import Any

from trainers import SE, Status  # SE: the suffix of a metric's standard error ("accuracy_se")

__all__ = ["OUTCOMES", "SE", "Artifacts", "Attrs", "Params", "Status", "Tags", "configuration_id", "flag"]


class Tags:
    SEARCH = "peft_search.search"  # the parent run: the search's name
    TRIAL = "ray_trial_id"  # a trial's child run: Ray's trial id (a resumed search finds its run again by it)
    PARENT = "mlflow.parentRunId"  # MLflow's own: nests the trials under the search in the UI
    DESIGN_ID = "design_id"  # the design's content hash ("full" for full fine-tuning)
    OPTUNA_TRIAL = "optuna_trial"  # the trial's number in the Optuna study
    PRESET = "preset"  # the paper method it was seeded from, or ""
    CONFIRMATION = "confirmation"  # flag(True): a re-training of a front design with another seed
    CONFIRMS = "peft_search.confirms"  # a confirmation run: the run id of the trial it re-trains
    STATUS = "status"  # a ``Status`` value
    FIDELITY = "fidelity"  # in words: "full budget", "stopped by ASHA at step 27", ...
    STEP_REACHED = "step_reached"  # the last step it reported
    NODE_ID = "node_id"  # the Ray node it ran on
    ERROR = "error"  # why it failed
    PARETO = "pareto"  # flag(True) on the search's front, set when the search ends
    WEIGHTS = "peft_search.weights"  # a front trial's run: the run id holding its trained modification
    REPRODUCES = "peft_search.reproduces"  # a `peft-search reproduce` run: the run id it re-trained


class Params:
    BUDGET = "budget"  # the design's tuned parameters, % of the pretrained model
    SEED = "seed"  # the trial's training seed
    METRIC = "metric"  # the parent run: the task metric the search selects on
    HIGHER_IS_BETTER = "higher_is_better"  # the parent run: "True" or "False"
    # a declared task (every run of its search): the declaration as JSON (``Declaration.to_dict``, absolute file
    # paths) and the sha256 of each local data file as JSON (split -> hex digest), taken when the search started
    TASK_DECLARATION = "task_declaration"
    DATA_SHA256 = "data_sha256"
    MAX_LENGTH = 6000  # MLflow's limit on a param value: a longer one is cut (search.mlflow_runs)

    @staticmethod
    def declaration(declared: Mapping[str, Any]) -> str:
        """A declared task as its ``TASK_DECLARATION`` param; ``search.spec`` refuses one over ``MAX_LENGTH``."""
        return json.dumps(declared, sort_keys=True)


class Artifacts:
    WEIGHTS = "modification"  # a front trial's run: its trained modification (peft_space.save's files)
    FRONT = "pareto"  # the parent run: the front's tables and plots


class Attrs:
    """Optuna user attributes: of the study (``TARGET``) and of its trials (the rest)."""

    TARGET = "trials"  # the study: how many designs to train (set by the runner, raised by a resume)
    DATA_SHA256 = "data_sha256"  # the study: a declared task's files as the search started (split -> sha256)
    RAY_TRIAL_ID = "ray_trial_id"  # the Ray trial that trains it
    DESIGN_ID = "design_id"  # as Tags.DESIGN_ID
    DESIGN = "design"  # the design as JSON
    BUDGET = "budget"  # % of the pretrained model (also the study's second objective)
    TRAIN = "train"  # the hyper-parameters sampled for it (name -> value; {} where none are searched)
    PRESET = "preset"  # the paper method it was seeded from
    SEED = "seed"  # a grid case's training seed
    CASE = "case"  # a grid case's index in the grid
    INFEASIBLE = "infeasible"  # never trained: why (over the budget cap, or the model cannot take it)
    INTERRUPTED = "interrupted"  # failed because the driver stopped while it ran
    RERUN_OF = "rerun_of"  # added for an interrupted trial that Ray ran again after a resume: its number
    RETRIED = "retried"  # Ray gave up on it (its node died); its design was asked again
    RETRY_OF = "retry_of"  # that new trial: the number of the one Ray gave up on
    STEP = "step"  # the last step it reported
    LAST_METRIC = "last_metric"  # the validation metric at that step
    METRIC_SE = "metric_se"  # its standard error
    TEST = "test"  # the test split's metric (reported, never selected on)
    TEST_SE = "test_se"
    ERROR = "error"  # why it failed
    STOPPED = "stopped"  # in words: where the scheduler stopped it


OUTCOMES = {"COMPLETE": Status.COMPLETED, "PRUNED": Status.STOPPED, "FAIL": Status.FAILED}
"""How an ended Optuna trial (by ``TrialState`` name) reads as a ``Status``: ASHA-stopped trials are Optuna's PRUNED."""


def flag(value: bool) -> str:
    """A yes/no tag's value (``Tags.CONFIRMATION``, ``Tags.PARETO``): "true" or "false"."""
    return str(bool(value)).lower()


def configuration_id(design_id: str, hyperparameters: Mapping[str, Any]) -> str:
    """What a configuration (a design and the hyper-parameters a table or search varies) is keyed by:
    ``3f2a9c01e2@lr=0.0003``; the design id alone where none vary (so a table without hyper-parameter columns keys
    its rows as before)."""
    values = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hyperparameters.items()))
    return f"{design_id}@{values}" if values else design_id
