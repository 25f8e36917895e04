"""A tabular benchmark of the design space: every design of a finite space trained, its whole curve recorded.

As NAS-Bench-201, HPOBench or Syne Tune's blackbox repository do for architectures and hyper-parameters, the
table holds one row per (design, seed, evaluation step) of real training runs, so that a search can be replayed
against it in seconds (the ``tabular`` trainer) and judged against the table's known true front.

The file is a CSV with the columns ``COLUMNS`` and the flat design keys (``attn.form``, ``ffn.bottleneck``, ...).
``valid_*`` are measured on the split a search selects on, ``test_*`` on the reported test split (at the last
step only), each with its standard error; ``seconds`` is the trial's wall time up to that step. Rows with
``reference`` true (full fine-tuning) are outside the searched space and never on its front.

This module only reads tables; ``search.tabulate`` (``peft-search tabulate``) trains and writes them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from search.pareto import front, hypervolume

COLUMNS = ("design_id", "name", "seed", "step", "budget_pct", "valid_metric", "valid_metric_se", "valid_loss",
           "test_metric", "test_metric_se", "seconds", "reference")


@functools.lru_cache(maxsize=4)
def load(path: str | Path) -> pd.DataFrame:
    """The table (read once per process: replayed trials reuse their worker)."""
    table = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a tabular benchmark (missing columns {', '.join(missing)})")
    return table


def seeds(table: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in table["seed"].unique())


def replica(table: pd.DataFrame, seed: int) -> int:
    """The table seed a replayed trial of ``seed`` sees: seeds cycle through the table's recorded seeds."""
    recorded = seeds(table)
    return recorded[seed % len(recorded)]


def curve(table: pd.DataFrame, design_id: str, seed: int) -> pd.DataFrame:
    """The recorded evaluations of one design under the table seed that ``seed`` maps to, by step."""
    rows = table[(table["design_id"] == design_id) & (table["seed"] == replica(table, seed))]
    return rows.sort_values("step")


def final(table: pd.DataFrame) -> pd.DataFrame:
    """Per design: budget, and the seed-mean and seed spread (min, max) of every metric at the last step."""
    last = table[table["step"] == table.groupby(["design_id", "seed"])["step"].transform("max")]
    grouped = last.groupby("design_id")
    out = grouped.agg(name=("name", "first"), budget_pct=("budget_pct", "first"), reference=("reference", "first"),
                      seeds=("seed", "nunique"), step=("step", "max"),
                      valid_metric=("valid_metric", "mean"), test_metric=("test_metric", "mean"),
                      test_min=("test_metric", "min"), test_max=("test_metric", "max"),
                      test_metric_se=("test_metric_se", "mean"), seconds=("seconds", "mean"))
    return out.reset_index()


def true_front(table: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front of seed-mean test metric (higher is better) against budget, over the searchable designs."""
    designs = final(table)
    designs = designs[~designs["reference"].astype(bool)].reset_index(drop=True)
    keep = front(list(zip(designs["test_metric"], designs["budget_pct"])))
    return designs.iloc[keep].reset_index(drop=True)


def scored_hypervolume(table: pd.DataFrame, design_ids: list[str], reference: tuple[float, float]) -> float:
    """The hypervolume of a returned set of designs, each scored with the table's seed-mean test metric."""
    designs = final(table).set_index("design_id")
    points = [(designs.at[d, "test_metric"], designs.at[d, "budget_pct"]) for d in design_ids if d in designs.index]
    return hypervolume(points, reference)
