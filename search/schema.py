"""The MLflow record format of a search: every tag and param name that ``search.records`` writes and the readers
(``dashboards``, ``search.tabular``, ``search.reproduce``) look up, and the ``Status`` vocabulary they share.

A search is an MLflow experiment named after it, holding one parent run (tag ``Tags.SEARCH``; params: the spec,
flattened, with ``Params.METRIC`` and ``Params.HIGHER_IS_BETTER``) and one child run per trial (tag
``Tags.TRIAL``; params: the design's flat keys, ``Params.BUDGET``, ``Params.SEED`` and the resolved training
configuration; metrics: every report at its step)."""

from trainers import SE, Status  # SE: the suffix of a metric's standard error ("accuracy_se")

__all__ = ["SE", "Params", "Status", "Tags"]


class Tags:
    SEARCH = "peft_search.search"  # the parent run: the search's name
    TRIAL = "ray_trial_id"  # a trial's child run: Ray's trial id (a resumed search finds its run again by it)
    PARENT = "mlflow.parentRunId"  # MLflow's own: nests the trials under the search in the UI
    DESIGN_ID = "design_id"  # the design's content hash ("full" for full fine-tuning)
    OPTUNA_TRIAL = "optuna_trial"  # the trial's number in the Optuna study
    PRESET = "preset"  # the paper method it was seeded from, or ""
    CONFIRMATION = "confirmation"  # "true": a re-training of a front design with another seed
    STATUS = "status"  # a ``Status`` value
    FIDELITY = "fidelity"  # in words: "full budget", "stopped by ASHA at step 27", ...
    STEP_REACHED = "step_reached"  # the last step it reported
    NODE_ID = "node_id"  # the Ray node it ran on
    ERROR = "error"  # why it failed
    PARETO = "pareto"  # "true" on the search's front, set when the search ends
    REPRODUCES = "peft_search.reproduces"  # a `peft-search reproduce` run: the run id it re-trained


class Params:
    BUDGET = "budget"  # the design's tuned parameters, % of the pretrained model
    SEED = "seed"  # the trial's training seed
    METRIC = "metric"  # the parent run: the task metric the search selects on
    HIGHER_IS_BETTER = "higher_is_better"  # the parent run: "True" or "False"
