"""How a training run ended: one vocabulary for the trainer's ``Result``, a trial's reports, its MLflow record
(tag ``status``) and the search's tables and plots. Members are strings, so they compare, serialise and log as
their value (``Status.COMPLETED == "completed"``)."""

from enum import StrEnum


class Status(StrEnum):
    RUNNING = "running"  # under way (or its driver died before it ended)
    COMPLETED = "completed"  # trained to its last step
    STOPPED = "stopped"  # ended early by the scheduler (ASHA, or the trainer's stop callback); Optuna's PRUNED
    FAILED = "failed"  # raised, diverged (NaN loss) or did not fit
    INFEASIBLE = "infeasible"  # proposed by the searcher over the budget cap: never trained
