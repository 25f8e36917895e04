"""A tabular benchmark of the design space: every design of a finite space trained, its whole curve recorded.

As NAS-Bench-201, HPOBench or Syne Tune's blackbox repository do for architectures and hyper-parameters, the
table holds one row per (design, seed, evaluation step) of real training runs, so that a search can be replayed
against it in seconds (the ``tabular`` trainer) and judged against the table's known true front.

The file is a CSV with the columns ``COLUMNS``, the flat design keys (``attn.form``, ``ffn.bottleneck``, ...) and,
in a table over designs and hyper-parameters, one column per varied hyper-parameter (``lr``) and ``config_id``
(``schema.configuration_id``: the design id and those values), which keys its configurations; a table without them
keys them by ``design_id``. ``valid_*`` are measured on the split a search selects on, ``test_*`` on the reported
test split (at the last step only), each with its standard error; ``predicted_share`` (where recorded) is the
share of the most-predicted class; ``seconds`` is the trial's wall time up to that step. Rows with ``reference``
true (full fine-tuning) are outside the searched space and never on its front.

This module only reads tables; ``search.tabulate`` (``peft-search tabulate``) trains and writes them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from search.pareto import front, hypervolume
from search.schema import configuration_id
from trainers import PREDICTED_SHARE, hyperparameters

SHARE = f"test_{PREDICTED_SHARE}"  # the share of a run's test predictions in its most-predicted class
COLUMNS = ("design_id", "name", "seed", "step", "budget_pct", "valid_metric", "valid_metric_se", "valid_loss",
           "test_metric", "test_metric_se", "seconds", "reference")


def read(path: str | Path) -> pd.DataFrame:
    """The table as the file holds it now, keyed by ``config_id`` (a table over designs only: the design id)."""
    table = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a tabular benchmark (missing columns {', '.join(missing)})")
    return table if "config_id" in table.columns else table.assign(config_id=table["design_id"])


@functools.lru_cache(maxsize=4)
def load(path: str | Path) -> pd.DataFrame:
    """The table, read once per process (replayed trials reuse their worker)."""
    return read(path)


def _key(table: pd.DataFrame) -> str:
    """The column that keys the table's configurations: a table over designs only keys them by design."""
    return "config_id" if "config_id" in table.columns else "design_id"


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """The hyper-parameters the table varies, in name order."""
    return sorted(h.name for h in hyperparameters() if h.name in table.columns)


def lookup(table: pd.DataFrame, design_id: str, train: Mapping[str, Any]) -> str:
    """The configuration id of ``design_id`` trained with the hyper-parameters ``train`` (resolved values: every
    one the table varies)."""
    return configuration_id(design_id, {name: train[name] for name in hyperparameter_columns(table)})


def seeds(table: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in table["seed"].unique())


def replica(table: pd.DataFrame, seed: int) -> int:
    """The table seed a replayed trial of ``seed`` sees: seeds cycle through the table's recorded seeds."""
    recorded = seeds(table)
    return recorded[seed % len(recorded)]


def curve(table: pd.DataFrame, config_id: str, seed: int) -> pd.DataFrame:
    """The recorded evaluations of one configuration under the table seed that ``seed`` maps to, by step."""
    rows = table[(table[_key(table)] == config_id) & (table["seed"] == replica(table, seed))]
    return rows.sort_values("step")


def final(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: design, hyper-parameters, budget, and the seed-mean and seed spread (min, max) of every
    metric at the last step."""
    key = _key(table)
    last = table[table["step"] == table.groupby([key, "seed"])["step"].transform("max")]
    kept = {name: (name, "first") for name in ["design_id", *hyperparameter_columns(table)] if name != key}
    share = {SHARE: (SHARE, "max")} if SHARE in table.columns else {}  # the seed nearest to one class
    out = last.groupby(key).agg(**kept, name=("name", "first"), budget_pct=("budget_pct", "first"),
                                reference=("reference", "first"), seeds=("seed", "nunique"), step=("step", "max"),
                                valid_metric=("valid_metric", "mean"), test_metric=("test_metric", "mean"),
                                test_min=("test_metric", "min"), test_max=("test_metric", "max"),
                                test_metric_se=("test_metric_se", "mean"), seconds=("seconds", "mean"), **share)
    out = out.reset_index()
    return out if key == "config_id" else out.assign(config_id=out["design_id"])


def true_front(table: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front of seed-mean test metric (higher is better) against budget, over the searchable
    configurations."""
    designs = final(table)
    designs = designs[~designs["reference"].astype(bool)].reset_index(drop=True)
    keep = front(list(zip(designs["test_metric"], designs["budget_pct"])))
    return designs.iloc[keep].reset_index(drop=True)


def scored_hypervolume(table: pd.DataFrame, config_ids: list[str], reference: tuple[float, float]) -> float:
    """The hypervolume of a returned set of configurations, each scored with the table's seed-mean test metric."""
    designs = final(table).set_index("config_id")
    points = [(designs.at[c, "test_metric"], designs.at[c, "budget_pct"]) for c in config_ids if c in designs.index]
    return hypervolume(points, reference)
